import { randomUUID } from 'node:crypto';
import { NotFoundError, ServiceUnavailableError } from '../../errors/gateway-error.js';
import type { SessionBus } from '../../infra/bus/session-bus.js';
import type { Logger } from '../../infra/logger.js';
import type { GatewayMetrics } from '../../infra/metrics.js';
import { isAdmin, type Principal } from '../auth/principal.js';
import type { Target, WorkerScheduler } from '../scheduling/worker-scheduler.js';
import type { JobSpec } from './job-request.js';
import type { SessionEventLog, SessionListener } from './session-event-log.js';
import { SessionRelay, type RelayJob, type RelayOutcome, type RelayStart } from './session-relay.js';
import type { ClaimedSession, SessionEventStore, SessionStore } from './session-store-type.js';
import { TERMINAL_SESSION_STATUSES, type Session, type SessionQuery } from './session-types.js';

export type { JobSpec } from './job-request.js';

export interface StartOptions {
  correlationId: string;
  batchId?: string | null;
  /** Check the placement before anything is written (model exists, task, device). */
  preflight?: (target: Target) => Promise<void>;
}

export interface RunningSession {
  session: Session;
  /** Resolves with the session once it ended here (or, should it leave this instance, as last read). */
  done: Promise<Session>;
}

export interface SessionServiceDeps {
  sessions: SessionStore;
  eventStore: SessionEventStore;
  events: SessionEventLog;
  bus: SessionBus;
  scheduler: WorkerScheduler;
  logger: Logger;
  /** This gateway process's id: the owner of what it relays. */
  instanceId: string;
  inferenceDeadlineMs: number;
  /** How long a queued session may wait for a worker with room (QUEUE_TIMEOUT_SECONDS). */
  queueTimeoutMs: number;
  outputUrl: (sessionId: string, file: string) => string;
  metrics?: GatewayMetrics;
  /** Jobs this gateway relays at once (MAX_ACTIVE_SESSIONS): execute beyond it gets 503; the queue waits. */
  maxActiveSessions?: number;
}

/**
 * Jobs as recorded sessions. Execute runs a job at once on this instance;
 * a background session is stored queued (accepted = stored) and any
 * instance with room dispatches it (session-dispatcher.ts). Every session is
 * relayed by one instance at a time (session-relay.ts) and can be read,
 * followed and cancelled through any.
 */
export class SessionService {
  private readonly live = new Map<string, SessionRelay>();
  /** start() calls between the capacity check and the live entry. */
  private starting = 0;
  private closed = false;
  private readonly endedHooks: ((session: Session) => void)[] = [];

  constructor(private readonly deps: SessionServiceDeps) {}

  get activeCount(): number {
    return this.live.size;
  }

  get instanceId(): string {
    return this.deps.instanceId;
  }

  /** Room for more relays here (MAX_ACTIVE_SESSIONS less what runs or is being placed). */
  get room(): number {
    return (this.deps.maxActiveSessions ?? Number.POSITIVE_INFINITY) - this.live.size - this.starting;
  }

  /** Called with every session that ends on this instance (batches finish this way). */
  onEnded(hook: (session: Session) => void): void {
    this.endedHooks.push(hook);
  }

  /** Run a job now on this instance (execute): placed before anything is written, 503 when there is no room. */
  async start(spec: JobSpec, principal: Principal, options: StartOptions): Promise<RunningSession> {
    const max = this.deps.maxActiveSessions ?? Number.POSITIVE_INFINITY;
    if (this.live.size + this.starting >= max) {
      throw new ServiceUnavailableError(`The gateway already runs ${max} jobs, its limit; retry shortly.`, 1, 'gateway-queue');
    }
    this.starting += 1;
    let placed: { target: Target; release: () => void } | null = null;
    let session: Session;
    try {
      // Counted on its worker at once, so concurrent requests spread and the in-flight bound holds.
      placed = await this.deps.scheduler.reserve({ model: spec.model, deviceId: spec.deviceId }, options.correlationId);
      await options.preflight?.(placed.target);
      session = await this.deps.sessions.create({
        id: randomUUID(),
        owner: principal.id,
        task: spec.task,
        model: spec.model,
        parameters: spec.parameters,
        batchId: options.batchId ?? null,
        job: spec.job,
        correlationId: options.correlationId,
        ownerInstance: this.deps.instanceId,
      });
    } catch (error) {
      placed?.release();
      throw error;
    } finally {
      this.starting -= 1;
    }
    const relay = this.relay(session, spec, options.correlationId, false, {
      deadlineAt: null,
      cancelRequested: false,
      lastSequence: 0,
      lastWorkerSequence: 0,
    });
    const outcome = this.launch(relay, { kind: 'reserved', ...placed });
    return { session, done: outcome.then((o) => this.settled(session.id, o)) };
  }

