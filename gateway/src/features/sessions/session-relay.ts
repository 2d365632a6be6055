import { status as GrpcStatus } from '@grpc/grpc-js';
import { ServiceUnavailableError } from '../../errors/gateway-error.js';
import { WorkerCallError } from '../../errors/worker-call-error.js';
import type { InferStream } from '../../infra/grpc/worker-client.js';
import type { Logger } from '../../infra/logger.js';
import type { GatewayMetrics } from '../../infra/metrics.js';
import type { Target, WorkerScheduler } from '../scheduling/worker-scheduler.js';
import { toWorkerRequest, type JobSpec } from './job-request.js';
import type { SessionEventLog } from './session-event-log.js';
import { mapWorkerEvent, TERMINAL_EVENT_TYPES, type MappedEvent } from './session-event-mapping.js';
import type { SessionStore } from './session-store-type.js';
import { CancelledBeforeStart, lostTerminal, terminalFor, toTerminal, type RelaySituation, type Terminal } from './session-terminal.js';
import type { Session, SessionEnd, SessionStatus } from './session-types.js';

/** How long the end of a session is retried through a database outage. */
const END_RETRY_MS = 5 * 60_000;
/** Attaches to the same worker after a broken stream, per relay. */
const MAX_ATTACHES = 3;

export interface RelayDeps {
  sessions: SessionStore;
  events: SessionEventLog;
  scheduler: WorkerScheduler;
  logger: Logger;
  metrics?: GatewayMetrics;
  outputUrl: (sessionId: string, file: string) => string;
  /** This gateway process: the owner every write of the relay is fenced by. */
  instanceId: string;
  inferenceDeadlineMs: number;
  /** Whether writes that fail should still be retried (false once shutting down). */
  retryingEnds: () => boolean;
}

/** How the relay gets its worker stream. */
export type RelayStart =
  /** Placed before the session was written (execute): the job goes there. */
  | { kind: 'reserved'; target: Target; release: () => void }
  /** From the queue: place it now. */
  | { kind: 'dispatch' }
  /** Taken over from an instance that went away: follow it where it was sent. */
  | { kind: 'attach'; workerId: string };

export interface RelayJob {
  session: Session;
  spec: JobSpec;
  correlationId: string;
  /** Background work goes back to the queue when no worker has room; execute fails with 503. */
  background: boolean;
  /** Known when taken over: when the job must have ended. */
  deadlineAt: number | null;
  cancelRequested: boolean;
  /** The session's last stored sequence; the relay continues after it. */
  lastSequence: number;
  /** The worker events of the current dispatch already stored (a takeover replays after them). */
  lastWorkerSequence: number;
}

export type RelayOutcome =
  | { kind: 'ended'; session: Session }
  /** Back in the queue: no worker had room. */
  | { kind: 'requeued' }
  /** This instance stopped relaying it without ending it (shutdown hand-over, lost lease, ended elsewhere). */
  | { kind: 'left'; reason: string };


/**
 * Relays one session's job: places it (or follows it where it was sent),
 * maps every worker event into the session's events, keeps the session row
 * in step, and ends it exactly once — a compare-and-set fenced by this
 * instance — with exactly one terminal event, sent once the end is stored.
 * A job the worker never started moves to another worker (or, for background
 * work, back to the queue); a started one is followed again after a broken
 * stream (AttachJob), never run twice.
 */
export class SessionRelay {
  readonly id: string;
  private stream: InferStream | null = null;
  private target: Target | null = null;
  private release: () => void = () => {};
  private status: SessionStatus;
  private sequence: number;
  private workerSequence: number;
  private deadlineAt: number | null;
  private cancelRequested: boolean;
  private interrupted: string | null = null;
  private leaving: string | null = null;
  private moved = false;
  private attaches = 0;
  private readonly tried = new Set<string>();
  /** Whether the current worker answered anything: a job it never accepted cannot be there. */
  private heardFromWorker = false;
  /** What broke the stream we are reattaching after, if any: the cause should the reattach fail. */
  private streamFailure: WorkerCallError | null = null;
  /** A worker already held this job id once: a second refusal is final. */
  private duplicateSeen = false;
  /** The failure a recovery judged by, when not the one it was handed (a failed reattach stands for what broke the stream). */
  private cause: WorkerCallError | null = null;
  /** A queued session was accepted when it was stored: the first worker's `accepted` says nothing new. */
  private skipAccepted: boolean;
  done: Promise<RelayOutcome> | null = null;

