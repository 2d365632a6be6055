import { once } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { HealthMonitor } from '../../src/features/workers/health-monitor.js';
import { FakeWorker, FakeWorkerPool } from '../../src/features/workers/fake-worker-pool.js';
import type { CallOptions, HealthStatus, WorkerApi } from '../../src/infra/grpc/worker-client.js';
import { WorkerClient } from '../../src/infra/grpc/worker-client.js';
import { createLogger } from '../../src/infra/logger.js';
import { GrpcWorkerError } from '../helpers/grpc-errors.js';
import { LogCapture } from '../helpers/log-capture.js';
import { MACHINE_MARGIN_MS, waitFor } from '../helpers/wait.js';

const DEADLINE_MS = 150;

function monitor(workers: FakeWorker[], intervalMs = 60_000) {
  const logs = new LogCapture();
  const health = new HealthMonitor(new FakeWorkerPool(workers), intervalMs, DEADLINE_MS, createLogger({ level: 'debug', stream: logs }));
  monitors.push(health);
  return { health, logs };
}

const monitors: HealthMonitor[] = [];
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const m of monitors.splice(0)) m.stop();
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

const state = (worker: FakeWorker) => worker.snapshot().state;
const healthCalls = (worker: FakeWorker) => worker.calls.filter((c) => c.rpc === 'Health/Check');

/** A fake worker whose health check the test answers by hand. */
class SlowWorker extends FakeWorker {
  pending: ((status: HealthStatus) => void)[] = [];
  override checkHealth(options: CallOptions = {}): Promise<HealthStatus> {
    this.calls.push({ rpc: 'Health/Check', options });
    return new Promise((resolve) => this.pending.push(resolve));
  }
}

/** A fake worker whose client is a real gRPC client, pointed at `address`. */
class RealClientWorker extends FakeWorker {
  constructor(
    id: string,
    private readonly real: WorkerClient,
  ) {
    super(id);
  }
  override get client(): WorkerApi | null {
    return this.real;
  }
}

/** A peer that accepts TCP connections and never says a word: a frozen worker. */
async function frozenPeer(): Promise<{ address: string; server: Server }> {
  const sockets: Socket[] = [];
  const server = createServer((socket) => sockets.push(socket)).listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  return { address: `127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

describe('HealthMonitor.checkAll', () => {
  it('marks a worker whose health check fails unreachable, and logs the transition once', async () => {
    const good = new FakeWorker('good');
    const bad = new FakeWorker('bad');
    bad.failure = GrpcWorkerError('bad', 'DEADLINE_EXCEEDED', `worker bad did not answer Health/Check within ${DEADLINE_MS} ms`);
    const { health, logs } = monitor([good, bad]);

    await health.checkAll();
    expect(state(good)).toBe('serving');
    expect(state(bad)).toBe('unreachable');
    // Every check carries the monitor's deadline.
    expect([...healthCalls(good), ...healthCalls(bad)].map((c) => c.options.deadlineMs)).toEqual([DEADLINE_MS, DEADLINE_MS]);
    const warned = logs.find((l) => l.message === 'worker stopped answering its health checks');
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ level: 'warn', workerId: 'bad', was: 'serving' });

    // Still down on the next round: no new line.
    await health.checkAll();
    expect(logs.find((l) => l.message === 'worker stopped answering its health checks')).toHaveLength(1);
  });

  it('takes a worker back once it answers SERVING again, and logs that', async () => {
    const worker = new FakeWorker('w');
    worker.failure = GrpcWorkerError('w', 'UNAVAILABLE', 'worker w is unavailable (connection refused)');
    const { health, logs } = monitor([worker]);
    await health.checkAll();
    expect(state(worker)).toBe('unreachable');

    worker.failure = null;
    await health.checkAll();
    expect(state(worker)).toBe('serving');
    expect(logs.find((l) => l.message === 'worker answers again')[0]).toMatchObject({ level: 'info', workerId: 'w', state: 'serving' });
  });

  it('marks a worker that answers NOT_SERVING not-serving (reachable, but not taking work)', async () => {
    const worker = new FakeWorker('w');
    worker.health = 'NOT_SERVING';
    const { health, logs } = monitor([worker]);
    await health.checkAll();
    expect(state(worker)).toBe('not-serving');
    expect(logs.find((l) => l.message === 'worker stopped answering its health checks')).toEqual([]);
  });

  it('skips a worker with no client (restarting) rather than marking it', async () => {
    const worker = new FakeWorker('w');
    worker.state = 'restarting';
    const { health } = monitor([worker]);
    await health.checkAll();
    expect(healthCalls(worker)).toEqual([]);
    expect(state(worker)).toBe('restarting');
  });

  it('does not start a second round while one still waits on a worker', async () => {
    const slow = new SlowWorker('slow');
    const { health } = monitor([slow]);
    const first = health.checkAll();
    await health.checkAll();
    expect(healthCalls(slow)).toHaveLength(1);
    slow.pending[0]!('SERVING');
    await first;
    expect(state(slow)).toBe('serving');
    // Once it is answered, the next round checks again.
    const next = health.checkAll();
    expect(healthCalls(slow)).toHaveLength(2);
    slow.pending[1]!('NOT_SERVING');
    await next;
    expect(state(slow)).toBe('not-serving');
  });

  it('marks a frozen peer (accepts, never answers) unreachable within about its deadline, through a real gRPC client', async () => {
    const { address } = await frozenPeer();
    const client = new WorkerClient('frozen', address, 10_000);
    cleanups.push(() => client.close());
    const worker = new RealClientWorker('frozen', client);
    const { health, logs } = monitor([worker]);

    const started = Date.now();
    await health.checkAll();
    expect(state(worker)).toBe('unreachable');
    // The monitor's deadline bounds the check, not the client's 10 s default.
    expect(Date.now() - started).toBeLessThan(DEADLINE_MS + MACHINE_MARGIN_MS);
    expect(logs.find((l) => l.message === 'worker stopped answering its health checks')[0]).toMatchObject({ workerId: 'frozen' });
  });

  it('runs rounds every interval once started, and no more once stopped', async () => {
    const worker = new FakeWorker('w');
    const { health } = monitor([worker], 20);
    health.start();
    await waitFor(async () => (healthCalls(worker).length >= 2 ? true : undefined), { what: 'two rounds' });
    health.stop();
    const during = healthCalls(worker).length;
    // Five intervals' worth (a lower bound: a later round would only show more).
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(healthCalls(worker).length).toBe(during);
  });
});
