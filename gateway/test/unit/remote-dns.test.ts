import * as grpc from '@grpc/grpc-js';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../src/config/config.js';
import { RemoteWorkerPool, type Resolver } from '../../src/features/workers/remote-worker-pool.js';
import type { WorkerHandle } from '../../src/features/workers/worker-handle.js';
import { loadProtos } from '../../src/infra/grpc/protos.js';
import { createLogger } from '../../src/infra/logger.js';
import { testEnv } from '../helpers/env.js';
import { LogCapture } from '../helpers/log-capture.js';
import { MACHINE_MARGIN_MS } from '../helpers/wait.js';

/**
 * A gRPC health server that answers SERVING, bound to 127.0.0.1 only: a
 * worker dialled at 127.0.0.1 is serving, one dialled at 127.0.0.2 (same
 * port) finds nobody and is unreachable — so each worker's state shows which
 * address it really connects to.
 */
let port: number;
let server: grpc.Server;
beforeAll(async () => {
  server = new grpc.Server();
  server.addService(loadProtos().grpc.health.v1.Health.service, {
    check: (_call: unknown, callback: grpc.sendUnaryData<{ status: string }>) => callback(null, { status: 'SERVING' }),
  });
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  return () => server.forceShutdown();
});

const pools: RemoteWorkerPool[] = [];
afterEach(async () => {
  for (const pool of pools.splice(0)) await pool.stop();
});

// A health check's deadline covers connecting too: on a loaded machine (CI runs
// suites side by side) 200 ms was not always enough for the live server, and a
// refused address fails at once whatever the deadline, so it costs nothing.
const DEADLINE_MS = String(MACHINE_MARGIN_MS + 1000);
function config(): Config {
  return loadConfig(testEnv({ HEALTH_CHECK_DEADLINE_MS: DEADLINE_MS, GRPC_DEADLINE_MS: DEADLINE_MS }));
}

function pool(addresses: string[], resolve: Resolver) {
  const logs = new LogCapture();
  const created = new RemoteWorkerPool(config(), createLogger({ level: 'debug', stream: logs }), addresses, undefined, resolve);
  pools.push(created);
  return { pool: created, logs };
}

const view = (workers: readonly WorkerHandle[]) =>
  Object.fromEntries(workers.map((w) => [w.id, { address: w.snapshot().address, state: w.snapshot().state }]));

/** A resolver the test steers: what it answers now, and every name it was asked. */
function steeredResolver(initial: string[] | Error) {
  const asked: string[] = [];
  let answer: string[] | Error = initial;
  const resolve: Resolver = async (host) => {
    asked.push(host);
    if (answer instanceof Error) throw answer;
    return answer;
  };
  return { resolve, asked, set: (next: string[] | Error) => (answer = next) };
}

