import { randomUUID } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import type { InferEvent__Output } from '../../generated/device_ops/v1/InferEvent.js';
import type { InferRequest } from '../../generated/device_ops/v1/InferRequest.js';
import type { InferResult__Output } from '../../generated/device_ops/v1/InferResult.js';
import { NotFoundError, ServiceUnavailableError } from '../../errors/gateway-error.js';
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

/** How long the end of a session is retried through a database outage. */
const END_RETRY_MS = 5 * 60_000;

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
  spec: JobSpec;
  correlationId: string;
  /** When the job must have ended (epoch ms), retries included. */
  deadlineAt: number;
  stream: InferStream;
  target: Target;
  /** Stop counting the job on its worker. */
  release: () => void;
  cancelRequested: boolean;
  /** Why the gateway itself stopped the job (shutdown), if it did. */
  interrupted: string | null;
  /** Already sent to a second worker once. */
  retried: boolean;
  done?: Promise<Session>;
}

/** Events that end a job's stream: exactly one per job. */
const TERMINAL_TYPES = new Set(['result', 'error', 'cancelled']);

/**
 * Runs jobs as recorded sessions: picks a worker, opens its Infer stream,
 * relays every event to the event log (live listeners and the store), and
 * keeps the session row's status in step. A session always ends with exactly
 * one terminal event, whatever happens to the worker, sent once its end is
 * stored (a client that saw it and reads the session finds it ended).
 */
export class SessionService {
  private readonly live = new Map<string, Live>();
  /** start() calls between the capacity check and the live entry. */
  private starting = 0;
  private closed = false;

  constructor(
    private readonly deps: {
      sessions: SessionStore;
      events: SessionEventLog;
      scheduler: WorkerScheduler;
      logger: Logger;
      inferenceDeadlineMs: number;
      outputUrl: (sessionId: string, file: string) => string;
      metrics?: GatewayMetrics;
      /** Jobs this gateway runs at once (MAX_ACTIVE_SESSIONS); more are refused with 503. */
      maxActiveSessions?: number;
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
    // The job's deadline runs from the request: placement and preflight count against it.
    const deadlineAt = Date.now() + this.deps.inferenceDeadlineMs;
    const max = this.deps.maxActiveSessions ?? Number.POSITIVE_INFINITY;
    if (this.live.size + this.starting >= max) {
      throw new ServiceUnavailableError(`The gateway already runs ${max} jobs, its limit; retry shortly.`, 1, 'gateway-queue');
    }
    this.starting += 1;
    let target: Target;
    let session: Session;
    let release: (() => void) | null = null;
    try {
      // Counted on its worker at once, so concurrent requests spread and the in-flight bound holds.
      ({ target, release } = await this.deps.scheduler.reserve({ model: spec.model, deviceId: spec.deviceId }, options.correlationId));
      await options.preflight?.(target);
      session = await this.deps.sessions.create({
        id: randomUUID(),
        owner: principal.id,
        task: spec.task,
        model: spec.model,
        parameters: spec.parameters,
        batchId: options.batchId ?? null,
      });
    } catch (error) {
      release?.();
      throw error;
    } finally {
      this.starting -= 1;
    }
    const id = session.id;
    this.deps.events.open(id);
    const live: Live = {
      owner: principal.id,
      spec,
      correlationId: options.correlationId,
      deadlineAt,
      stream: this.call(id, spec, target, options.correlationId, deadlineAt),
      target,
      release: release!,
      cancelRequested: false,
      interrupted: null,
      retried: false,
    };
    this.live.set(id, live);
    const done = this.relay(session, live).finally(() => {
      live.release();
      this.live.delete(id);
    });
    live.done = done;
    return { session, done };
  }

  private call(id: string, spec: JobSpec, target: Target, correlationId: string, deadlineAt: number): InferStream {
    try {
      return target.client.infer(spec.build(id, target.deviceId), { correlationId, deadlineMs: Math.max(1, deadlineAt - Date.now()) });
    } catch (error) {
      // The channel closed under us (worker retired between placement and call):
      // the relay records it, or moves the job, like any unavailable worker.
      const failure = new WorkerCallError(target.worker.id, 'Infer', status.UNAVAILABLE, `worker ${target.worker.id} is gone: ${(error as Error).message}`);
      return {
        events: {
          [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(failure) }),
        },
        cancel: () => {},
      };
    }
  }

