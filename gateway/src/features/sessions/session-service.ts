import { randomUUID } from 'node:crypto';
import type { InferEvent__Output } from '../../generated/device_ops/v1/InferEvent.js';
import type { InferRequest } from '../../generated/device_ops/v1/InferRequest.js';
import type { InferResult__Output } from '../../generated/device_ops/v1/InferResult.js';
import { NotFoundError } from '../../errors/gateway-error.js';
import { WorkerCallError } from '../../errors/worker-call-error.js';
import type { InferStream } from '../../infra/grpc/worker-client.js';
import type { Logger } from '../../infra/logger.js';
import type { GatewayMetrics } from '../../infra/metrics.js';
import { isAdmin, type Principal } from '../auth/principal.js';
import type { Target, WorkerScheduler } from '../scheduling/worker-scheduler.js';
import type { SessionEventLog, SessionListener } from './session-event-log.js';
import type { SessionStore } from './session-store-type.js';
import {
  TERMINAL_SESSION_STATUSES,
  type Session,
  type SessionError,
  type SessionQuery,
  type SessionStatus,
} from './session-types.js';

/** What to run: everything the session records, and how to build the worker request. */
export interface JobSpec {
  task: string;
  model: string | null;
  deviceId?: string;
  /** Recorded with the session (no raw images or texts). */
  parameters: Record<string, unknown>;
  build(jobId: string, deviceId: string): InferRequest;
}

export interface StartOptions {
  correlationId: string;
  batchId?: string | null;
  /** Check the placement before anything is written (model exists, task, device). */
  preflight?: (target: Target) => Promise<void>;
}

export interface RunningSession {
  session: Session;
  /** Resolves with the session once it ended, whatever the outcome. */
  done: Promise<Session>;
}

interface Live {
  owner: string;
  stream: InferStream;
  target: Target;
  cancelRequested: boolean;
}


/**
 * Runs jobs as recorded sessions: picks a worker, opens its Infer stream,
 * relays every event to the event log (live listeners and the store), and
 * keeps the session row's status in step. A session always ends with exactly
 * one terminal event, whatever happens to the worker.
 */
export class SessionService {
  private readonly live = new Map<string, Live>();

  constructor(
    private readonly deps: {
      sessions: SessionStore;
      events: SessionEventLog;
      scheduler: WorkerScheduler;
      logger: Logger;
      inferenceDeadlineMs: number;
      outputUrl: (sessionId: string, file: string) => string;
      metrics?: GatewayMetrics;
    },
  ) {}

  /** Sessions left queued or running by a previous gateway process. */
  async interruptLeftovers(): Promise<number> {
    const count = await this.deps.sessions.interruptAll(['queued', 'running'], new Date());
    if (count > 0) this.deps.logger.warn('sessions interrupted by a gateway restart', { count });
    return count;
  }

  get activeCount(): number {
    return this.live.size;
  }

  async start(spec: JobSpec, principal: Principal, options: StartOptions): Promise<RunningSession> {
    const target = await this.deps.scheduler.choose({ model: spec.model, deviceId: spec.deviceId }, options.correlationId);
    await options.preflight?.(target);
    const id = randomUUID();
    const session = await this.deps.sessions.create({
      id,
      owner: principal.id,
      task: spec.task,
      model: spec.model,
      parameters: spec.parameters,
      batchId: options.batchId ?? null,
    });
    this.deps.events.open(id);
    const stream = target.client.infer(spec.build(id, target.deviceId), {
      correlationId: options.correlationId,
      deadlineMs: this.deps.inferenceDeadlineMs,
    });
    const live: Live = { owner: principal.id, stream, target, cancelRequested: false };
    this.live.set(id, live);
    const release = this.deps.scheduler.track(target.worker.id);
    const done = this.relay(session, live).finally(() => {
      release();
      this.live.delete(id);
    });
    return { session, done };
  }

  /** A session by id, whoever owns it (for the gateway's own use). */
  find(id: string): Promise<Session | undefined> {
    return this.deps.sessions.get(id);
  }

