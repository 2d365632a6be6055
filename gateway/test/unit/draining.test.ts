import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InferEvent__Output } from '../../src/generated/device_ops/v1/InferEvent.js';
import type { ModelDescriptor__Output } from '../../src/generated/device_ops/v1/ModelDescriptor.js';
import { startFakeGateway, type FakeGateway } from '../helpers/fake-app.js';
import { bearer, getJson } from '../helpers/http.js';
import { signToken } from '../helpers/tokens.js';

const minilm = {
  name: 'minilm',
  task: 'MODEL_TASK_TEXT_EMBEDDING',
  tasks: ['MODEL_TASK_TEXT_EMBEDDING'],
  format: 'MODEL_FORMAT_SENTENCE_TRANSFORMERS',
  sizeBytes: 1,
  validation: 'VALIDATION_STATE_VALID',
  preferredDtype: '',
  placements: [],
} as unknown as ModelDescriptor__Output;

const ev = (sequence: number, fields: Partial<InferEvent__Output>) => ({ sequence, timestampUnixMs: 0, ...fields }) as InferEvent__Output;

const execute = { task: 'text-embedding', model: 'minilm', parameters: { texts: ['hi'] } };

describe('draining for shutdown', () => {
  let gateway: FakeGateway;
  const token = signToken({ scope: 'inference' });
  const post = (path: string, body: unknown) =>
    fetch(`${gateway.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...bearer(token) }, body: JSON.stringify(body) });
  const inferCalls = () => gateway.pool.calls.filter((c) => c.rpc === 'Infer').length;

  beforeAll(async () => {
    gateway = await startFakeGateway(['worker-0']);
    const worker = gateway.pool.fakes[0]!;
    worker.models = [minilm];
    worker.inferScript = [
      ev(1, { event: 'accepted', accepted: {} as never }),
      ev(2, { event: 'started', started: { deviceId: 'worker-0:cpu' } as never }),
      ev(3, {
        event: 'result',
        result: { files: [], embeddings: [{ values: [0.5] }], tensors: {}, deviceId: 'worker-0:cpu', runMs: 1, model: 'minilm', dtype: 'float32', batchSize: 1 } as never,
      }),
    ];
  });
  afterAll(() => gateway.close());

  it('before draining, the gateway is ready and runs jobs', async () => {
    expect((await getJson(`${gateway.url}/health/ready`)).status).toBe(200);
    const response = await post('/api/inference/execute', execute);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ status: 'succeeded' });
    expect(inferCalls()).toBe(1);
  });

  it('once draining, new work is refused with 503 service-unavailable and Retry-After: 1, before any job is created', async () => {
    gateway.gateway.services.readiness.startDraining();
    const sessionsBefore = gateway.stores.sessions.rows.size;
    const callsBefore = inferCalls();

    const response = await post('/api/inference/execute', execute);
    expect(response.status).toBe(503);
    expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(response.headers.get('retry-after')).toBe('1');
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ type: '/problems/service-unavailable', status: 503, instance: '/api/inference/execute' });
    expect(String(body.detail)).toMatch(/shutting down/);

    expect(gateway.stores.sessions.rows.size).toBe(sessionsBefore);
    expect(inferCalls()).toBe(callsBefore);

    // Operators see the refusal counted with reason "draining".
    const metrics = await fetch(`${gateway.url}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/backpressure_rejections_total\{reason="draining"\} 1\b/);
  });

  it('refuses even an unauthenticated or malformed POST with the same 503 (nothing new starts)', async () => {
    const response = await fetch(`${gateway.url}/api/inference/execute`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' });
    expect(response.status).toBe(503);
    expect(response.headers.get('retry-after')).toBe('1');
  });

  it('keeps liveness 200 and answers readiness 503 with the reason', async () => {
    const live = await getJson(`${gateway.url}/health`);
    expect(live.status).toBe(200);
    expect(live.body).toEqual({ status: 'ok' });

    const ready = await getJson(`${gateway.url}/health/ready`);
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({ ready: false, servingWorkers: 1 });
    expect((ready.body!.reasons as string[]).some((r) => /draining/.test(r))).toBe(true);
  });

  it('still serves reads under /api (GET), e.g. the session that already finished', async () => {
    const [session] = [...gateway.stores.sessions.rows.values()];
    const { status, body } = await getJson(`${gateway.url}/api/inference/sessions/${session!.id}`, bearer(token));
    expect(status).toBe(200);
    expect(body).toMatchObject({ id: session!.id, status: 'succeeded' });
  });
});
