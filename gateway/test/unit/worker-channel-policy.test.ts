import { execFileSync } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { WorkerCallError } from '../../src/errors/worker-call-error.js';
import { idempotentMethods, WORKER_KEEPALIVE, WORKER_MAX_MESSAGE_BYTES } from '../../src/infra/grpc/channel-options.js';
import { loadProtos } from '../../src/infra/grpc/protos.js';
import { WorkerClient } from '../../src/infra/grpc/worker-client.js';
import { workerSourceRoot } from '../../src/infra/paths.js';
import { workerPythonForTests } from '../helpers/worker-python.js';

/**
 * The gateway's channel to a worker, proved over the wire as grpc-node's
 * retry example does: a grpc-js server on port 0 that fails the first calls
 * of each rpc with UNAVAILABLE. An idempotent rpc succeeds after retrying
 * within its deadline; a non-idempotent one fails at once, sent once.
 */
const WorkerService = loadProtos().device_ops.v1.WorkerService;

describe('retries on the worker channel', () => {
  let server: grpc.Server;
  let address: string;
  let client: WorkerClient;
  /** How many calls of each rpc the server saw, and how many to fail first. */
  const seen = new Map<string, number>();
  let failFirst = 0;

  const refuseOrAnswer = <T>(rpc: string, answer: T) => (_call: unknown, callback: grpc.sendUnaryData<T>) => {
    const count = (seen.get(rpc) ?? 0) + 1;
    seen.set(rpc, count);
    if (count <= failFirst) callback({ code: grpc.status.UNAVAILABLE, details: `not yet (${rpc} call ${count})` });
    else callback(null, answer);
  };

  beforeAll(async () => {
    server = new grpc.Server();
    server.addService(WorkerService.service, {
      listDevices: refuseOrAnswer('ListDevices', { devices: [] }),
      getMemoryStatus: refuseOrAnswer('GetMemoryStatus', { devices: [] }),
      loadModel: refuseOrAnswer('LoadModel', { placement: null, alreadyLoaded: false }),
      clearMemory: refuseOrAnswer('ClearMemory', { freedBytes: 0, unloadedModels: [] }),
      infer: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        seen.set('Infer', (seen.get('Infer') ?? 0) + 1);
        call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'not yet (Infer)' });
      },
    } as grpc.UntypedServiceImplementation);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
    );
    address = `127.0.0.1:${port}`;
  });
  afterAll(() => {
    client?.close();
    server?.forceShutdown();
  });
  beforeEach(() => {
    seen.clear();
    client?.close();
    client = new WorkerClient('flaky', address, 5000);
  });

  it('marks exactly the reading rpcs of the contract as idempotent', () => {
    expect(idempotentMethods(WorkerService.service)).toEqual(['GetMemoryStatus', 'GetWorkerInfo', 'ListDevices', 'ListModels', 'ValidateModel']);
  });

  it('retries an idempotent rpc on UNAVAILABLE and succeeds within its deadline', async () => {
    failFirst = 2;
    await expect(client.listDevices({ deadlineMs: 3000 })).resolves.toEqual({ devices: [] });
    expect(seen.get('ListDevices')).toBe(3);
    await expect(client.getMemoryStatus('', { deadlineMs: 3000 })).resolves.toEqual({ devices: [] });
    expect(seen.get('GetMemoryStatus')).toBe(3);
  });

  it('gives up on an idempotent rpc after its three attempts, with the worker\'s status', async () => {
    failFirst = 10;
    const error = await client.listDevices({ deadlineMs: 3000 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WorkerCallError);
    expect(error).toMatchObject({ grpcCode: 'UNAVAILABLE', status: 503 });
    expect(seen.get('ListDevices')).toBe(3);
  });

  it('sends a non-idempotent rpc once: LoadModel and ClearMemory fail at once', async () => {
    failFirst = 1;
    for (const [rpc, call] of [
      ['LoadModel', () => client.loadModel({ model: 'm' }, { deadlineMs: 3000 })],
      ['ClearMemory', () => client.clearMemory({}, { deadlineMs: 3000 })],
    ] as const) {
      const error = await call().catch((e: unknown) => e);
      expect(error, rpc).toMatchObject({ grpcCode: 'UNAVAILABLE', rpc });
      expect(seen.get(rpc), rpc).toBe(1);
    }
  });

  it('sends Infer once: its stream fails with the worker\'s status', async () => {
    failFirst = 1;
    const stream = client.infer({ jobId: 'j1', model: 'm' }, { deadlineMs: 3000 });
    const error = await (async () => {
      for await (const _event of stream.events) {
        // no event: the call is refused
      }
    })().catch((e: unknown) => e);
    expect(error).toMatchObject({ grpcCode: 'UNAVAILABLE' });
    expect(seen.get('Infer')).toBe(1);
  });
});

const python = workerPythonForTests();

describe.skipIf(!python)('keepalive and message limits on both ends of the channel', () => {
  it("sends pings no more often than the worker's server permits, and the same message limits", () => {
    const printed = execFileSync(
      python!,
      ['-c', 'import json; from device_ops_worker.server import SERVER_OPTIONS; print(json.dumps(dict(SERVER_OPTIONS)))'],
      { env: { PATH: process.env.PATH, PYTHONPATH: workerSourceRoot }, encoding: 'utf8' },
    );
    const server = JSON.parse(printed) as Record<string, number>;
    // A client pinging more often than the server's minimum gets GOAWAY too_many_pings and the channel flaps.
    expect(server['grpc.http2.min_recv_ping_interval_without_data_ms']).toBeLessThanOrEqual(WORKER_KEEPALIVE['grpc.keepalive_time_ms']);
    // The gateway pings idle channels, so the server must allow pings without calls.
    expect(WORKER_KEEPALIVE['grpc.keepalive_permit_without_calls']).toBe(1);
    expect(server['grpc.keepalive_permit_without_calls']).toBe(1);
    // The worker notices a dead gateway on long streams, with a timeout shorter than its interval.
    expect(server['grpc.keepalive_timeout_ms']).toBeLessThan(server['grpc.keepalive_time_ms']!);
    expect(WORKER_KEEPALIVE['grpc.keepalive_timeout_ms']).toBeLessThan(WORKER_KEEPALIVE['grpc.keepalive_time_ms']);
    expect(server['grpc.max_receive_message_length']).toBe(WORKER_MAX_MESSAGE_BYTES);
    expect(server['grpc.max_send_message_length']).toBe(WORKER_MAX_MESSAGE_BYTES);
  });
});
