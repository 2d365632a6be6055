import { status as GrpcStatus } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { ServiceUnavailableError } from '../../src/errors/gateway-error.js';
import { WorkerCallError } from '../../src/errors/worker-call-error.js';
import type { Principal } from '../../src/features/auth/principal.js';
import { WorkerScheduler } from '../../src/features/scheduling/worker-scheduler.js';
import { createFakeSessionStores, type FakeSessionStores } from '../../src/features/sessions/fake-session-stores.js';
import { SessionEventLog } from '../../src/features/sessions/session-event-log.js';
import { SessionService, type JobSpec } from '../../src/features/sessions/session-service.js';
import { FakeWorker, FakeWorkerPool } from '../../src/features/workers/fake-worker-pool.js';
import type { InferEvent__Output } from '../../src/generated/device_ops/v1/InferEvent.js';
import type { InferRequest } from '../../src/generated/device_ops/v1/InferRequest.js';
import type { CallOptions, InferStream } from '../../src/infra/grpc/worker-client.js';
import { LocalSessionBus } from '../../src/infra/bus/session-bus.js';
import { createLogger } from '../../src/infra/logger.js';
import { cpuDevice } from '../helpers/fake-app.js';
import { LogCapture } from '../helpers/log-capture.js';
import { settledNow } from '../helpers/wait.js';

// ------------------------------------------------------------ worker events

let seq = 0;
const event = (fields: Partial<InferEvent__Output>): InferEvent__Output => ({ sequence: ++seq, timestampUnixMs: 0, ...fields }) as InferEvent__Output;
const accepted = () => event({ event: 'accepted', accepted: {} as never });
const started = (deviceId: string) => event({ event: 'started', started: { deviceId } as never });
const result = (deviceId: string) =>
  event({
    event: 'result',
    result: { files: [], embeddings: [], tensors: {}, deviceId, runMs: 1, model: '', dtype: '', batchSize: 1 } as never,
  });
const unavailable = (workerId: string) =>
  new WorkerCallError(workerId, 'Infer', GrpcStatus.UNAVAILABLE, `worker ${workerId} is unavailable (connection refused)`);

/** An Infer call the test drives event by event; cancelling it fails it CANCELLED, as a real call does. */
class ControlledStream implements InferStream {
  cancelled = false;
  private readonly queue: (InferEvent__Output | Error | 'end')[] = [];
  private wake: (() => void) | null = null;

  constructor(
    readonly workerId: string,
    readonly request: InferRequest,
  ) {}

  readonly events = (async function* (this: ControlledStream): AsyncGenerator<InferEvent__Output> {
    for (;;) {
      while (this.queue.length === 0) await new Promise<void>((resolve) => (this.wake = resolve));
      const next = this.queue.shift()!;
      if (next === 'end') return;
      if (next instanceof Error) throw next;
      yield next;
    }
  }).call(this);

  push(step: InferEvent__Output | Error | 'end'): void {
    this.queue.push(step);
    this.wake?.();
    this.wake = null;
  }

  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.push(new WorkerCallError(this.workerId, 'Infer', GrpcStatus.CANCELLED, 'call cancelled'));
  }
}

/** A fake worker whose Infer calls stay open until the test (or a cancel) ends them. */
class ControlledWorker extends FakeWorker {
  readonly streams: ControlledStream[] = [];

  override infer(request: InferRequest, options: CallOptions = {}): InferStream {
    this.calls.push({ rpc: 'Infer', options });
    this.inferRequests.push(request);
    const stream = new ControlledStream(this.id, request);
    this.streams.push(stream);
    return stream;
  }
}

/** Unavailable on its first Infer call, then runs jobs to a result. */
class FlakyWorker extends FakeWorker {
  constructor(id: string) {
    super(id);
    this.inferScript = [unavailable(id)];
  }

  override infer(request: InferRequest, options: CallOptions = {}): InferStream {
    const stream = super.infer(request, options);
    this.inferScript = [accepted(), started(`${this.id}:cpu`), result(`${this.id}:cpu`)];
    return stream;
  }
}

// ------------------------------------------------------------ harness

const alice: Principal = { id: 'jwt:alice', subject: 'alice', scopes: ['inference'], method: 'jwt' };

const spec = (extra: Partial<JobSpec> = {}): JobSpec => ({
  task: 'enhance',
  model: null,
  parameters: { size: 1 },
  job: { kind: 'postprocess', task: 'enhance', model: '', sourceOutput: 'a/b.png', adjustments: { contrast: 1 } },
  ...extra,
});

