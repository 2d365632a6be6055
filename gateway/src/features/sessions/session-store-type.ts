import type { StoredJob } from './job-request.js';
import type { Batch, BatchStatus, NewSession, Session, SessionEnd, SessionEvent, SessionQuery, SessionStatus, SessionUpdate } from './session-types.js';

/** A dispatch recorded: whether a cancel had been asked for by then. */
export interface Dispatched {
  cancelRequested: boolean;
}

/** A session an instance has just taken to relay, with what it needs to dispatch it. */
export interface ClaimedSession {
  session: Session;
  job: StoredJob;
  correlationId: string | null;
  /** When the job must have ended, if it was dispatched before (a takeover). */
  deadlineAt: Date | null;
  cancelRequested: boolean;
  /** How often it was sent to a worker before. */
  dispatchCount: number;
  /** The last event sequence before the current dispatch (its worker's events come after it). */
  dispatchSequence: number;
}

/**
 * Sessions table: one row per job. Every change of status is a compare-and-
 * set, so a terminal status, once written, never changes, and two instances
 * never both think they own a session.
 */
export interface SessionStore {
  create(session: NewSession): Promise<Session>;
  get(id: string): Promise<Session | undefined>;
  list(query: SessionQuery): Promise<{ items: Session[]; total: number }>;
  /** Apply a non-terminal update; returns the row after it. Throws when the id is unknown. */
  update(id: string, update: SessionUpdate): Promise<Session>;
  /**
   * End a session that has not ended, relayed by `owner` (or unowned, with
   * null): returns the ended row, or undefined when it had ended already or
   * another instance owns it. Clears the stored job and the owner.
   */
  finish(id: string, end: SessionEnd, owner: string | null): Promise<Session | undefined>;
  /**
   * Record where `owner` sends the job, by when it must end, and the last
   * event sequence before it; null when `owner` no longer owns it, else
   * whether a cancel was asked for meanwhile (one made between claim and
   * dispatch is never lost).
   */
  dispatch(id: string, owner: string, target: { workerId: string; deadlineAt: Date; afterSequence: number }): Promise<Dispatched | null>;
  /** Whether any session waits in the queue (queued and unowned). */
  hasQueued(): Promise<boolean>;
  /** Take the oldest queued, unowned session (a batch's items at most its concurrency at once). */
  claimNext(owner: string): Promise<ClaimedSession | undefined>;
  /** Take up to `limit` unended sessions whose owner has no heartbeat since `liveSince` (or has stopped). */
  takeOver(owner: string, liveSince: Date, limit: number): Promise<ClaimedSession[]>;
  /** Put a session `owner` holds back in the queue (it never started); false when it no longer owns it. */
  release(id: string, owner: string): Promise<boolean>;
  /** Queued, unowned sessions past their queue deadline end `failed` (QUEUE_TIMEOUT); returns them. */
  expireQueued(now: Date): Promise<Session[]>;
  /** A queued, unowned session ends `cancelled`; undefined when it is owned or ended. */
  cancelQueued(id: string, at: Date): Promise<Session | undefined>;
  /** Mark a cancellation for whoever relays the session. */
  requestCancel(id: string, at: Date): Promise<void>;
  isCancelRequested(id: string): Promise<boolean>;
  /**
   * Queued, unowned sessions ahead of this one (0: next); null when it is not
   * waiting in the queue (with `held`, also while an instance holds it queued).
   */
  queuePosition(id: string, held?: boolean): Promise<number | null>;
  /** Unended sessions `owner` holds. */
  ownedBy(owner: string): Promise<string[]>;
}

/** Session events: append-only, ordered by sequence within a session. */
export interface SessionEventStore {
  append(event: SessionEvent): Promise<void>;
  /** Several events in one write (one statement), all or none. */
  appendMany(events: readonly SessionEvent[]): Promise<void>;
  /** Events with sequence > afterSequence, in order. */
  listAfter(sessionId: string, afterSequence: number): Promise<SessionEvent[]>;
  /** The highest sequence stored, and the highest worker sequence among those after `since` (0 when none). */
  lastSequences(sessionId: string, since?: number): Promise<{ sequence: number; workerSequence: number }>;
}

export interface BatchStore {
  create(batch: { id: string; owner: string; itemCount: number; concurrency: number }): Promise<Batch>;
  get(id: string): Promise<Batch | undefined>;
  requestCancel(id: string, at: Date): Promise<void>;
  /**
   * Once none of its sessions is left unended, a running batch ends with the
   * status `decide` gives its sessions (cancelled when cancelled); a
   * compare-and-set, so of instances ending its last items one records it.
   */
  finishIfDone(id: string, decide: (statuses: SessionStatus[], cancelled: boolean) => BatchStatus, at: Date): Promise<Batch | undefined>;
}

/** The gateway instances that ever ran, and their heartbeats (their leases). */
export interface InstanceStore {
  register(instance: { id: string; hostname: string; pid: number; at: Date }): Promise<void>;
  heartbeat(id: string, at: Date): Promise<void>;
  markStopped(id: string, at: Date): Promise<void>;
}