  constructor(
    private readonly deps: RelayDeps,
    private readonly job: RelayJob,
  ) {
    this.id = job.session.id;
    this.status = job.session.status === 'running' ? 'running' : 'queued';
    this.sequence = job.lastSequence;
    this.workerSequence = job.lastWorkerSequence;
    this.deadlineAt = job.deadlineAt;
    this.cancelRequested = job.cancelRequested;
    this.skipAccepted = job.background && job.lastSequence > 0;
  }

  get workerId(): string | null {
    return this.target?.worker.id ?? null;
  }

  run(start: RelayStart): Promise<RelayOutcome> {
    this.done ??= this.relay(start).finally(() => this.release());
    return this.done;
  }

  /** Stop the job on its worker; the stream then ends with the cancelled event. */
  async requestCancel(correlationId: string): Promise<void> {
    this.cancelRequested = true;
    const target = this.target;
    if (!target) return; // not placed yet: checked once it is
    try {
      await target.client.cancelJob(this.id, { correlationId });
    } catch (error) {
      // The worker never accepted it, or is gone: end the call from our side.
      this.deps.logger.warn('worker could not cancel the job; closing the stream', { sessionId: this.id, err: error });
      this.stream?.cancel();
    }
  }

  /** The gateway stops the job (shutdown with workers that stop too): it ends `interrupted`. */
  interrupt(reason: string): void {
    this.interrupted = reason;
    void this.target?.client.cancelJob(this.id, { correlationId: this.job.correlationId }).catch(() => undefined);
    this.stream?.cancel();
  }

  /** Stop relaying without ending the session: the job runs on, and another instance takes it over. */
  leave(reason: string): void {
    this.leaving = reason;
    this.stream?.cancel();
  }

  private async relay(start: RelayStart): Promise<RelayOutcome> {
    const metrics = this.deps.metrics;
    const acceptedAt = performance.now();
    this.deps.events.open(this.id, this.sequence + 1);
    metrics?.sessions.inc({ state: this.status === 'running' ? 'running' : 'queued' });
    let terminal: Terminal | null = null;
    let terminalEvent: MappedEvent | null = null;
    try {
      const begun = await this.begin(start);
      if (begun) return begun;
      for (;;) {
        try {
          for await (const event of this.stream!.events) {
            this.heardFromWorker = true;
            // A replay after reattaching starts where the stored events end.
            if (event.sequence <= this.workerSequence) continue;
            this.workerSequence = event.sequence;
            const mapped = mapWorkerEvent(this.id, this.target!.worker.id, event, this.deps.outputUrl);
            if (!mapped) continue;
            if (mapped.type === 'accepted' && this.skipAccepted) {
              this.skipAccepted = false;
              continue;
            }
            this.streamFailure = null;
            if (TERMINAL_EVENT_TYPES.has(mapped.type)) {
              terminalEvent = mapped;
              terminal = toTerminal(mapped);
              break;
            }
            this.emit(mapped, event.sequence);
            if (mapped.type === 'started' && this.status === 'queued') {
              this.status = 'running';
              metrics?.sessions.dec({ state: 'queued' });
              metrics?.sessions.inc({ state: 'running' });
              metrics?.queueWait.observe((performance.now() - acceptedAt) / 1000);
              await this.update({ status: 'running', startedAt: new Date(), deviceId: String(mapped.data.deviceId), workerId: this.target!.worker.id });
            } else if (mapped.type === 'queued') {
              await this.update({ deviceId: String(mapped.data.deviceId), workerId: this.target!.worker.id });
            }
          }
          if (this.leaving) return await this.leaveNow(this.leaving);
          if (!terminal) {
            terminal = this.lost('the worker ended the stream without a terminal event');
            terminalEvent = { type: 'error', data: { ...terminal.error! } };
          }
          break;
        } catch (error) {
          if (this.leaving) return await this.leaveNow(this.leaving);
          this.cause = null;
          const next = await this.recover(error);
          if (next === 'requeue') return await this.requeue(this.cause ?? error);
          if (next !== 'continue') throw this.cause ?? error;
        }
      }
    } catch (error) {
      if (this.leaving) return await this.leaveNow(this.leaving);
      if (error instanceof LeftError) return await this.leaveNow(error.message);
      terminal = this.failure(error);
      terminalEvent =
        terminal.status === 'cancelled'
          ? { type: 'cancelled', data: { reason: (terminal.result?.reason as string | undefined) ?? 'client-disconnected' } }
          : { type: 'error', data: { ...terminal.error! } };
    } finally {
      metrics?.sessions.dec({ state: this.status === 'running' ? 'running' : 'queued' });
    }
    return this.end(terminal!, terminalEvent!);
  }