interface Harness {
  service: SessionService;
  stores: FakeSessionStores;
  scheduler: WorkerScheduler;
  logs: LogCapture;
}

const services: SessionService[] = [];
afterEach(async () => {
  for (const service of services.splice(0)) {
    await service.interruptActive('test over');
  }
});

function harness(workers: FakeWorker[], maxActiveSessions?: number): Harness {
  for (const worker of workers) worker.devices = [cpuDevice(worker.id)];
  const stores = createFakeSessionStores();
  const logs = new LogCapture();
  const logger = createLogger({ level: 'debug', stream: logs });
  const scheduler = new WorkerScheduler(new FakeWorkerPool(workers), 1000);
  const bus = new LocalSessionBus();
  const service = new SessionService({
    sessions: stores.sessions,
    eventStore: stores.events,
    events: new SessionEventLog(stores.events, logger, bus, 'test-instance'),
    bus,
    scheduler,
    logger,
    instanceId: 'test-instance',
    queueTimeoutMs: 60_000,
    inferenceDeadlineMs: 60_000,
    outputUrl: (id, file) => `/outputs/${id}/${file}`,
    ...(maxActiveSessions !== undefined ? { maxActiveSessions } : {}),
  });
  services.push(service);
  return { service, stores, scheduler, logs };
}

/** The session's events as a client replaying it sees them. */
async function eventsOf(service: SessionService, id: string): Promise<{ type: string; data: Record<string, unknown> }[]> {
  const seen: { type: string; data: Record<string, unknown> }[] = [];
  const { unsubscribe } = await service.follow(id, 0, (e) => seen.push({ type: e.type, data: e.data }));
  unsubscribe();
  return seen;
}

const inferCalls = (worker: FakeWorker) => worker.calls.filter((c) => c.rpc === 'Infer').length;