  /**
   * Shutdown: stop every job still running, record it `interrupted` and give
   * its followers a terminal error event. Resolves once all are recorded.
   */
  async interruptActive(reason: string): Promise<number> {
    const lives = [...this.live.values()];
    for (const live of lives) {
      live.interrupted = reason;
      live.stream.cancel();
    }
    await Promise.allSettled(lives.map((live) => live.done));
    if (lives.length > 0) this.deps.logger.warn('sessions interrupted by shutdown', { count: lives.length, reason });
    return lives.length;
  }

  /** Resolves when no job is running, or after `timeoutMs`; true when idle. */
  async waitIdle(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    const busy = () => this.live.size + this.starting > 0;
    while (busy() && Date.now() < deadline) {
      const pending = [...this.live.values()].map((live) => live.done);
      // Jobs still being placed have no promise yet: look again shortly.
      const wait = pending.length > 0 && this.starting === 0 ? deadline - Date.now() : 50;
      await Promise.race([
        Promise.allSettled(pending),
        new Promise((resolve) => setTimeout(resolve, Math.max(0, Math.min(wait, deadline - Date.now()))).unref()),
      ]);
    }
    return !busy();
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
    let terminalEvent: { type: string; data: Record<string, unknown> } | null = null;
    const emit = (type: string, data: Record<string, unknown>) => {
      sequence += 1;
      this.deps.events.append({ sessionId: id, sequence, type, data, createdAt: new Date() });
    };
    try {
      for (;;) {
        try {
          for await (const event of live.stream.events) {
            const mapped = this.mapEvent(id, event, live.target);
            if (!mapped) continue;
            // The terminal event goes out once the session's end is stored (below).
            if (!TERMINAL_TYPES.has(mapped.type)) emit(mapped.type, mapped.data);
            else terminalEvent = mapped;
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
          if (!terminal) {
            terminal = this.lost(live, status, 'the worker ended the stream without a terminal event');
            terminalEvent = { type: 'error', data: { ...terminal.error! } };
          }
          break;
        } catch (error) {
          const moved = await this.retryElsewhere(id, live, status, error);
          if (!moved) throw error;
          emit('requeued', moved);
        }
      }
    } catch (error) {
      terminal = this.failure(live, status, error);
      terminalEvent =
        terminal.status === 'cancelled' ? { type: 'cancelled', data: { reason: 'client-disconnected' } } : { type: 'error', data: { ...terminal.error! } };
    }
    metrics?.sessions.dec({ state: status === 'running' ? 'running' : 'queued' });
    metrics?.sessionsFinished.inc({ status: terminal.status });
    const end = {
      status: terminal.status,
      finishedAt: new Date(),
      workerId: live.target.worker.id,
      result: terminal.result ?? null,
      error: terminal.error ?? null,
    };
    // Read your writes: a client that saw the terminal event and then reads the
    // session finds it ended. When the database refuses, the event goes out
    // anyway and the write is retried behind it.
    const stored = await this.deps.sessions.update(id, end).then(
      (row) => ({ row }),
      () => null,
    );
    emit(terminalEvent!.type, terminalEvent!.data);
    const finished = stored ? stored.row : await this.recordEnd(id, end);
    await this.deps.events.close(id);
    this.deps.logger.info('session finished', { sessionId: id, status: terminal.status, workerId: live.target.worker.id });
    return finished ?? session;
  }

  /**
   * A job the worker never started, lost because the worker became
   * unavailable (refused the connection, died with the job queued), goes to
   * another serving worker once. A started job is never re-run silently, and
   * a job pinned to a device has nowhere else to go.
   */
  private async retryElsewhere(
    id: string,
    live: Live,
    status: SessionStatus,
    error: unknown,
  ): Promise<{ fromWorker: string; toWorker: string; reason: string } | null> {
    if (status !== 'queued' || live.retried || live.cancelRequested || live.interrupted || live.spec.deviceId) return null;
    if (!(error instanceof WorkerCallError) || error.grpcCode !== 'UNAVAILABLE') return null;
    const from = live.target.worker.id;
    let placed: { target: Target; release: () => void };
    try {
      placed = await this.deps.scheduler.reserve({ model: live.spec.model }, live.correlationId, [from]);
    } catch {
      return null; // no other worker can take it: the job fails with the original cause
    }
    const { target } = placed;
    live.retried = true;
    live.release();
    live.target = target;
    live.release = placed.release;
    live.stream = this.call(id, live.spec, target, live.correlationId, live.deadlineAt);
    this.deps.logger.warn('job sent to another worker before it started', { sessionId: id, fromWorker: from, toWorker: target.worker.id, reason: error.detail });
    return { fromWorker: from, toWorker: target.worker.id, reason: error.detail };
  }

  private failure(live: Live, status: SessionStatus, error: unknown): { status: SessionStatus; error?: SessionError } {
    if (live.interrupted) return this.interruption(live);
    if (live.cancelRequested) return { status: 'cancelled' };
    if (error instanceof WorkerCallError) {
      if (status === 'queued' && !['UNAVAILABLE', 'CANCELLED', 'DEADLINE_EXCEEDED'].includes(error.grpcCode)) {
        // Refused by the worker before it accepted the job (bad input it caught).
        return { status: 'failed', error: { code: error.grpcCode, message: error.detail } };
      }
      if (error.grpcCode === 'DEADLINE_EXCEEDED') {
        return { status: 'failed', error: { code: 'DEADLINE_EXCEEDED', message: `worker ${live.target.worker.id} did not finish the job within its deadline` } };
      }
      return this.lost(live, status, error.detail, error.grpcCode);
    }
    this.deps.logger.error('session relay failed', { err: error });
    return { status: 'failed', error: { code: 'INTERNAL', message: 'The gateway failed while relaying the job.' } };
  }

  private interruption(live: Live): { status: SessionStatus; error: SessionError } {
    return { status: 'interrupted', error: { code: 'INTERRUPTED', message: `the gateway stopped the job: ${live.interrupted}` } };
  }

  private lost(live: Live, status: SessionStatus, reason: string, code = 'WORKER_LOST'): { status: SessionStatus; error: SessionError } {
    if (live.interrupted) return this.interruption(live);
    const when = status === 'running' ? 'while running the job' : 'before starting the job';
    return {
      status: 'failed' as const,
      error: { code, message: `worker ${live.target.worker.id} was lost ${when}: ${reason}` },
    };
  }

  /**
   * The terminal status must reach the database, or the session would stay
   * `running` for ever: retried (1 s, doubling to 10 s) through a database
   * outage, for up to END_RETRY_MS; a gateway restart marks what is still
   * open `interrupted`.
   */
  private async recordEnd(id: string, update: Parameters<SessionStore['update']>[1]): Promise<Session | undefined> {
    const giveUpAt = Date.now() + END_RETRY_MS;
    for (let delay = 1000; ; delay = Math.min(delay * 2, 10_000)) {
      try {
        return await this.deps.sessions.update(id, update);
      } catch (error) {
        if (Date.now() + delay > giveUpAt || this.closed) {
          this.deps.logger.error('could not record the end of a session', { sessionId: id, status: update.status, err: error });
          return undefined;
        }
        this.deps.logger.warn('could not record the end of a session; retrying', { sessionId: id, retryInMs: delay, err: error });
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  /** Shutdown: stop retrying writes the database keeps refusing. */
  close(): void {
    this.closed = true;
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