  /** Store a background job queued: any instance dispatches it once a worker has room. Returns its place in the queue then. */
  async enqueue(spec: JobSpec, principal: Principal, options: { correlationId: string; batchId?: string | null }): Promise<{ session: Session; position: number }> {
    const session = await this.deps.sessions.create({
      id: randomUUID(),
      owner: principal.id,
      task: spec.task,
      model: spec.model,
      parameters: spec.parameters,
      batchId: options.batchId ?? null,
      job: spec.job,
      correlationId: options.correlationId,
      // Held here until its first events are stored, so no instance dispatches it before them.
      ownerInstance: this.deps.instanceId,
      queueDeadlineAt: new Date(Date.now() + this.deps.queueTimeoutMs),
    });
    const me = this.deps.instanceId;
    await this.deps.events.appendUnowned(event(session.id, 1, 'accepted', { sessionId: session.id, workerId: null }), me);
    const position = (await this.deps.sessions.queuePosition(session.id, true)) ?? 0;
    await this.deps.events.appendUnowned(event(session.id, 2, 'queued', { position, reason: 'waiting for a worker' }), me);
    // Into the queue: any instance may claim it now. (Should this process die first, its lease runs out and it is taken over.)
    await this.deps.sessions.release(session.id, me);
    this.deps.bus.publishQueued();
    return { session, position };
  }

  /** Relay a session this instance claimed from the queue or took over (session-dispatcher.ts). */
  async adopt(claimed: ClaimedSession, start: RelayStart): Promise<void> {
    const { session } = claimed;
    let last: { sequence: number; workerSequence: number };
    try {
      // Taken over: the worker's events of the current dispatch already stored; a new dispatch starts afresh.
      last = await this.deps.eventStore.lastSequences(session.id, start.kind === 'attach' ? claimed.dispatchSequence : MAX_SEQUENCE);
    } catch (error) {
      // Not relayed after all: back where another look finds it.
      if (session.status === 'queued') await this.deps.sessions.release(session.id, this.deps.instanceId).catch(() => false);
      throw error;
    }
    const { sequence, workerSequence } = last;
    const correlationId = claimed.correlationId ?? session.id;
    const spec: JobSpec = {
      task: session.task,
      model: session.model,
      parameters: session.parameters,
      job: claimed.job,
      ...(claimed.job.kind === 'inference' && claimed.job.request.deviceId ? { deviceId: claimed.job.request.deviceId } : {}),
    };
    const relay = this.relay(session, spec, correlationId, true, {
      deadlineAt: claimed.deadlineAt?.getTime() ?? null,
      cancelRequested: claimed.cancelRequested,
      lastSequence: sequence,
      lastWorkerSequence: start.kind === 'attach' ? workerSequence : 0,
    });
    void this.launch(relay, start);
  }

  /** The outcome of every relay running here, as they end (the dispatcher looks for room again). */
  private readonly outcomeHooks: ((outcome: RelayOutcome) => void)[] = [];
  onRelayDone(hook: (outcome: RelayOutcome) => void): void {
    this.outcomeHooks.push(hook);
  }

  private relay(
    session: Session,
    spec: JobSpec,
    correlationId: string,
    background: boolean,
    state: Omit<RelayJob, 'session' | 'spec' | 'correlationId' | 'background'>,
  ): SessionRelay {
    return new SessionRelay(
      {
        sessions: this.deps.sessions,
        events: this.deps.events,
        scheduler: this.deps.scheduler,
        logger: this.deps.logger,
        outputUrl: this.deps.outputUrl,
        instanceId: this.deps.instanceId,
        inferenceDeadlineMs: this.deps.inferenceDeadlineMs,
        retryingEnds: () => !this.closed,
        ...(this.deps.metrics ? { metrics: this.deps.metrics } : {}),
      },
      { session, spec, correlationId, background, ...state },
    );
  }

  private launch(relay: SessionRelay, start: RelayStart): Promise<RelayOutcome> {
    this.live.set(relay.id, relay);
    const outcome = relay.run(start).then(
      (o) => o,
      (error: unknown): RelayOutcome => {
        this.deps.logger.error('session relay failed', { sessionId: relay.id, err: error });
        return { kind: 'left', reason: 'relay failed' };
      },
    );
    return outcome.finally(() => {
      // A session put back in the queue may already be relayed here again.
      if (this.live.get(relay.id) === relay) this.live.delete(relay.id);
      void outcome.then((o) => {
        if (o.kind === 'ended') this.ended(o.session);
        for (const hook of this.outcomeHooks) hook(o);
      });
    });
  }

  private async settled(id: string, outcome: RelayOutcome): Promise<Session> {
    if (outcome.kind === 'ended') return outcome.session;
    return (await this.deps.sessions.get(id))!;
  }

  /** A session ended (here, or while unowned): hooks run, errors logged. */
  ended(session: Session): void {
    for (const hook of this.endedHooks) {
      try {
        hook(session);
      } catch (error) {
        this.deps.logger.error('a session-ended hook failed', { sessionId: session.id, err: error });
      }
    }
  }