  /** A session visible to the principal (its own, or any for admins); 404 otherwise. */
  async get(id: string, principal: Principal): Promise<Session> {
    const session = await this.deps.sessions.get(id);
    if (!session || (session.owner !== principal.id && !isAdmin(principal))) {
      throw new NotFoundError(`No session '${id}'.`);
    }
    return session;
  }

  list(principal: Principal, query: Omit<SessionQuery, 'owner'>): Promise<{ items: Session[]; total: number }> {
    return this.deps.sessions.list({ ...query, ...(isAdmin(principal) ? {} : { owner: principal.id }) });
  }

  /** Ask the worker to stop the job; the stream then ends with the cancelled event. */
  async cancel(id: string, principal: Principal, correlationId: string): Promise<Session> {
    const session = await this.get(id, principal);
    const live = this.live.get(id);
    if (!live || TERMINAL_SESSION_STATUSES.includes(session.status)) return session;
    live.cancelRequested = true;
    try {
      await live.target.client.cancelJob(id, { correlationId });
    } catch (error) {
      // The worker never accepted it, or is gone: end the call from our side.
      this.deps.logger.warn('worker could not cancel the job; closing the stream', { sessionId: id, err: error });
      live.stream.cancel();
    }
    return session;
  }

  /** Stop a job because the only client following it went away. */
  abandon(id: string): void {
    const live = this.live.get(id);
    if (live) {
      live.cancelRequested = true;
      live.stream.cancel();
    }
  }

  follow(id: string, afterSequence: number, listener: SessionListener) {
    return this.deps.events.follow(id, afterSequence, listener);
  }

  isLive(id: string): boolean {
    return this.live.has(id);
  }

  // ------------------------------------------------------------ relay

  private async relay(session: Session, live: Live): Promise<Session> {
    const id = session.id;
    const metrics = this.deps.metrics;
    const acceptedAt = performance.now();
    let sequence = 0;
    let status: SessionStatus = 'queued';
    metrics?.sessions.inc({ state: 'queued' });
    let terminal: { status: SessionStatus; result?: Record<string, unknown>; error?: SessionError } | null = null;
    const emit = (type: string, data: Record<string, unknown>) => {
      sequence += 1;
      this.deps.events.append({ sessionId: id, sequence, type, data, createdAt: new Date() });
    };
    try {
      for await (const event of live.stream.events) {
        const mapped = this.mapEvent(id, event, live.target);
        if (!mapped) continue;
        emit(mapped.type, mapped.data);
        if (mapped.type === 'started' && status === 'queued') {
          status = 'running';
          metrics?.sessions.dec({ state: 'queued' });
          metrics?.sessions.inc({ state: 'running' });
          metrics?.queueWait.observe((performance.now() - acceptedAt) / 1000);
          await this.update(id, { status, startedAt: new Date(), deviceId: String(mapped.data.deviceId), workerId: live.target.worker.id });
        } else if (mapped.type === 'queued') {
          await this.update(id, { deviceId: String(mapped.data.deviceId), workerId: live.target.worker.id });
        } else if (mapped.type === 'result') {
          terminal = { status: 'succeeded', result: mapped.data };
        } else if (mapped.type === 'error') {
          terminal = { status: 'failed', error: { code: String(mapped.data.code), message: String(mapped.data.message) } };
        } else if (mapped.type === 'cancelled') {
          terminal = { status: 'cancelled', result: { reason: mapped.data.reason } };
        }
        if (terminal) break;
      }
      if (!terminal) terminal = this.lost(live, status, 'the worker ended the stream without a terminal event');
    } catch (error) {
      terminal = this.failure(live, status, error);
      if (terminal.status === 'cancelled') emit('cancelled', { reason: 'client-disconnected' });
      else emit('error', { ...terminal.error! });
    }
    metrics?.sessions.dec({ state: status === 'running' ? 'running' : 'queued' });
    metrics?.sessionsFinished.inc({ status: terminal.status });
    const finished = await this.update(id, {
      status: terminal.status,
      finishedAt: new Date(),
      result: terminal.result ?? null,
      error: terminal.error ?? null,
    });
    await this.deps.events.close(id);
    this.deps.logger.info('session finished', { sessionId: id, status: terminal.status, workerId: live.target.worker.id });
    return finished ?? session;
  }

