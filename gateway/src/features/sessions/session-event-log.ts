import type { Logger } from '../../infra/logger.js';
import type { SessionEventStore } from './session-store-type.js';
import type { SessionEvent } from './session-types.js';

export type SessionListener = (event: SessionEvent) => void;

interface ActiveLog {
  events: SessionEvent[];
  listeners: Set<SessionListener>;
  /** Events not yet written to the store. */
  pending: SessionEvent[];
  /** The write in progress (writes of one session are serialised). */
  writing: Promise<void>;
  finished: boolean;
}

/**
 * Events of running sessions: kept in memory and delivered to listeners the
 * moment they happen, and written to the store behind, in order and in
 * batches, so relaying a progress event never waits on the database.
 * Once a session ends and its events are stored, later readers replay from
 * the store.
 */
export class SessionEventLog {
  private readonly active = new Map<string, ActiveLog>();

  constructor(
    private readonly store: SessionEventStore,
    private readonly logger: Logger,
  ) {}

  open(sessionId: string): void {
    this.active.set(sessionId, { events: [], listeners: new Set(), pending: [], writing: Promise.resolve(), finished: false });
  }

  /** Record and deliver an event of an open session. */
  append(event: SessionEvent): void {
    const log = this.active.get(event.sessionId);
    if (!log) throw new Error(`session ${event.sessionId} has no open event log`);
    log.events.push(event);
    log.pending.push(event);
    for (const listener of log.listeners) listener(event);
    if (log.pending.length === 1) log.writing = log.writing.then(() => this.flush(event.sessionId, log));
  }

  /** Wait until every event is stored, then let later readers use the store. */
  async close(sessionId: string): Promise<void> {
    const log = this.active.get(sessionId);
    if (!log) return;
    log.finished = true;
    await log.writing;
    if (log.pending.length > 0) await this.flush(sessionId, log);
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

  private async flush(sessionId: string, log: ActiveLog): Promise<void> {
    while (log.pending.length > 0) {
      const batch = log.pending.splice(0);
      try {
        for (const event of batch) await this.store.append(event);
      } catch (error) {
        this.logger.error('could not store session events', { sessionId, count: batch.length, err: error });
      }
    }
  }
}
