import type { Batch, BatchStatus, NewSession, Session, SessionEvent, SessionQuery, SessionStatus, SessionUpdate } from './session-types.js';

/** Sessions table: one row per job. */
export interface SessionStore {
  create(session: NewSession): Promise<Session>;
  get(id: string): Promise<Session | undefined>;
  list(query: SessionQuery): Promise<{ items: Session[]; total: number }>;
  /** Apply an update; returns the row after it. Throws when the id is unknown. */
  update(id: string, update: SessionUpdate): Promise<Session>;
  /** Sessions in `statuses` become `interrupted` (gateway restart); returns how many. */
  interruptAll(statuses: readonly SessionStatus[], finishedAt: Date): Promise<number>;
}

/** Session events: append-only, ordered by sequence within a session. */
export interface SessionEventStore {
  append(event: SessionEvent): Promise<void>;
  /** Several events in one write (one statement), all or none. */
  appendMany(events: readonly SessionEvent[]): Promise<void>;
  /** Events with sequence > afterSequence, in order. */
  listAfter(sessionId: string, afterSequence: number): Promise<SessionEvent[]>;
}

export interface BatchStore {
  create(batch: { id: string; owner: string; itemCount: number }): Promise<Batch>;
  get(id: string): Promise<Batch | undefined>;
  update(id: string, update: { status: BatchStatus; finishedAt?: Date | null }): Promise<Batch>;
  interruptAll(finishedAt: Date): Promise<number>;
}