  /**
   * End a session no relay runs (cancelled or expired in the queue; or, with
   * `ownedHere`, claimed here and ended before dispatch) with its terminal event.
   */
  async endUnowned(session: Session, type: 'cancelled' | 'error', data: Record<string, unknown>, ownedHere = false): Promise<void> {
    const { sequence } = await this.deps.eventStore.lastSequences(session.id);
    await this.deps.events.appendUnowned(event(session.id, sequence + 1, type, data), ownedHere ? this.deps.instanceId : null);
    this.ended(session);
  }

  /**
   * Shutdown, when the workers stop with the gateway: stop every job still
   * running, record it `interrupted`, give its followers a terminal event.
   */
  async interruptActive(reason: string): Promise<number> {
    const count = await this.stopEveryRelay((relay) => relay.interrupt(reason));
    if (count > 0) this.deps.logger.warn('sessions interrupted by shutdown', { count, reason });
    return count;
  }

  /** Shutdown, when the workers run on: stop relaying, leave the jobs running for another instance to take over. */
  async handOver(reason: string): Promise<number> {
    const count = await this.stopEveryRelay((relay) => relay.leave(reason));
    if (count > 0) this.deps.logger.info('sessions handed over to the other instances', { count, reason });
    return count;
  }

  /** Stop every relay of this instance the given way, and wait for each to settle. */
  private async stopEveryRelay(stop: (relay: SessionRelay) => void): Promise<number> {
    const relays = [...this.live.values()];
    for (const relay of relays) stop(relay);
    await Promise.allSettled(relays.map((relay) => relay.done));
    return relays.length;
  }

  /** The lease ran out on these: another instance may relay them now; stop here without writing. */
  leave(ids: readonly string[], reason: string): void {
    for (const id of ids) this.live.get(id)?.leave(reason);
  }

  /** Sessions relayed here. */
  relayedIds(): string[] {
    return [...this.live.keys()];
  }

  /** Resolves when no job is running, or after `timeoutMs`; true when idle. */
  async waitIdle(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    const busy = () => this.live.size + this.starting > 0;
    while (busy() && Date.now() < deadline) {
      const pending = [...this.live.values()].map((relay) => relay.done);
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

  /** Sessions ahead of it in the queue; null when it is not waiting there. */
  queuePosition(id: string): Promise<number | null> {
    return this.deps.sessions.queuePosition(id);
  }

  list(principal: Principal, query: Omit<SessionQuery, 'owner'>): Promise<{ items: Session[]; total: number }> {
    return this.deps.sessions.list({ ...query, ...(isAdmin(principal) ? {} : { owner: principal.id }) });
  }

  /**
   * Cancel through any instance: a queued session ends at once; one relayed
   * here is stopped on its worker; one relayed elsewhere is marked, its owner
   * told on the bus, and its worker asked directly, so it stops within a
   * second whoever relays it.
   */
  async cancel(id: string, principal: Principal, correlationId: string): Promise<Session> {
    const session = await this.get(id, principal);
    if (TERMINAL_SESSION_STATUSES.includes(session.status)) return session;
    const relay = this.live.get(id);
    if (relay) {
      await relay.requestCancel(correlationId);
      return session;
    }
    const cancelled = await this.deps.sessions.cancelQueued(id, new Date());
    if (cancelled) {
      await this.endUnowned(cancelled, 'cancelled', { reason: 'cancel-requested' });
      return session;
    }
    await this.deps.sessions.requestCancel(id, new Date());
    this.deps.bus.publishCancel(id);
    const current = await this.deps.sessions.get(id);
    const target = current?.workerId ? this.deps.scheduler.targetOf(current.workerId) : null;
    if (target) {
      await target.client.cancelJob(id, { correlationId }).catch((error: unknown) =>
        this.deps.logger.info('worker could not cancel the job; its owner will', { sessionId: id, err: error }),
      );
    }
    return session;
  }

  /** A cancellation announced on the bus: stop the job if it is relayed here. */
  cancelIfRelayed(id: string): void {
    void this.live.get(id)?.requestCancel(id);
  }

  /** Stop a job because the only client following it went away. */
  abandon(id: string): void {
    void this.live.get(id)?.requestCancel(id);
  }

  follow(id: string, afterSequence: number, listener: SessionListener) {
    return this.deps.events.follow(id, afterSequence, listener);
  }

  isLive(id: string): boolean {
    return this.live.has(id);
  }

  /** Shutdown: stop retrying writes the database keeps refusing. */
  close(): void {
    this.closed = true;
  }
}

/** Above any event sequence (a PostgreSQL integer). */
const MAX_SEQUENCE = 2 ** 31 - 1;

function event(sessionId: string, sequence: number, type: string, data: Record<string, unknown>) {
  return { sessionId, sequence, type, data, createdAt: new Date() };
}