/** Wait until `check` holds (event-loop turns, no wall-clock sleeps beyond a few ms). */
async function until(check: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not reached');
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

// ------------------------------------------------------------ tests

describe('MAX_ACTIVE_SESSIONS', () => {
  it('refuses a job beyond the limit with 503 gateway-queue and Retry-After, writing no session', async () => {
    const worker = new ControlledWorker('w0');
    const { service, stores } = harness([worker], 1);
    const first = await service.start(spec(), alice, { correlationId: 'c1' });

    const refusal = await service.start(spec(), alice, { correlationId: 'c2' }).catch((error: unknown) => error);
    expect(refusal).toBeInstanceOf(ServiceUnavailableError);
    expect(refusal).toMatchObject({ status: 503, reason: 'gateway-queue' });
    expect((refusal as ServiceUnavailableError).headers['Retry-After']).toMatch(/^\d+$/);
    expect([...stores.sessions.rows.keys()]).toEqual([first.session.id]);
    expect(inferCalls(worker)).toBe(1);

    // Once the running job ends, there is room again.
    worker.streams[0]!.push(accepted());
    worker.streams[0]!.push(started('w0:cpu'));
    worker.streams[0]!.push(result('w0:cpu'));
    expect((await first.done).status).toBe('succeeded');
    const next = await service.start(spec(), alice, { correlationId: 'c3' });
    expect(stores.sessions.rows.size).toBe(2);
    expect(next.session.status).toBe('queued');
  });

  it('counts jobs still being placed: of two concurrent starts at a limit of 1, one is refused', async () => {
    const worker = new ControlledWorker('w0');
    const { service, stores } = harness([worker], 1);
    const outcomes = await Promise.allSettled([
      service.start(spec(), alice, { correlationId: 'a' }),
      service.start(spec(), alice, { correlationId: 'b' }),
    ]);
    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected']);
    const rejected = outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult;
    expect(rejected.reason).toMatchObject({ status: 503, reason: 'gateway-queue' });
    expect(stores.sessions.rows.size).toBe(1);
  });
});

describe('a worker lost before the job started', () => {
  it('sends the job once to another serving worker, tells followers, and succeeds there', async () => {
    const w0 = new FakeWorker('w0');
    const w1 = new FakeWorker('w1');
    w0.inferScript = [accepted(), unavailable('w0')];
    w1.inferScript = [accepted(), started('w1:cpu'), result('w1:cpu')];
    const { service, stores, scheduler, logs } = harness([w0, w1]);

    const { session, done } = await service.start(spec(), alice, { correlationId: 'c' });
    const finished = await done;

    expect(finished).toMatchObject({ status: 'succeeded', workerId: 'w1', deviceId: 'w1:cpu', error: null });
    expect(stores.sessions.rows.get(session.id)).toMatchObject({ status: 'succeeded', workerId: 'w1' });
    expect([inferCalls(w0), inferCalls(w1)]).toEqual([1, 1]);
    // The same job (same id) went to the second worker.
    expect(w1.inferRequests[0]!.jobId).toBe(session.id);

    const events = await eventsOf(service, session.id);
    expect(events.map((e) => e.type)).toEqual(['accepted', 'requeued', 'accepted', 'started', 'result']);
    expect(events[1]!.data).toEqual({ fromWorker: 'w0', toWorker: 'w1', reason: 'worker w0 is unavailable (connection refused)' });
    expect(events.filter((e) => ['result', 'error', 'cancelled'].includes(e.type))).toHaveLength(1);

    // Neither worker is still counted as running the job.
    expect([scheduler.inFlightOf('w0'), scheduler.inFlightOf('w1')]).toEqual([0, 0]);
    expect(logs.find((l) => l.message === 'job sent to another worker before it started')[0]).toMatchObject({
      level: 'warn',
      sessionId: session.id,
      fromWorker: 'w0',
      toWorker: 'w1',
    });
  });

  it('moves a job only once: lost again on the second worker, it fails, and no other worker is tried', async () => {
    // Each worker is unavailable for its first call only: a second move (to any of them) would succeed.
    const [w0, w1, w2] = [new FlakyWorker('w0'), new FlakyWorker('w1'), new FlakyWorker('w2')];
    const { service } = harness([w0, w1, w2]);

    const { session, done } = await service.start(spec(), alice, { correlationId: 'c' });
    const finished = await done;

    expect(finished.status).toBe('failed');
    expect(finished.error).toMatchObject({ code: 'UNAVAILABLE' });
    expect(finished.error!.message).toMatch(/worker w1 was lost before starting the job/);
    expect([inferCalls(w0), inferCalls(w1), inferCalls(w2)]).toEqual([1, 1, 0]);
    const types = (await eventsOf(service, session.id)).map((e) => e.type);
    expect(types).toEqual(['requeued', 'error']);
  });

  it('fails with the original cause when no other worker serves', async () => {
    const w0 = new FakeWorker('w0');
    const w1 = new FakeWorker('w1');
    w1.state = 'not-serving';
    w0.inferScript = [accepted(), unavailable('w0')];
    const { service } = harness([w0, w1]);

    const { session, done } = await service.start(spec(), alice, { correlationId: 'c' });
    const finished = await done;
    expect(finished.status).toBe('failed');
    expect(finished.error!.message).toMatch(/worker w0 was lost before starting the job: worker w0 is unavailable/);
    expect(inferCalls(w1)).toBe(0);
    expect((await eventsOf(service, session.id)).map((e) => e.type)).toEqual(['accepted', 'error']);
  });

  it('does not move a job pinned to a device', async () => {
    const w0 = new FakeWorker('w0');
    const w1 = new FakeWorker('w1');
    w0.inferScript = [accepted(), unavailable('w0')];
    w1.inferScript = [accepted(), started('w1:cpu'), result('w1:cpu')];
    const { service } = harness([w0, w1]);

    const { session, done } = await service.start(spec({ deviceId: 'w0:cpu' }), alice, { correlationId: 'c' });
    const finished = await done;
    expect(w0.inferRequests[0]!.deviceId).toBe('w0:cpu');
    expect(finished.status).toBe('failed');
    expect(finished.error).toMatchObject({ code: 'UNAVAILABLE' });
    expect(finished.error!.message).toMatch(/worker w0 was lost/);
    expect(inferCalls(w1)).toBe(0);
    expect((await eventsOf(service, session.id)).map((e) => e.type)).not.toContain('requeued');
  });
});

describe('a worker lost while running the job', () => {
  it('is not retried: the session fails naming the worker and "while running the job"', async () => {
    const w0 = new FakeWorker('w0');
    const w1 = new FakeWorker('w1');
    w0.inferScript = [accepted(), started('w0:cpu'), unavailable('w0')];
    w1.inferScript = [accepted(), started('w1:cpu'), result('w1:cpu')];
    const { service, stores } = harness([w0, w1]);

    const { session, done } = await service.start(spec(), alice, { correlationId: 'c' });
    const finished = await done;

    expect(finished.status).toBe('failed');
    expect(finished.error).toMatchObject({ code: 'UNAVAILABLE' });
    expect(finished.error!.message).toMatch(/^worker w0 was lost while running the job/);
    expect(stores.sessions.rows.get(session.id)).toMatchObject({ status: 'failed', workerId: 'w0' });
    expect(inferCalls(w1)).toBe(0);
    const events = await eventsOf(service, session.id);
    expect(events.map((e) => e.type)).toEqual(['accepted', 'started', 'error']);
    expect(events[2]!.data).toMatchObject({ code: 'UNAVAILABLE', message: finished.error!.message });
  });
});

describe('interruptActive (shutdown)', () => {
  it('ends every running job interrupted, gives each follower one terminal error, and then waitIdle is true', async () => {
    const w0 = new ControlledWorker('w0');
    const w1 = new ControlledWorker('w1');
    const { service, stores, logs } = harness([w0, w1]);

    const a = await service.start(spec(), alice, { correlationId: 'a' });
    const b = await service.start(spec(), alice, { correlationId: 'b' });
    const streams = [...w0.streams, ...w1.streams];
    expect(streams).toHaveLength(2);
    // One job running, one still queued on its worker.
    streams[0]!.push(accepted());
    streams[0]!.push(started('w0:cpu'));
    streams[1]!.push(accepted());

    const followed = new Map<string, string[]>();
    const followerEvents = new Map<string, { type: string; data: Record<string, unknown> }[]>();
    for (const id of [a.session.id, b.session.id]) {
      followerEvents.set(id, []);
      await service.follow(id, 0, (e) => followerEvents.get(id)!.push({ type: e.type, data: e.data }));
    }
    await until(() => stores.sessions.rows.get(a.session.id)!.status === 'running');
    await until(() => followerEvents.get(b.session.id)!.length === 1);

    // Still busy: waitIdle gives up after its timeout and says so.
    expect(await service.waitIdle(20)).toBe(false);
    expect(service.activeCount).toBe(2);

    expect(await service.interruptActive('gateway shutting down')).toBe(2);
    expect(streams.every((s) => s.cancelled)).toBe(true);

    for (const { session, done } of [a, b]) {
      const finished = await done;
      expect(finished.status).toBe('interrupted');
      expect(finished.error).toEqual({ code: 'INTERRUPTED', message: 'the gateway stopped the job: gateway shutting down' });
      expect(stores.sessions.rows.get(session.id)).toMatchObject({ status: 'interrupted', error: { code: 'INTERRUPTED' } });
      const seen = followerEvents.get(session.id)!;
      followed.set(session.id, seen.map((e) => e.type));
      expect(seen.at(-1)).toEqual({ type: 'error', data: { code: 'INTERRUPTED', message: 'the gateway stopped the job: gateway shutting down' } });
      expect(seen.filter((e) => ['result', 'error', 'cancelled'].includes(e.type))).toHaveLength(1);
      // Nothing was sent elsewhere on the way down.
      expect(seen.map((e) => e.type)).not.toContain('requeued');
    }
    expect(followed.get(a.session.id)).toEqual(['accepted', 'started', 'error']);
    expect(followed.get(b.session.id)).toEqual(['accepted', 'error']);
    expect(w0.streams.length + w1.streams.length).toBe(2);

    expect(service.activeCount).toBe(0);
    expect(await service.waitIdle(1000)).toBe(true);
    expect(logs.find((l) => l.message === 'sessions interrupted by shutdown')[0]).toMatchObject({ count: 2, reason: 'gateway shutting down' });
  });

  it('returns 0 and waitIdle is true at once when nothing runs', async () => {
    const { service } = harness([new ControlledWorker('w0')]);
    expect(await service.interruptActive('idle')).toBe(0);
    const idle = service.waitIdle(5000);
    // At once: settled before any timer could fire, not after its 5 s.
    expect(await settledNow(idle)).toBe(true);
    expect(await idle).toBe(true);
  });

  it('waitIdle resolves true as soon as the last job ends by itself', async () => {
    const worker = new ControlledWorker('w0');
    const { service } = harness([worker]);
    const { done } = await service.start(spec(), alice, { correlationId: 'c' });
    const idle = service.waitIdle(5000);
    worker.streams[0]!.push(accepted());
    worker.streams[0]!.push(started('w0:cpu'));
    worker.streams[0]!.push(result('w0:cpu'));
    expect((await done).status).toBe('succeeded');
    // As soon as the job ended: settled with no timer between, not at the 5 s timeout.
    expect(await settledNow(idle)).toBe(true);
    expect(await idle).toBe(true);
  });
});

describe('the end of a session', () => {
  /** The session row as a client reading it would see it, the moment each event reaches a follower. */
  async function statusesAtEvents(harnessOf: Harness, worker: ControlledWorker) {
    const { service, stores } = harnessOf;
    const { session, done } = await service.start(spec(), alice, { correlationId: 'c' });
    const seen: { type: string; status: string | undefined }[] = [];
    const { unsubscribe } = await service.follow(session.id, 0, (e) => {
      seen.push({ type: e.type, status: stores.sessions.rows.get(session.id)?.status });
    });
    await until(() => worker.streams.length === 1);
    const stream = worker.streams[0]!;
    stream.push(accepted());
    stream.push(started('w0:cpu'));
    stream.push(result('w0:cpu'));
    stream.push('end');
    await done;
    unsubscribe();
    return seen;
  }

  it('is stored before the terminal event goes out: a client that saw `result` reads the session succeeded', async () => {
    const worker = new ControlledWorker('w0');
    const h = harness([worker]);
    // A database slower than the event relay.
    const finish = h.stores.sessions.finish.bind(h.stores.sessions);
    h.stores.sessions.finish = async (id, end, owner) => {
      await new Promise((resolve) => setTimeout(resolve, 50));
      return finish(id, end, owner);
    };
    const seen = await statusesAtEvents(h, worker);
    expect(seen.map((e) => e.type)).toEqual(['accepted', 'started', 'result']);
    expect(seen.at(-1)).toEqual({ type: 'result', status: 'succeeded' });
  });

  it('still sends the terminal event at once when the database refuses the write, and stores the end when it is back', async () => {
    const worker = new ControlledWorker('w0');
    const h = harness([worker]);
    const finish = h.stores.sessions.finish.bind(h.stores.sessions);
    let refusals = 2; // the first write, and the first retry (the next is 1 s later)
    h.stores.sessions.finish = async (id, end, owner) => {
      if (refusals > 0) {
        refusals -= 1;
        throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
      }
      return finish(id, end, owner);
    };
    const seen = await statusesAtEvents(h, worker);
    // Sent while the row still said running: the client is not kept waiting on the database.
    expect(seen.at(-1)).toEqual({ type: 'result', status: 'running' });
    const row = [...h.stores.sessions.rows.values()][0]!;
    expect(row.status).toBe('succeeded');
    expect(h.logs.find((l) => l.message === 'could not record the end of a session; retrying')).toHaveLength(1);
  });

  it('ends with an error event naming the worker when its stream ends without a terminal event', async () => {
    const worker = new ControlledWorker('w0');
    const { service } = harness([worker]);
    const { session, done } = await service.start(spec(), alice, { correlationId: 'c' });
    const seen: { type: string; data: Record<string, unknown> }[] = [];
    const { unsubscribe } = await service.follow(session.id, 0, (e) => seen.push({ type: e.type, data: e.data }));
    await until(() => worker.streams.length === 1);
    worker.streams[0]!.push(accepted());
    worker.streams[0]!.push(started('w0:cpu'));
    worker.streams[0]!.push('end');
    const finished = await done;
    unsubscribe();
    expect(seen.map((e) => e.type)).toEqual(['accepted', 'started', 'error']);
    expect(seen.at(-1)!.data).toMatchObject({ code: 'WORKER_LOST', message: expect.stringContaining('worker w0 was lost while running the job') });
    expect(finished).toMatchObject({ status: 'failed', error: { code: 'WORKER_LOST' } });
  });
});

describe('a cancel between claim and dispatch', () => {
  it('is never lost: the claimed session ends cancelled and never reaches a worker', async () => {
    const worker = new ControlledWorker('w0');
    const { service, stores } = harness([worker]);
    const { session } = await service.enqueue(spec(), alice, { correlationId: 'c' });
    const claimed = (await stores.sessions.claimNext('test-instance'))!;
    expect(claimed.session.id).toBe(session.id);
    // The dispatcher has claimed it and is reading its events when the cancel comes (no relay live here yet).
    let reading!: () => void;
    const gate = new Promise<void>((resolve) => (reading = resolve));
    const lastSequences = stores.events.lastSequences.bind(stores.events);
    stores.events.lastSequences = async (id, upTo) => {
      await gate;
      return lastSequences(id, upTo);
    };
    const adopted = service.adopt(claimed, { kind: 'dispatch' });
    const answer = await service.cancel(session.id, alice, 'cancel');
    expect(answer.status).toBe('queued');
    reading();
    await adopted;
    await until(() => stores.sessions.rows.get(session.id)?.status === 'cancelled');
    expect(inferCalls(worker)).toBe(0);
    expect((await eventsOf(service, session.id)).at(-1)).toMatchObject({ type: 'cancelled', data: { reason: 'cancel-requested' } });
  });
});
