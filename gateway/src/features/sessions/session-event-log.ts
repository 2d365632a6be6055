import type { SessionBus } from '../../infra/bus/session-bus.js';
import { isDatabaseUnavailable } from '../../infra/database/database-errors.js';
import type { Logger } from '../../infra/logger.js';
import type { SessionEventStore } from './session-store-type.js';
import type { SessionEvent } from './session-types.js';

export type SessionListener = (event: SessionEvent) => void;

interface ActiveLog {
  /** Sequence of the first event appended here; earlier ones are in the store. */
  firstSequence: number;
  events: SessionEvent[];
  listeners: Set<SessionListener>;
  /** The same followers, which move to the store when the session leaves this instance unended. */
  followers: Set<Follower>;
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
/** A follower of a session relayed elsewhere also reads the store this often (a lost notification costs this much). */
const REMOTE_POLL_MS = 1000;

/**
 * Events of the sessions this instance relays: kept in memory and delivered
 * to local listeners the moment they happen, and written to the store behind
 * them — every session's pending events together, every 50 ms — so relaying
 * an event never waits on the database. After each write the bus tells every
 * instance how far each session's events are stored, so a follower of a
 * session relayed elsewhere (or ended) reads them from the store.
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
    private readonly bus: SessionBus,
    /** This instance: events it relays are fenced by it (absent in unit tests of the log alone). */
    private readonly instanceId?: string,
  ) {}

  /** Relay a session's events from here; the first one appended will have `firstSequence`. */
  open(sessionId: string, firstSequence = 1): void {
    this.active.set(sessionId, { firstSequence, events: [], listeners: new Set(), followers: new Set(), finished: false });
  }

  /**
   * Stop relaying a session that has not ended (it went back to the queue,
   * or to another instance): its events are stored, and its followers here
   * go on reading from the store.
   */
  async release(sessionId: string): Promise<void> {
    const log = this.active.get(sessionId);
    if (!log) return;
    await this.flush();
    this.active.delete(sessionId);
    for (const follower of log.followers) void follower.fromStore();
  }

  /** Store one event of a session not relayed by a log (queued, or ended there), fenced by its owner then (`writer`), and tell followers. */
  async appendUnowned(event: SessionEvent, writer: string | null = null): Promise<void> {
    await this.store.append({ ...event, writer });
    this.bus.publishStored(new Map([[event.sessionId, event.sequence]]));
  }

  /** Record and deliver an event of an open session. */
  append(event: SessionEvent): void {
    const log = this.active.get(event.sessionId);
    if (!log) throw new Error(`session ${event.sessionId} has no open event log`);
    if (this.instanceId !== undefined) event.writer = this.instanceId;
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
   * Events after `afterSequence`, then every later one as it happens,
   * wherever the session is relayed: from this instance's memory while it
   * relays it, else from the store as the bus says it holds more (and a slow
   * poll). `onEvent` is called in sequence order without duplicates. Returns
   * an unsubscribe function and whether events may still come.
   */
  async follow(
    sessionId: string,
    afterSequence: number,
    onEvent: SessionListener,
  ): Promise<{ unsubscribe: () => void; live: boolean }> {
    const follower = new Follower(sessionId, afterSequence, onEvent, this.store, this.bus, this.logger);
    const log = this.active.get(sessionId);
    if (!log) {
      await follower.fromStore();
      return { unsubscribe: () => follower.stop(), live: true };
    }
    // Subscribe before replaying: nothing can fall between the two.
    log.listeners.add(follower.listener);
    log.followers.add(follower);
    const earlier = follower.last + 1 < log.firstSequence ? await this.store.listAfter(sessionId, follower.last) : [];
    follower.replayed([...earlier, ...log.events]);
    return {
      unsubscribe: () => {
        log.listeners.delete(follower.listener);
        log.followers.delete(follower);
        follower.stop();
      },
      live: !log.finished,
    };
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
        this.announce(batch);
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

  /** Tell every instance how far these sessions' events are stored. */
  private announce(events: readonly SessionEvent[]): void {
    const upTo = new Map<string, number>();
    for (const event of events) upTo.set(event.sessionId, Math.max(upTo.get(event.sessionId) ?? 0, event.sequence));
    this.bus.publishStored(upTo);
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
        this.announce(events);
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

/** One follower of one session: delivers in order, without duplicates, from memory or the store. */
class Follower {
  last: number;
  private replaying = true;
  private readonly held: SessionEvent[] = [];
  private reading: Promise<void> = Promise.resolve();
  private stopped = false;
  private remote: { off: () => void; poll: NodeJS.Timeout } | null = null;
  readonly listener: SessionListener = (event) => {
    if (this.replaying) this.held.push(event);
    else this.deliver([event]);
  };

  constructor(
    private readonly sessionId: string,
    afterSequence: number,
    private readonly onEvent: SessionListener,
    private readonly store: SessionEventStore,
    private readonly bus: SessionBus,
    private readonly logger: Logger,
  ) {
    this.last = afterSequence;
  }

  /** Deliver the replayed events and those held meanwhile, then live ones as they come. */
  replayed(events: SessionEvent[]): void {
    this.replaying = false;
    this.deliver([...events, ...this.held.splice(0)]);
  }

  /** Follow from the store: read now, then whenever the bus says it holds more, and every REMOTE_POLL_MS. */
  async fromStore(): Promise<void> {
    if (this.stopped || this.remote) return;
    this.replaying = false;
    const off = this.bus.onStored(this.sessionId, (upTo) => {
      if (upTo > this.last) void this.read();
    });
    const poll = setInterval(() => void this.read(), REMOTE_POLL_MS);
    poll.unref();
    this.remote = { off, poll };
    await this.read();
  }

  stop(): void {
    this.stopped = true;
    if (this.remote) {
      this.remote.off();
      clearInterval(this.remote.poll);
      this.remote = null;
    }
  }

  private read(): Promise<void> {
    this.reading = this.reading.then(async () => {
      if (this.stopped) return;
      try {
        this.deliver(await this.store.listAfter(this.sessionId, this.last));
      } catch (error) {
        this.logger.warn('could not read session events', { sessionId: this.sessionId, err: error });
      }
    });
    return this.reading;
  }

  private deliver(events: SessionEvent[]): void {
    for (const event of events.sort((a, b) => a.sequence - b.sequence)) {
      if (this.stopped || event.sequence <= this.last) continue;
      this.last = event.sequence;
      this.onEvent(event);
    }
  }
}
