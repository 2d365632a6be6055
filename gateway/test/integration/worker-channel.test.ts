import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceListSchema } from '../../src/features/devices/device-schemas.js';
import { DetailedHealthSchema } from '../../src/features/health/health-schemas.js';
import { loadProtos } from '../../src/infra/grpc/protos.js';
import { WorkerClient } from '../../src/infra/grpc/worker-client.js';
import { makeCertificates, type Certificates } from '../helpers/certificates.js';
import { bearer, getJson } from '../helpers/http.js';
import { startRealGateway, type RealGateway } from '../helpers/real-gateway.js';
import { startStandaloneWorker, type StandaloneWorker } from '../helpers/standalone-worker.js';
import { signToken } from '../helpers/tokens.js';

/** ListDevices with a bare grpc-js client: the status code as it comes over the wire. */
function listDevicesStatus(address: string, credentials: grpc.ChannelCredentials, metadata = new grpc.Metadata()) {
  const client = new (loadProtos().device_ops.v1.WorkerService)(address, credentials);
  return new Promise<number>((resolve) => {
    client.listDevices({}, metadata, { deadline: Date.now() + 10_000 }, (error) => {
      client.close();
      resolve(error ? error.code : grpc.status.OK);
    });
  });
}

const newToken = () => randomBytes(32).toString('base64url');

describe('local workers answer only their gateway', () => {
  let real: RealGateway;
  const worker = () => real.gateway.workers.workers()[0]!.snapshot();

  beforeAll(async () => {
    real = await startRealGateway();
  });
  afterAll(async () => {
    await real?.gateway.close();
  });

  it('lists devices through its own worker', async () => {
    const { status, body } = await getJson(`${real.url}/api/device/list`, bearer(signToken()));
    expect(status).toBe(200);
    expect(DeviceListSchema.parse(body).devices.map((d) => d.id)).toContain('worker-0:cpu');
  });

  it('refuses a direct call to the worker without the gateway\'s token; health stays open to probes', async () => {
    const address = worker().address!;
    expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
    const insecure = grpc.credentials.createInsecure();
    expect(await listDevicesStatus(address, insecure)).toBe(grpc.status.UNAUTHENTICATED);
    const guess = new grpc.Metadata();
    guess.set('authorization', `Bearer ${newToken()}`);
    expect(await listDevicesStatus(address, insecure, guess)).toBe(grpc.status.UNAUTHENTICATED);

    const probe = new WorkerClient('probe', address, 5000);
    try {
      expect(await probe.checkHealth()).toBe('SERVING');
    } finally {
      probe.close();
    }
  });

  it.runIf(existsSync('/proc/self/environ'))(
    'hands the token to the worker in its environment, never on its command line or in the log',
    async () => {
      const { pid, address } = worker();
      const environment = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
      const token = environment.find((entry) => entry.startsWith('WORKER_TOKEN='))?.slice('WORKER_TOKEN='.length);
      expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).not.toContain(token);

      const metadata = new grpc.Metadata();
      metadata.set('authorization', `Bearer ${token}`);
      expect(await listDevicesStatus(address!, grpc.credentials.createInsecure(), metadata)).toBe(grpc.status.OK);
      expect(real.logs.text).not.toContain(token);
    },
  );
});

/** A worker started by hand, as an orchestrator would, with a token and mutual TLS. */
function startSecuredWorker(dir: string, token: string, certs: Certificates): Promise<StandaloneWorker> {
  return startStandaloneWorker({
    id: 'secured',
    dir,
    env: { WORKER_TOKEN: token, WORKER_TLS_CERT: certs.serverCert, WORKER_TLS_KEY: certs.serverKey, WORKER_TLS_CLIENT_CA: certs.ca },
    // By name, as in compose or Kubernetes: the certificate names localhost too.
    host: 'localhost',
  });
}

describe('a remote worker with a token and mutual TLS', () => {
  const token = newToken();
  const wrongToken = newToken();
  let certs: Certificates;
  let worker: StandaloneWorker;
  let gateway: RealGateway;
  let misconfigured: RealGateway;

  // Each gateway its own database: two processes never share one SQLite file.
  const gatewayEnv = (workerToken: string) => ({
    DATA_DIRECTORY: mkdtempSync(join(tmpdir(), 'secured-gateway-')),
    WORKER_ADDRESSES: worker.address,
    WORKER_TOKEN: workerToken,
    WORKER_TLS_CA: certs.ca,
    WORKER_TLS_CERT: certs.clientCert,
    WORKER_TLS_KEY: certs.clientKey,
    GRPC_DEADLINE_MS: '3000',
  });

  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'secured-worker-'));
    certs = makeCertificates(join(dir, 'certificates'));
    worker = await startSecuredWorker(dir, token, certs);
    [gateway, misconfigured] = await Promise.all([
      startRealGateway(gatewayEnv(token)),
      startRealGateway(gatewayEnv(wrongToken)),
    ]);
  });
  afterAll(async () => {
    await Promise.all([gateway?.gateway.close(), misconfigured?.gateway.close()]);
    await worker?.stop();
  });

  it('lists the worker\'s devices over mutual TLS with the token', async () => {
    expect(gateway.gateway.workers.mode).toBe('remote');
    const { status, body } = await getJson(`${gateway.url}/api/device/list`, bearer(signToken()));
    expect(status).toBe(200);
    const list = DeviceListSchema.parse(body);
    expect(list.partial).toBe(false);
    expect(list.devices.map((d) => [d.id, d.workerId])).toContainEqual(['secured:cpu', `${worker.address}/127.0.0.1`]);
  });

  it('cannot be reached in plaintext or without a client certificate', async () => {
    expect(await listDevicesStatus(worker.address, grpc.credentials.createInsecure())).toBe(grpc.status.UNAVAILABLE);
    const serverOnly = grpc.credentials.createSsl(readFileSync(certs.ca));
    expect(await listDevicesStatus(worker.address, serverOnly)).toBe(grpc.status.UNAVAILABLE);
  });

  it('answers a gateway holding the wrong token with 503, and health names the authentication failure', async () => {
    const list = await getJson(`${misconfigured.url}/api/device/list`, bearer(signToken()));
    expect(list.status).toBe(503);
    expect(JSON.stringify(list.body)).toMatch(/authentication failed/);

    const { body } = await getJson(`${misconfigured.url}/health/detailed`, bearer(signToken()));
    const report = DetailedHealthSchema.parse(body);
    expect(report.status).toBe('unhealthy');
    expect(report.workers).toHaveLength(1);
    expect(report.workers[0]).toMatchObject({ id: `${worker.address}/127.0.0.1`, healthy: false, state: 'unreachable' });
    expect(report.workers[0]!.error).toMatch(/refused the gateway's credentials \(authentication failed/);
  });

  it('never writes either token to a log', () => {
    for (const text of [gateway.logs.text, misconfigured.logs.text, worker.output.join('\n')]) {
      expect(text).not.toContain(token);
      expect(text).not.toContain(wrongToken);
    }
    expect(worker.output.some((line) => line.includes('call refused: not authenticated'))).toBe(true);
  });
});