  /** Get a stream to follow; an outcome when the session leaves before it has one. */
  private async begin(start: RelayStart): Promise<RelayOutcome | null> {
    if (start.kind === 'reserved') {
      this.placed(start.target, start.release);
      await this.send();
      return null;
    }
    if (start.kind === 'attach') {
      const target = this.deps.scheduler.targetOf(start.workerId);
      if (target) {
        this.placed(target, () => {});
        this.attach();
        return null;
      }
      // The worker it went to is not among ours (gone, or never reachable from here).
      if (this.status === 'running') throw new WorkerCallError(start.workerId, 'AttachJob', GrpcStatus.UNAVAILABLE, `worker ${start.workerId} is not serving`);
    }
    if (this.cancelRequested) throw new CancelledBeforeStart();
    return this.placeAndSend([]);
  }

  /** Place the job on a worker (none of `exclude`) and send it; background work goes back to the queue when none has room. */
  private async placeAndSend(exclude: string[]): Promise<RelayOutcome | null> {
    let placed: { target: Target; release: () => void };
    try {
      placed = await this.deps.scheduler.reserve({ model: this.job.spec.model, deviceId: this.job.spec.deviceId }, this.job.correlationId, exclude);
    } catch (error) {
      if (this.job.background && error instanceof ServiceUnavailableError) return this.requeue(error);
      throw error;
    }
    this.placed(placed.target, placed.release);
    await this.send();
    return null;
  }

  private placed(target: Target, release: () => void): void {
    this.release();
    this.target = target;
    this.release = release;
    this.tried.add(target.worker.id);
    this.heardFromWorker = false;
  }

  /** Record where the job goes (so a takeover knows where to look), then send it. */
  private async send(): Promise<void> {
    const target = this.target!;
    this.deadlineAt ??= Date.now() + this.deps.inferenceDeadlineMs;
    const recorded = await this.deps.sessions.dispatch(this.id, this.deps.instanceId, {
      workerId: target.worker.id,
      deadlineAt: new Date(this.deadlineAt),
      afterSequence: this.sequence,
    });
    if (!recorded) throw new LeftError('another instance holds the session');
    // Cancelled before it reached a worker (here, on another replica, or between claim and this relay going live): never sent.
    if (recorded.cancelRequested || this.cancelRequested) {
      this.cancelRequested = true;
      throw new CancelledBeforeStart();
    }
    this.workerSequence = 0;
    this.stream = callSafely(target.worker.id, 'Infer', () =>
      target.client.infer(toWorkerRequest(this.id, target.deviceId, this.job.spec.job), {
        correlationId: this.job.correlationId,
        deadlineMs: this.remainingMs(),
      }),
    );
  }

  private attach(): void {
    const target = this.target!;
    this.attaches += 1;
    this.stream = callSafely(target.worker.id, 'AttachJob', () =>
      target.client.attachJob(this.id, this.workerSequence, { correlationId: this.job.correlationId, deadlineMs: this.remainingMs() }),
    );
    if (this.cancelRequested) void this.requestCancel(this.job.correlationId);
  }

  private remainingMs(): number {
    return Math.max(1000, (this.deadlineAt ?? Date.now() + this.deps.inferenceDeadlineMs) - Date.now());
  }