describe('remote workers by host name', () => {
  it('makes one worker per address a host name resolves to, each dialled at its own address', async () => {
    const dns = steeredResolver(['127.0.0.1', '127.0.0.2']);
    const { pool: workers } = pool([`workers.test:${port}`], dns.resolve);
    await workers.refresh();

    expect(dns.asked).toEqual(['workers.test']);
    expect(view(workers.workers())).toEqual({
      [`workers.test:${port}/127.0.0.1`]: { address: `127.0.0.1:${port}`, state: 'serving' },
      [`workers.test:${port}/127.0.0.2`]: { address: `127.0.0.2:${port}`, state: 'unreachable' },
    });
  });

  it('retires and removes a worker whose address is gone on the next resolution, keeping the other', async () => {
    const dns = steeredResolver(['127.0.0.1', '127.0.0.2']);
    const { pool: workers, logs } = pool([`workers.test:${port}`], dns.resolve);
    await workers.refresh();
    const before = workers.workers();
    const gone = before.find((w) => w.id.endsWith('/127.0.0.2'))!;
    const kept = before.find((w) => w.id.endsWith('/127.0.0.1'))!;

    dns.set(['127.0.0.1']);
    await workers.refresh();

    expect(workers.workers().map((w) => w.id)).toEqual([`workers.test:${port}/127.0.0.1`]);
    // The same handle (and channel) stays; the removed one is stopped and calls on it fail.
    expect(workers.workers()[0]).toBe(kept);
    expect(kept.snapshot().state).toBe('serving');
    expect(gone.snapshot().state).toBe('stopped');
    await expect(gone.client!.checkHealth({ deadlineMs: 200 })).rejects.toThrow();
    expect(logs.find((l) => l.message === 'worker address gone from DNS; retiring it')[0]).toMatchObject({
      workerId: `workers.test:${port}/127.0.0.2`,
    });
  });

  it('adds a worker for an address that appears later', async () => {
    const dns = steeredResolver(['127.0.0.2']);
    const { pool: workers } = pool([`workers.test:${port}`], dns.resolve);
    await workers.refresh();
    expect(Object.keys(view(workers.workers()))).toEqual([`workers.test:${port}/127.0.0.2`]);

    dns.set(['127.0.0.2', '127.0.0.1']);
    await workers.refresh();
    expect(view(workers.workers())).toMatchObject({
      [`workers.test:${port}/127.0.0.2`]: { state: 'unreachable' },
      [`workers.test:${port}/127.0.0.1`]: { address: `127.0.0.1:${port}`, state: 'serving' },
    });
  });

  it('keeps the known workers when resolution fails, and logs it', async () => {
    const dns = steeredResolver(['127.0.0.1', '127.0.0.2']);
    const { pool: workers, logs } = pool([`workers.test:${port}`], dns.resolve);
    await workers.refresh();
    const before = [...workers.workers()];

    dns.set(Object.assign(new Error('getaddrinfo EAI_AGAIN workers.test'), { code: 'EAI_AGAIN' }));
    await workers.refresh();

    expect(workers.workers()).toEqual(before);
    expect(workers.workers().map((w) => w.snapshot().state).sort()).toEqual(['serving', 'unreachable']);
    expect(logs.find((l) => l.message === 'could not resolve a worker host name; keeping the known workers')[0]).toMatchObject({
      level: 'warn',
      host: 'workers.test',
    });
  });

  it('starts with no worker when the first resolution fails, and picks them up once it works', async () => {
    const dns = steeredResolver(new Error('getaddrinfo ENOTFOUND workers.test'));
    const { pool: workers } = pool([`workers.test:${port}`], dns.resolve);
    await workers.start();
    expect(workers.workers()).toEqual([]);
    dns.set(['127.0.0.1']);
    await workers.refresh();
    expect(view(workers.workers())).toEqual({ [`workers.test:${port}/127.0.0.1`]: { address: `127.0.0.1:${port}`, state: 'serving' } });
  });

  it('treats an IP entry as one worker, without asking the resolver', async () => {
    const dns = steeredResolver(['10.9.9.9']);
    const { pool: workers } = pool([`127.0.0.1:${port}`, `127.0.0.2:${port}`], dns.resolve);
    await workers.refresh();
    await workers.refresh();
    expect(dns.asked).toEqual([]);
    expect(view(workers.workers())).toEqual({
      [`127.0.0.1:${port}`]: { address: `127.0.0.1:${port}`, state: 'serving' },
      [`127.0.0.2:${port}`]: { address: `127.0.0.2:${port}`, state: 'unreachable' },
    });
  });

  it('stop() retires every worker', async () => {
    const dns = steeredResolver(['127.0.0.1', '127.0.0.2']);
    const { pool: workers } = pool([`workers.test:${port}`], dns.resolve);
    await workers.start();
    const before = [...workers.workers()];
    expect(before).toHaveLength(2);
    await workers.stop();
    expect(before.map((w) => w.snapshot().state)).toEqual(['stopped', 'stopped']);
    expect(workers.workers()).toEqual([]); // and a refresh still resolving cannot bring them back
    await workers.refresh();
    expect(workers.workers()).toEqual([]);
  });
});
