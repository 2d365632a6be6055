import type { Request, Response } from 'express';
import { GatewayError } from '../../errors/gateway-error.js';
import { GRPC_TO_HTTP } from '../../errors/worker-call-error.js';
import { SseStream, type SseOptions } from '../../http/sse.js';
import type { SessionService } from './session-service.js';
import type { Session, SessionEvent } from './session-types.js';

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
  const { after, cancelOnDisconnect } = options;
  const sse = new SseStream(req, res, options);
  if (options.release) sse.onClose(options.release);
  let ended = false;
  const send = (event: Pick<SessionEvent, 'type' | 'data'> & { sequence?: number }) => {
    if (ended) return;
    sse.send({ ...(event.sequence !== undefined ? { id: event.sequence } : {}), event: event.type, data: event.data });
    if (TERMINAL_EVENTS.has(event.type)) {
      ended = true;
      sse.end();
    }
  };
  const { unsubscribe, live } = await sessions.follow(session.id, after, send);
  sse.onClose(() => {
    unsubscribe();
    if (!ended && cancelOnDisconnect) sessions.abandon(session.id);
  });
  if (!live && !ended) {
    // Ended without a terminal event on record: the gateway stopped while it ran.
    const current = (await sessions.find(session.id)) ?? session;
    send({
      type: 'error',
      data: current.error ? { ...current.error } : { code: 'INTERRUPTED', message: `the session is ${current.status}: the gateway stopped while it ran` },
    });
  }
}

/** A session that did not succeed, as the HTTP error a waiting client gets. */
export class SessionFailedError extends GatewayError {
  readonly status: number;
  readonly type: string;
  readonly title: string;

  constructor(session: Session) {
    const code = session.error?.code ?? (session.status === 'cancelled' ? 'CANCELLED' : 'INTERNAL');
    super(session.error?.message ?? `The session ended ${session.status}.`);
    const mapping = GRPC_TO_HTTP[code as keyof typeof GRPC_TO_HTTP];
    if (session.status === 'cancelled') {
      this.status = 409;
      this.type = 'session-cancelled';
      this.title = 'The job was cancelled';
    } else if (mapping && code !== 'CANCELLED') {
      this.status = mapping.httpStatus;
      this.type = mapping.type;
      this.title = mapping.title;
      if (mapping.retryAfterSeconds !== undefined) this.headers['Retry-After'] = String(mapping.retryAfterSeconds);
    } else {
      this.status = 502;
      this.type = code === 'WORKER_LOST' ? 'worker-lost' : 'worker-error';
      this.title = code === 'WORKER_LOST' ? 'The worker was lost' : 'Worker failed';
    }
    this.extensions.sessionId = session.id;
    this.extensions.code = code;
  }
}