  /**
   * After a failed stream: 'continue' with a new stream, 'requeue', or null
   * (the failure ends the session). A job the worker holds is followed again
   * there; one it never started moves to another worker.
   */
  private async recover(error: unknown): Promise<'continue' | 'requeue' | null> {
    if (!(error instanceof WorkerCallError) || this.interrupted) return null;
    const code = error.grpcCode;
    // Sent twice (a takeover raced the first send): follow the one the worker has —
    // once; a worker that refuses the id but holds no such job (only its outputs) ends it.
    if (code === 'ALREADY_EXISTS') {
      if (this.duplicateSeen) return null;
      this.duplicateSeen = true;
      this.streamFailure = error;
      this.attach();
      return 'continue';
    }
    if (this.cancelRequested && code !== 'UNAVAILABLE') return null;
    if (error.rpc === 'AttachJob' && (code === 'NOT_FOUND' || code === 'UNAVAILABLE') && this.streamFailure) {
      // Reattaching after a broken stream failed: the worker lost the job (or is gone) — judge by what broke it,
      // without reattaching again.
      const cause = this.streamFailure;
      this.streamFailure = null;
      this.cause = cause;
      this.attaches = MAX_ATTACHES;
      return this.recover(cause);
    }
    if (error.rpc === 'AttachJob' && code === 'NOT_FOUND') {
      // Taken over, and the worker does not hold it: never sent there, or the worker restarted.
      if (this.status !== 'queued') return null;
      if (this.job.spec.deviceId || !(await this.tryElsewhere(error))) return (await this.placeAndSend([])) ? 'requeue' : 'continue';
      return 'continue';
    }
    if (code === 'UNAVAILABLE' && this.heardFromWorker && this.attaches < MAX_ATTACHES && error.rpc !== 'AttachJob') {
      // Our connection broke, perhaps not the worker: the job may run on there.
      this.streamFailure = error;
      this.attach();
      return 'continue';
    }
    if (code === 'DEADLINE_EXCEEDED') {
      void this.target?.client.cancelJob(this.id, { correlationId: this.job.correlationId }).catch(() => undefined);
      return null;
    }
    const capacity = code === 'RESOURCE_EXHAUSTED' || code === 'UNAVAILABLE';
    if (!capacity || this.status !== 'queued' || this.job.spec.deviceId || this.cancelRequested) return null;
    return this.moveElsewhere(error);
  }

  /**
   * A job the worker never started (it was unavailable, or its queue full)
   * goes to another serving worker: once after UNAVAILABLE, to each worker
   * in turn after RESOURCE_EXHAUSTED. With none left, background work goes
   * back to the queue; execute fails with the cause.
   */
  private async moveElsewhere(error: WorkerCallError): Promise<'continue' | 'requeue' | null> {
    if (error.grpcCode === 'UNAVAILABLE' && this.moved) return null;
    if (await this.tryElsewhere(error)) return 'continue';
    return this.job.background ? 'requeue' : null;
  }

  /** Send the job to a worker not tried yet, telling followers; false when none can take it. */
  private async tryElsewhere(error: WorkerCallError): Promise<boolean> {
    const from = this.target!.worker.id;
    let placed: { target: Target; release: () => void };
    try {
      placed = await this.deps.scheduler.reserve({ model: this.job.spec.model }, this.job.correlationId, [...this.tried]);
    } catch {
      return false;
    }
    this.moved = true;
    this.skipAccepted = false;
    this.placed(placed.target, placed.release);
    this.deps.logger.warn('job sent to another worker before it started', { sessionId: this.id, fromWorker: from, toWorker: placed.target.worker.id, reason: error.detail });
    this.emit({ type: 'requeued', data: { fromWorker: from, toWorker: placed.target.worker.id, reason: error.detail } });
    await this.send();
    return true;
  }

  /** No worker has room: back in the queue, where any instance dispatches it once one has. */
  private async requeue(cause: unknown): Promise<RelayOutcome> {
    this.stream?.cancel();
    this.release();
    this.release = () => {};
    const reason = cause instanceof Error ? cause.message : String(cause);
    this.emit({ type: 'queued', data: { position: null, reason: `waiting for a worker with room: ${reason}` } });
    await this.deps.events.release(this.id);
    const back = await this.deps.sessions.release(this.id, this.deps.instanceId).catch(() => false);
    if (!back) return { kind: 'left', reason: 'another instance holds the session' };
    this.deps.logger.info('job back in the queue: no worker has room', { sessionId: this.id, reason });
    return { kind: 'requeued' };
  }

