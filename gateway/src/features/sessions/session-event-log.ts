import { isDatabaseUnavailable } from '../../infra/database/database-errors.js';
import type { Logger } from '../../infra/logger.js';
import type { SessionEventStore } from './session-store-type.js';
import type { SessionEvent } from './session-types.js';

export type SessionListener = (event: SessionEvent) => void;

interface ActiveLog {
  events: SessionEvent[];
  listeners: Set<SessionListener>;
  finished: boolean;
}

/** How often buffered events are written: one multi-row insert for every session at once. */
const FLUSH_INTERVAL_MS = 50;
/** Write sooner when this many events wait. */
const FLUSH_AT = 1000;
/** Events kept for a database that is down; beyond it the oldest are dropped (and logged). */
const MAX_PENDING = 100_000;
/** How soon a failed write is tried again. */
const RETRY_MS = 1000;

/**
 * Events of running sessions: kept in memory and delivered to listeners the
 * moment they happen, and written to the store behind them — every session's
 * pending events together, every 50 ms — so relaying an event never waits on
 * the database. Once a session ends and its events are stored, later readers
 * replay from the store.
 */
export class SessionEventLog {
  private readonly active = new Map<string, ActiveLog>();
  private pending: SessionEvent[] = [];
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> = Promise.resolve();
  /** The write waiting behind the current one, which late callers join. */
  private queued: Promise<void> | null = null;
  private failing = false;

  constructor(
    private readonly store: SessionEventStore,
    private readonly logger: Logger,
  ) {}

  open(sessionId: string): void {
    this.active.set(sessionId, { events: [], listeners: new Set(), finished: false });
  }

  /** Record and deliver an event of an open session. */
  append(event: SessionEvent): void {
    const log = this.active.get(event.sessionId);
    if (!log) throw new Error(`session ${event.sessionId} has no open event log`);
    log.events.push(event);
    for (const listener of log.listeners) listener(event);
    this.pending.push(event);
    if (this.pending.length >= FLUSH_AT) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), FLUSH_INTERVAL_MS);
  }

  /** Wait until the session's events are stored, then let later readers use the store. */
  async close(sessionId: string): Promise<void> {
    const log = this.active.get(sessionId);
    if (!log) return;
    log.finished = true;
    await this.flush();
    // Listeners still attached keep their reference; new readers go to the store.
    this.active.delete(sessionId);
  }

  /**
   * Events after `afterSequence`, then every later one as it happens.
   * `onEvent` is called in sequence order without duplicates. Returns an
   * unsubscribe function and whether the session is still live.
   */
  async follow(
    sessionId: string,
    afterSequence: number,
    onEvent: SessionListener,
  ): Promise<{ unsubscribe: () => void; live: boolean }> {
    let last = afterSequence;
    const deliver = (event: SessionEvent) => {
      if (event.sequence > last) {
        last = event.sequence;
        onEvent(event);
      }
    };
    const log = this.active.get(sessionId);
    if (log) {
      // Subscribe before replaying: nothing can fall between the two.
      log.listeners.add(deliver);
      for (const event of log.events) deliver(event);
      return { unsubscribe: () => log.listeners.delete(deliver), live: !log.finished };
    }
    for (const event of await this.store.listAfter(sessionId, afterSequence)) deliver(event);
    return { unsubscribe: () => {}, live: false };
  }

  listenerCount(sessionId: string): number {
    return this.active.get(sessionId)?.listeners.size ?? 0;
  }

  /**
   * Write everything pending; writes are serialised, so events land in order.
   * Group commit: callers arriving while a write is in progress join the one
   * write queued behind it, so a thousand sessions ending at once cost two
   * writes, not a thousand.
   */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.queued) return this.queued;
    this.queued = this.writing.then(async () => {
      this.queued = null; // from here on, new events wait for the next write
      const batch = this.pending;
      if (batch.length === 0) return;
      this.pending = [];
      try {
        await this.store.appendMany(batch);
        if (this.failing) this.logger.info('session events stored again', { count: batch.length });
        this.failing = false;
      } catch (error) {
        if (!isDatabaseUnavailable(error)) {
          // Refused, not unavailable: retrying the same write would fail for
          // ever. Store each session's events on their own, so one session's
          // bad event costs that session's events only.
          await this.storeSeparately(batch, error);
          return;
        }
        // Database away: keep the events (bounded) and try again, in order.
        const kept = batch.concat(this.pending);
        const dropped = Math.max(0, kept.length - MAX_PENDING);
        this.pending = kept.slice(dropped);
        if (!this.failing || dropped > 0) {
          this.logger.error('could not store session events; will retry', { pending: this.pending.length, dropped, err: error });
        }
        this.failing = true;
        this.timer ??= setTimeout(() => void this.flush(), RETRY_MS);
        this.timer.unref();
      }
    });
    this.writing = this.queued;
    return this.queued;
  }

  private async storeSeparately(batch: SessionEvent[], cause: unknown): Promise<void> {
    const bySession = new Map<string, SessionEvent[]>();
    for (const event of batch) {
      const events = bySession.get(event.sessionId);
      if (events) events.push(event);
      else bySession.set(event.sessionId, [event]);
    }
    const groups = [...bySession.values()];
    const lost: string[] = [];
    for (const [index, events] of groups.entries()) {
      try {
        await this.store.appendMany(events);
      } catch (error) {
        if (isDatabaseUnavailable(error)) {
          // Went away meanwhile: what is left goes back to the retry path, in order.
          this.pending = groups.slice(index).flat().concat(this.pending);
          this.failing = true;
          this.timer ??= setTimeout(() => void this.flush(), RETRY_MS);
          this.timer.unref();
          break;
        }
        lost.push(events[0]!.sessionId);
      }
    }
    if (lost.length > 0) {
      this.logger.error('session events refused by the database and dropped', { sessions: lost.length, sessionIds: lost.slice(0, 10), err: cause });
    }
  }
}
