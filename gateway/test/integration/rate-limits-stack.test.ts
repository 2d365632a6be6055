import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Dialect } from '../../src/infra/database/database.js';
import { dialectAvailable } from '../helpers/databases.js';
import { bearer } from '../helpers/http.js';
import { metric, metricTotal, samples } from '../helpers/metrics.js';
import { startRealGatewayOn, type GatewayOnDatabase } from '../helpers/real-gateway.js';
import { signToken } from '../helpers/tokens.js';

/**
 * The rate limits as createApp chains them, through the real gateway with a
 * real worker: per client address before any credential is checked, per
 * principal after, and the stricter inference limit. The client address
 * comes from X-Forwarded-For (TRUST_PROXY=1, as behind NGINX), so each test
 * is a client of its own.
 */
const PER_IP = 8;
const PER_PRINCIPAL = 6;
const INFERENCE = 3;

const quickJob = {
  task: 'tensor',
  model: 'tiny-mlp',
  parameters: { inputs: { x: { dtype: 'float32', shape: [1, 4], data: Buffer.alloc(16).toString('base64') } } },
};

let addresses = 0;
/** A client address of its own (TEST-NET-3), for one caller. */
const newClient = () => `203.0.113.${(addresses += 1)}`;

describe.each(['sqlite', 'postgres'] as Dialect[])('rate limits through the real gateway on %s', (dialect) => {
  let real: GatewayOnDatabase;

  const call = (path: string, client: string, headers: Record<string, string> = {}, body?: unknown) =>
    fetch(`${real.url}${path}`, {
      method: body === undefined ? 'GET' : 'POST',
      headers: { 'x-forwarded-for': client, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  // Tensor jobs the worker itself counted, from its own metrics relayed by the gateway.
  const jobsRun = async () => {
    const text = await (await fetch(`${real.url}/metrics/workers/worker-0`)).text();
    return samples(text, 'device_ops_worker_inference_requests_total')
      .filter((s) => s.labels.task === 'tensor')
      .reduce((sum, s) => sum + s.value, 0);
  };

  beforeAll(async () => {
    if (!dialectAvailable(dialect)) return;
    real = await startRealGatewayOn(dialect, {
      MODEL_DIRECTORY: inject('demoModels'),
      OUTPUT_DIRECTORY: mkdtempSync(join(tmpdir(), 'limits-out-')),
      TRUST_PROXY: '1',
      RATE_LIMIT_PER_IP: String(PER_IP),
      RATE_LIMIT_PER_PRINCIPAL: String(PER_PRINCIPAL),
      RATE_LIMIT_INFERENCE_PER_PRINCIPAL: String(INFERENCE),
      LOG_LEVEL: 'warn',
    });
  });

  afterAll(() => real?.close());

  it.skipIf(!dialectAvailable(dialect))('answers an anonymous flood from one address with 429 before any credential is checked', async () => {
    const client = newClient();
    const failuresBefore = await metricTotal(real.url, 'device_ops_gateway_auth_failures_total');
    const statuses: number[] = [];
    let refused: Response | undefined;
    for (let i = 0; i < PER_IP + 4; i += 1) {
      const response = await call('/api/device/list', client, { authorization: 'Bearer not-a-token' });
      statuses.push(response.status);
      if (response.status === 429) refused ??= response;
      else await response.body?.cancel();
    }
    expect(statuses).toEqual([...Array(PER_IP).fill(401), ...Array(4).fill(429)]);
    // Only the requests that got past the address limit reached the authenticator.
    expect((await metricTotal(real.url, 'device_ops_gateway_auth_failures_total')) - failuresBefore).toBe(PER_IP);
    expect(refused!.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(Number(refused!.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(refused!.headers.get('ratelimit')).toMatch(/^"client"; r=0; t=\d+$/);
    const problem = (await refused!.json()) as Record<string, unknown>;
    expect(problem).toMatchObject({ status: 429 });
    expect(String(problem.detail)).toContain(`${PER_IP} requests from this address`);
    // A valid credential from the same address is refused the same way: the limit comes first.
    expect((await call('/api/auth/whoami', client, bearer(signToken()))).status).toBe(429);
    // Another client is not affected.
    expect((await call('/api/auth/whoami', newClient(), bearer(signToken()))).status).toBe(200);
    expect(await metric(real.url, 'device_ops_gateway_rate_limit_rejections_total', '{limiter="client"}')).toBeGreaterThanOrEqual(5);
  });

  it.skipIf(!dialectAvailable(dialect))('limits each principal on its own, whatever address it calls from', async () => {
    const alice = bearer(signToken({ sub: `alice-${dialect}` }));
    const bob = bearer(signToken({ sub: `bob-${dialect}` }));
    const statuses: number[] = [];
    for (let i = 0; i < PER_PRINCIPAL + 2; i += 1) {
      const response = await call('/api/auth/whoami', newClient(), alice);
      statuses.push(response.status);
      if (i === 0) {
        // Both limiters the request passed are named in the standard headers.
        expect(response.headers.get('ratelimit-policy')).toMatch(/^"client"; q=8; w=60; pk=:[^:]+:, "principal"; q=6; w=60; pk=:[^:]+:$/);
        expect(response.headers.get('ratelimit')).toMatch(/^"client"; r=7; t=\d+, "principal"; r=5; t=\d+$/);
      }
      if (response.status === 429) {
        expect(String(((await response.json()) as { detail: string }).detail)).toContain(`${PER_PRINCIPAL} requests per`);
        expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
      } else await response.body?.cancel();
    }
    expect(statuses).toEqual([...Array(PER_PRINCIPAL).fill(200), 429, 429]);
    expect((await call('/api/auth/whoami', newClient(), bob)).status).toBe(200);
  });

  it.skipIf(!dialectAvailable(dialect))('trips the inference limit before the general one, before the job reaches a worker', async () => {
    const carol = bearer(signToken({ sub: `carol-${dialect}`, scope: 'inference' }));
    const runBefore = await jobsRun();
    const statuses: number[] = [];
    for (let i = 0; i < INFERENCE + 1; i += 1) {
      const response = await call('/api/inference/execute', newClient(), carol, quickJob);
      statuses.push(response.status);
      if (response.status === 429) {
        expect(String(((await response.json()) as { detail: string }).detail)).toContain(`${INFERENCE} inference requests per`);
        expect(response.headers.get('retry-after')).not.toBeNull();
      } else await response.body?.cancel();
    }
    expect(statuses).toEqual([...Array(INFERENCE).fill(200), 429]);
    // Three jobs ran on the worker; the refused one never reached it.
    expect((await jobsRun()) - runBefore).toBe(INFERENCE);
    // The general limit still has room for carol's other calls.
    expect((await call('/api/auth/whoami', newClient(), carol)).status).toBe(200);
  });
});