  private async leaveNow(reason: string): Promise<RelayOutcome> {
    this.stream?.cancel();
    await this.deps.events.release(this.id);
    this.deps.logger.info('stopped relaying a session without ending it', { sessionId: this.id, reason });
    return { kind: 'left', reason };
  }

  private emit(event: MappedEvent, workerSequence?: number): void {
    this.sequence += 1;
    this.deps.events.append({
      sessionId: this.id,
      sequence: this.sequence,
      type: event.type,
      data: event.data,
      createdAt: new Date(),
      ...(workerSequence !== undefined ? { workerSequence } : {}),
    });
  }

  private failure(error: unknown): Terminal {
    if (!(error instanceof WorkerCallError) && !(error instanceof CancelledBeforeStart) && (error as { status?: number }).status === undefined) {
      this.deps.logger.error('session relay failed', { sessionId: this.id, err: error });
    }
    return terminalFor(error, this.situation());
  }

  private lost(reason: string): Terminal {
    return lostTerminal(reason, 'WORKER_LOST', this.situation());
  }

  private situation(): RelaySituation {
    return { interrupted: this.interrupted, cancelRequested: this.cancelRequested, status: this.status, workerId: this.target?.worker.id ?? null };
  }

  /**
   * End the session, once: stored first (so a client that saw the terminal
   * event reads the session ended), then the terminal event. When the
   * database refuses, the event goes out anyway and the write is retried
   * behind it. When another instance ended or holds it, nothing is written.
   */
  private async end(terminal: Terminal, terminalEvent: MappedEvent): Promise<RelayOutcome> {
    this.deps.metrics?.sessionsFinished.inc({ status: terminal.status });
    const end: SessionEnd = {
      status: terminal.status,
      finishedAt: new Date(),
      workerId: this.target?.worker.id ?? this.job.session.workerId,
      result: terminal.result ?? null,
      error: terminal.error ?? null,
    };
    let stored: Session | undefined | null;
    try {
      stored = await this.deps.sessions.finish(this.id, end, this.deps.instanceId);
    } catch {
      stored = null;
    }
    if (stored === undefined) {
      await this.deps.events.release(this.id);
      return { kind: 'left', reason: 'ended or held by another instance' };
    }
    this.emit(terminalEvent);
    const finished = stored ?? (await this.recordEnd(end));
    await this.deps.events.close(this.id);
    this.deps.logger.info('session finished', { sessionId: this.id, status: terminal.status, workerId: end.workerId });
    return { kind: 'ended', session: finished ?? { ...this.job.session, ...end, workerId: end.workerId ?? null } };
  }

  /**
   * The terminal status must reach the database, or the session would stay
   * `running`: retried (1 s, doubling to 10 s) through a database outage,
   * for up to END_RETRY_MS.
   */
  private async recordEnd(end: SessionEnd): Promise<Session | undefined> {
    const giveUpAt = Date.now() + END_RETRY_MS;
    for (let delay = 1000; ; delay = Math.min(delay * 2, 10_000)) {
      try {
        return await this.deps.sessions.finish(this.id, end, this.deps.instanceId);
      } catch (error) {
        if (Date.now() + delay > giveUpAt || !this.deps.retryingEnds()) {
          this.deps.logger.error('could not record the end of a session', { sessionId: this.id, status: end.status, err: error });
          return undefined;
        }
        this.deps.logger.warn('could not record the end of a session; retrying', { sessionId: this.id, retryInMs: delay, err: error });
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  private async update(update: Parameters<SessionStore['update']>[1]): Promise<void> {
    try {
      await this.deps.sessions.update(this.id, update);
    } catch (error) {
      this.deps.logger.error('could not update session', { sessionId: this.id, err: error });
    }
  }
}

/** A call that fails to start (the channel closed under us) becomes a stream that fails UNAVAILABLE. */
function callSafely(workerId: string, rpc: string, call: () => InferStream): InferStream {
  try {
    return call();
  } catch (error) {
    const failure = new WorkerCallError(workerId, rpc, GrpcStatus.UNAVAILABLE, `worker ${workerId} is gone: ${(error as Error).message}`);
    return { events: { [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(failure) }) }, cancel: () => {} };
  }
}

/** The session is no longer this instance's to relay. */
class LeftError extends Error {}