  private failure(live: Live, status: SessionStatus, error: unknown): { status: SessionStatus; error?: SessionError } {
    if (live.cancelRequested) return { status: 'cancelled' };
    if (error instanceof WorkerCallError) {
      if (status === 'queued' && !['UNAVAILABLE', 'CANCELLED', 'DEADLINE_EXCEEDED'].includes(error.grpcCode)) {
        // Refused by the worker before it accepted the job (bad input it caught).
        return { status: 'failed', error: { code: error.grpcCode, message: error.detail } };
      }
      return this.lost(live, status, error.detail, error.grpcCode);
    }
    this.deps.logger.error('session relay failed', { err: error });
    return { status: 'failed', error: { code: 'INTERNAL', message: 'The gateway failed while relaying the job.' } };
  }

  private lost(live: Live, status: SessionStatus, reason: string, code = 'WORKER_LOST') {
    const when = status === 'running' ? 'while running the job' : 'before starting the job';
    return {
      status: 'failed' as const,
      error: { code, message: `worker ${live.target.worker.id} was lost ${when}: ${reason}` },
    };
  }

  private async update(id: string, update: Parameters<SessionStore['update']>[1]): Promise<Session | undefined> {
    try {
      return await this.deps.sessions.update(id, update);
    } catch (error) {
      this.deps.logger.error('could not update session', { sessionId: id, err: error });
      return undefined;
    }
  }

  private mapEvent(id: string, event: InferEvent__Output, target: Target): { type: string; data: Record<string, unknown> } | null {
    switch (event.event) {
      case 'accepted':
        return { type: 'accepted', data: { sessionId: id, workerId: target.worker.id } };
      case 'queued':
        return { type: 'queued', data: { position: event.queued!.position, deviceId: event.queued!.deviceId } };
      case 'started':
        return { type: 'started', data: { deviceId: event.started!.deviceId, workerId: target.worker.id } };
      case 'progress':
        return { type: 'progress', data: { current: event.progress!.current, total: event.progress!.total } };
      case 'result':
        return { type: 'result', data: this.resultSummary(id, event.result!, target) };
      case 'error':
        return { type: 'error', data: { code: event.error!.code, message: event.error!.message } };
      case 'cancelled':
        return { type: 'cancelled', data: { reason: event.cancelled!.reason } };
      default:
        return null;
    }
  }

  private resultSummary(id: string, result: InferResult__Output, target: Target): Record<string, unknown> {
    const summary: Record<string, unknown> = {
      deviceId: result.deviceId,
      workerId: target.worker.id,
      model: result.model || null,
      dtype: result.dtype || null,
      runMs: Math.round(result.runMs * 1000) / 1000,
      batchSize: result.batchSize,
    };
    if (result.seed !== undefined) summary.seed = result.seed;
    if (result.files.length > 0) {
      summary.files = result.files.map((file) => {
        const name = file.path.split('/').pop()!;
        return {
          name,
          url: this.deps.outputUrl(id, name),
          mediaType: file.mediaType,
          sizeBytes: file.sizeBytes,
          sha256: file.sha256,
          width: file.width,
          height: file.height,
        };
      });
    }
    if (result.embeddings.length > 0) summary.embeddings = result.embeddings.map((e) => e.values);
    const tensors = Object.entries(result.tensors);
    if (tensors.length > 0) {
      summary.tensors = Object.fromEntries(
        tensors.map(([name, t]) => [name, { dtype: t.dtype, shape: t.shape, data: Buffer.from(t.data).toString('base64') }]),
      );
    }
    return summary;
  }
}
