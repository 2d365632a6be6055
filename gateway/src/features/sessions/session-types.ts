import type { StoredJob } from './job-request.js';

/**
 * Inference sessions as the gateway records them: one per job sent to a
 * worker, with its events, so a client can follow, resume and audit a job.
 * Domain types only; the stores map rows to these in one place.
 */

/** queued → running → one of succeeded / failed / cancelled; interrupted when the gateway stopped mid-job. */
export type SessionStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'interrupted';

export const TERMINAL_SESSION_STATUSES: readonly SessionStatus[] = ['succeeded', 'failed', 'cancelled', 'interrupted'];

export interface SessionError {
  /** gRPC status name from the worker, or a gateway code such as WORKER_LOST. */
  code: string;
  message: string;
}

export interface Session {
  id: string;
  /** Principal subject that created it. */
  owner: string;
  /** Task name, e.g. "text-to-image". */
  task: string;
  model: string | null;
  deviceId: string | null;
  workerId: string | null;
  status: SessionStatus;
  /** The validated request parameters (never raw image bytes). */
  parameters: Record<string, unknown>;
  /** Summary of the result: files, seed, embedding count... */
  result: Record<string, unknown> | null;
  error: SessionError | null;
  batchId: string | null;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
}

export interface NewSession {
  id: string;
  owner: string;
  task: string;
  model: string | null;
  parameters: Record<string, unknown>;
  batchId?: string | null;
  /** The job, kept until the session ends (see job-request.ts). */
  job: StoredJob;
  correlationId: string;
  /** The instance relaying it from the start (execute), or null: it waits in the queue. */
  ownerInstance: string | null;
  /** Queued: when it fails if no instance dispatched it (QUEUE_TIMEOUT_SECONDS). */
  queueDeadlineAt?: Date | null;
}

/** How a session ended. */
export interface SessionEnd {
  status: SessionStatus;
  finishedAt: Date;
  workerId?: string | null;
  result: Record<string, unknown> | null;
  error: SessionError | null;
}

export interface SessionUpdate {
  status?: SessionStatus;
  deviceId?: string | null;
  workerId?: string | null;
  result?: Record<string, unknown> | null;
  error?: SessionError | null;
  startedAt?: Date | null;
  finishedAt?: Date | null;
}

export interface SessionQuery {
  /** Only this owner's sessions; undefined for every owner (admins). */
  owner?: string;
  status?: SessionStatus;
  batchId?: string;
  limit: number;
  offset: number;
}

/** One event of a session, as relayed to SSE clients; sequence starts at 1 per session. */
export interface SessionEvent {
  sessionId: string;
  sequence: number;
  /** accepted, queued, started, progress, result, error, cancelled. */
  type: string;
  data: Record<string, unknown>;
  createdAt: Date;
  /** The worker's sequence of the event it came from (InferEvent.sequence); absent for the gateway's own events. */
  workerSequence?: number;
  /**
   * Fencing: stored only while the session's owner is this instance (null:
   * while it has none); absent, stored unconditionally. A relay that lost its
   * lease cannot add to the history its successor continues.
   */
  writer?: string | null;
}

export type BatchStatus = 'running' | 'succeeded' | 'failed' | 'cancelled' | 'interrupted' | 'partial';

export interface Batch {
  id: string;
  owner: string;
  status: BatchStatus;
  itemCount: number;
  createdAt: Date;
  finishedAt: Date | null;
}
