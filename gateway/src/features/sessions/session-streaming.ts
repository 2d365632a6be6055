import type { Request, Response } from 'express';
import { GatewayError } from '../../errors/gateway-error.js';
import { mapWorkerStatus } from '../../errors/worker-status.js';
import { SseStream, type SseOptions } from '../../http/sse.js';
import type { SessionService } from './session-service.js';
import { TERMINAL_SESSION_STATUSES, type Session, type SessionEvent } from './session-types.js';

const TERMINAL_EVENTS = new Set(['result', 'error', 'cancelled']);

/**
 * Relay a session's events as Server-Sent Events: those after `after`, then
 * live ones, each with its sequence as the SSE id (so EventSource resumes
 * with Last-Event-ID). The stream always ends with a terminal event.
 * With `cancelOnDisconnect`, a client that leaves before the end cancels the
 * job (it was the only consumer).
 */
export interface StreamSessionOptions extends SseOptions {
  /** Events after this sequence number. */
  after: number;
  /** The client is the job's only consumer: leaving cancels it. */
  cancelOnDisconnect: boolean;
  /** Called once when the stream ends (frees its admission slot). */
  release?: () => void;
}

export async function streamSession(
  req: Request,
  res: Response,
  sessions: SessionService,
  session: Session,
  options: StreamSessionOptions,
): Promise<void> {
  const sse = new SseStream(req, res, options);
  if (options.release) sse.onClose(options.release);
  await relaySessionEvents(sessions, session, {
    send: (event) => sse.send({ ...(event.sequence !== undefined ? { id: event.sequence } : {}), event: event.type, data: event.data }),
    end: () => sse.end(),
    onClose: (fn) => sse.onClose(fn),
  }, options);
}

/** Where a follower's events go: an SSE response, or a gRPC server stream. */
export interface SessionEventSink {
  send(event: Pick<SessionEvent, 'type' | 'data'> & { sequence?: number }): void;
  /** After the terminal event. */
  end(): void;
  /** Runs once the sink closes, by either side (end() included). */
  onClose(fn: () => void): void;
}

/**
 * A session's events after `after`, then live ones, into `sink`, always
 * ending with exactly one terminal event; with `cancelOnDisconnect` a
 * follower that leaves first cancels the job. Both fronts follow sessions
 * through this.
 */
export async function relaySessionEvents(
  sessions: SessionService,
  session: Session,
  sink: SessionEventSink,
  options: { after: number; cancelOnDisconnect: boolean },
): Promise<void> {
  const { after, cancelOnDisconnect } = options;
  let ended = false;
  const send = (event: Pick<SessionEvent, 'type' | 'data'> & { sequence?: number }) => {
    if (ended) return;
    sink.send(event);
    if (TERMINAL_EVENTS.has(event.type)) {
      ended = true;
      sink.end();
    }
  };
  const { unsubscribe, live } = await sessions.follow(session.id, after, send);
  sink.onClose(() => {
    unsubscribe();
    if (!ended && cancelOnDisconnect) sessions.abandon(session.id);
  });
  if (ended) return;
  // An ended session whose terminal event is not stored (yet, or ever: rows
  // an older gateway left) gets one from its row once the store had time.
  const current = live ? await sessions.find(session.id) : session;
  if (!current || !TERMINAL_SESSION_STATUSES.includes(current.status)) return;
  if (live) await new Promise((resolve) => setTimeout(resolve, TERMINAL_EVENT_WAIT_MS));
  send({
    type: 'error',
    data: current.error ? { ...current.error } : { code: 'INTERRUPTED', message: `the session is ${current.status}: the gateway stopped while it ran` },
  });
}

/** How long a follower of an ended session waits for its stored terminal event before telling the row's end. */
const TERMINAL_EVENT_WAIT_MS = 2000;

/** A session that did not succeed, as the HTTP error a waiting client gets (the worker-status table maps its code). */
export class SessionFailedError extends GatewayError {
  readonly status: number;
  readonly type: string;
  readonly title: string;
  private readonly capacity: boolean;

  constructor(session: Session) {
    const code = session.error?.code ?? (session.status === 'cancelled' ? 'CANCELLED' : 'INTERNAL');
    super(session.error?.message ?? `The session ended ${session.status}.`);
    // A cancelled session is its own state (409). The table's CANCELLED row is for
    // a call whose client went away, which a session that ended otherwise never is.
    const mapping =
      session.status === 'cancelled'
        ? { httpStatus: 409, type: 'session-cancelled', title: 'The job was cancelled' }
        : mapWorkerStatus(code === 'CANCELLED' ? 'UNKNOWN' : code);
    this.status = mapping.httpStatus;
    this.type = mapping.type;
    this.title = mapping.title;
    this.capacity = 'capacity' in mapping && mapping.capacity === true;
    if ('retryAfterSeconds' in mapping && mapping.retryAfterSeconds !== undefined) this.headers['Retry-After'] = String(mapping.retryAfterSeconds);
    this.extensions.sessionId = session.id;
    this.extensions.code = code;
  }

  override isRefusal(): boolean {
    return this.capacity || super.isRefusal();
  }
}

/** The session once its job ended, or the error its end maps to when it did not succeed (execute, postprocessing; both fronts). */
export async function succeeded(done: Promise<Session>): Promise<Session> {
  const finished = await done;
  if (finished.status !== 'succeeded') throw new SessionFailedError(finished);
  return finished;
}
