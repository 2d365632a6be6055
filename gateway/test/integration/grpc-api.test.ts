import { createHash, generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import jwt from 'jsonwebtoken';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { decodeStatusDetails } from '../../src/grpc/status-details.js';
import { repoRoot } from '../../src/infra/paths.js';
import { bearer } from '../helpers/http.js';
import {
  fromStruct,
  gatewayClient,
  healthCheck,
  serverStream,
  unary,
  type GatewayClient,
} from '../helpers/grpc-client.js';
import { samples } from '../helpers/metrics.js';
import { startRealGatewayOn, type GatewayOnDatabase } from '../helpers/real-gateway.js';
import { unsignedToken } from '../helpers/tokens.js';
import { requireTool } from '../helpers/tools.js';
import { MACHINE_MARGIN_MS, waitFor } from '../helpers/wait.js';

/**
 * The gateway's public gRPC API through the real gateway and a real Python
 * worker, called as an internal service calls it (stubs from proto/). Tokens
 * are RS256 here, so HMAC/RSA confusion can be tried too.
 */
const INFERENCE_LIMIT = 20;
let keys: { publicKey: KeyObject; privateKey: KeyObject };
let real: GatewayOnDatabase;
let client: GatewayClient;
let address: string;
let outputs: string;

const sign = (sub: string, scope: string, options: jwt.SignOptions = {}) =>
  jwt.sign({ scope }, keys.privateKey, { algorithm: 'RS256', subject: sub, expiresIn: 300, ...options });
const as = (sub: string, scope = 'inference') => bearer(sign(sub, scope));
const alice = () => as('alice');
const manager = () => as('ops', 'inference models:manage');
const admin = () => as('root', 'admin');

const rest = (path: string, init: { method?: string; body?: unknown; headers?: Record<string, string> } = {}) =>
  fetch(`${real.url}${path}`, {
    method: init.method ?? (init.body ? 'POST' : 'GET'),
    headers: { ...(init.body ? { 'content-type': 'application/json' } : {}), ...(init.headers ?? alice()) },
    ...(init.body ? { body: JSON.stringify(init.body) } : {}),
  });

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const restJson = async (path: string, init: Parameters<typeof rest>[1] = {}): Promise<any> => (await rest(path, init)).json();

const t2i = (parameters: Record<string, unknown> = {}) => ({
  model: 'tiny-sd',
  textToImage: { prompt: 'a red bicycle', steps: 3, width: 64, height: 64, seed: 11, ...parameters },
});
const embedding = { model: 'minilm', textEmbedding: { texts: ['hello gRPC'], normalize: true } };

/** Calls the gateway made to workers (the health monitor's checks left out). */
const workerCalls = async () => {
  const text = await (await fetch(`${real.url}/metrics`)).text();
  return samples(text, 'device_ops_gateway_grpc_client_duration_seconds_count')
    .filter((s) => s.labels.rpc !== 'Health/Check')
    .reduce((sum, s) => sum + s.value, 0);
};
const sessionRows = async () => Number(((await real.gateway.database.knex('sessions').count({ n: '*' })) as { n: unknown }[])[0]!.n);

const details = (error: { metadata: { get(key: string): unknown[] } }) =>
  decodeStatusDetails(error.metadata.get('grpc-status-details-bin')[0] as Buffer).details;

/** Every rpc this file called successfully, checked against the service at the end. */
const succeeded = new Set<string>();
async function ok<T = Record<string, any>>(method: string, request: unknown, headers: Record<string, string> = alice()): Promise<T> {
  const outcome = await unary<T>(client, method, request, headers);
  if (outcome.error) throw new Error(`${method}: ${status[outcome.error.code]} ${outcome.error.details}`);
  succeeded.add(method);
  return outcome.response!;
}

beforeAll(async () => {
  keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
  outputs = mkdtempSync(join(tmpdir(), 'device-ops-outputs-'));
  real = await startRealGatewayOn('sqlite', {
    MODEL_DIRECTORY: inject('demoModels'),
    OUTPUT_DIRECTORY: outputs,
    JWT_SECRET: undefined as unknown as string,
    JWT_PUBLIC_KEY: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    RATE_LIMIT_INFERENCE_PER_PRINCIPAL: String(INFERENCE_LIMIT),
    SHUTDOWN_GRACE_SECONDS: '30',
    LOG_LEVEL: 'info',
  });
  address = real.gateway.grpcAddress;
  client = gatewayClient(address);
});

afterAll(async () => {
  client?.close();
  await real?.close();
});

describe('the public gRPC API', () => {
  it('answers who the caller is, and returns the correlation id it was sent in the trailers', async () => {
    const outcome = await unary(client, 'whoAmI', {}, { ...alice(), 'x-request-id': 'grpc-trace-1' });
    expect(outcome.response).toEqual({ id: 'jwt:alice', subject: 'alice', method: 'jwt', scopes: ['inference'] });
    expect(outcome.trailers?.get('x-request-id')).toEqual(['grpc-trace-1']);
    expect(real.logs.find((l) => l.message === 'rpc' && l.correlationId === 'grpc-trace-1')[0]).toMatchObject({
      rpc: 'WhoAmI',
      code: 'OK',
      principal: 'jwt:alice',
    });
    succeeded.add('whoAmI');
  });

  it('lists and describes devices, memory and models as REST does', async () => {
    const list = await ok('listDevices', {});
    const restList = await restJson('/api/device/list');
    expect(list.devices.map((d: { id: string }) => d.id)).toEqual(restList.devices.map((d: { id: string }) => d.id));
    expect(list).toMatchObject({ totalCount: 1, partial: false, missingWorkers: [] });
    const cpu = list.devices[0];
    expect(cpu).toMatchObject({ kind: 'cpu', workerId: 'worker-0', cpu: { architecture: restList.devices[0].cpu.architecture } });

    expect(await ok('getDevice', { deviceId: cpu.id })).toMatchObject({ id: cpu.id, kind: 'cpu' });
    expect(await ok('getDeviceStatus', { deviceId: cpu.id })).toMatchObject({ deviceId: cpu.id, workerId: 'worker-0' });
    expect(await ok('getDeviceCapabilities', { deviceId: cpu.id })).toMatchObject({ deviceId: cpu.id, dtypes: expect.arrayContaining(['float32']) });
    const unknown = await unary(client, 'getDevice', { deviceId: 'nowhere:cpu' }, alice());
    expect(unknown.error?.code).toBe(status.NOT_FOUND);

    const models = await ok('listModels', {});
    expect(models.models.map((m: { name: string }) => m.name)).toEqual(['minilm', 'tiny-mlp', 'tiny-sd', 'tiny-upscaler']);
    expect(await ok('validateModel', { model: 'tiny-mlp' }, manager())).toMatchObject({ valid: true, workerId: 'worker-0', problems: [] });
    const loaded = await ok('loadModel', { model: 'tiny-mlp', dtype: 'float32' }, manager());
    expect(loaded.placement).toMatchObject({ workerId: 'worker-0', deviceId: cpu.id, dtype: 'float32', footprintBytes: 60 });
    expect((await ok('getModelStatus', {})).placements).toEqual([expect.objectContaining({ model: 'tiny-mlp', footprintBytes: 60 })]);
    const memory = await ok('getMemoryStatus', { deviceId: cpu.id });
    expect(memory.devices[0].models).toEqual([{ model: 'tiny-mlp', footprintBytes: 60 }]);
    expect(await ok('unloadModel', { model: 'tiny-mlp' }, manager())).toEqual({ model: 'tiny-mlp', freedBytes: 60, devices: [cpu.id] });
    expect(await ok('clearMemory', { unloadIdle: true }, manager())).toMatchObject({ workers: ['worker-0'] });

    // Management over gRPC is audited like REST's, with the caller's address.
    const audit = await restJson('/api/admin/audit?action=model.load', { headers: admin() });
    expect(audit.items[0]).toMatchObject({ actor: 'jwt:ops', action: 'model.load', target: 'tiny-mlp', outcome: 'success', clientAddress: '127.0.0.1' });
  });

  it('runs inference: execute, the dry run, capabilities, and a streamed job', async () => {
    const capabilities = await ok('getInferenceCapabilities', {});
    expect(capabilities.tasks).toContainEqual({ task: 'text-embedding', models: ['minilm'] });
    expect(await ok('validateInference', embedding)).toMatchObject({ valid: true, workerId: 'worker-0' });

    const executed = await ok('execute', embedding);
    expect(executed).toMatchObject({ status: 'succeeded', task: 'text-embedding', owner: 'jwt:alice' });
    const result = fromStruct(executed.result) as { embeddings: number[][] };
    expect(result.embeddings).toHaveLength(1);
    expect(Math.hypot(...result.embeddings[0]!)).toBeCloseTo(1, 3);
    // Pre-tokenized input ([CLS] hello [SEP] in MiniLM's vocabulary) as repeated TokenIds: the text's vector.
    const byIds = await ok('execute', { model: 'minilm', textEmbedding: { tokenIds: [{ ids: [101, 7592, 102] }], normalize: true } });
    const fromIds = fromStruct(byIds.result) as { embeddings: number[][]; promptTokens: number };
    expect(fromIds.promptTokens).toBe(3);
    const byText = (await restJson('/api/inference/execute', { body: { task: 'text-embedding', model: 'minilm', parameters: { texts: ['hello'], normalize: true } } })) as {
      result: { embeddings: number[][]; promptTokens: number };
    };
    expect(byText.result.promptTokens).toBe(3);
    fromIds.embeddings[0]!.forEach((value, i) => expect(value).toBeCloseTo(byText.result.embeddings[0]![i]!, 5));

    const streamed = await serverStream(client, 'executeStream', t2i(), alice());
    expect(streamed.status.code).toBe(status.OK);
    const types = streamed.events.map((e) => e.type);
    expect(types[0]).toBe('accepted');
    expect(types).toContain('started');
    expect(types.filter((t) => ['result', 'error', 'cancelled'].includes(t))).toEqual(['result']);
    expect(types.at(-1)).toBe('result');
    // Sequences as the SSE ids: increasing, from 1.
    expect(streamed.events.map((e) => e.sequence)).toEqual(streamed.events.map((_e, i) => i + 1));
    succeeded.add('executeStream');
  });

  it('runs a session created over gRPC that REST lists, reads and downloads from', async () => {
    const created = await ok('createSession', t2i({ seed: 5 }));
    expect(created).toMatchObject({ status: 'queued', owner: 'jwt:alice', links: { self: `/api/inference/sessions/${created.id}` } });
    const done = await waitFor(
      async () => {
        const body = await restJson(`/api/inference/sessions/${created.id}`);
        return body.status === 'succeeded' ? body : undefined;
      },
      { what: 'the gRPC session to succeed' },
    );
    const file = done.result.files[0];
    const png = Buffer.from(await (await rest(file.url)).arrayBuffer());
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    expect(createHash('sha256').update(png).digest('hex')).toBe(file.sha256);
    const listed = await restJson('/api/inference/sessions?limit=200');
    expect(listed.items.map((s: { id: string }) => s.id)).toContain(created.id);

    const viaGrpc = await ok('getSession', { id: created.id });
    expect(fromStruct(viaGrpc.result)).toEqual(done.result);
    const page = await ok('listSessions', { limit: 200 });
    expect(page.items.map((s: { id: string }) => s.id)).toContain(created.id);
    // Bob cannot see it.
    expect((await unary(client, 'getSession', { id: created.id }, as('bob'))).error?.code).toBe(status.NOT_FOUND);

    // Postprocessing over gRPC: from that output, and from uploaded bytes.
    const upscaled = await ok('upscale', { source: { sessionId: created.id, file: file.name }, scale: 2 });
    expect((fromStruct(upscaled.result) as { files: { width: number }[] }).files[0]!.width).toBe(128);
    const enhanced = await ok('enhance', { image: png, adjustments: { contrast: 1.2 } });
    expect(enhanced).toMatchObject({ status: 'succeeded', task: 'enhance' });
  });

  it('follows a REST session over gRPC, and resumes after an event', async () => {
    const created = await restJson('/api/inference/sessions', { body: { task: 'text-to-image', model: 'tiny-sd', parameters: { prompt: 'a boat', steps: 3, width: 64, height: 64 } } });
    const all = await serverStream(client, 'watchSession', { id: created.id }, alice());
    expect(all.status.code).toBe(status.OK);
    expect(all.events.at(-1)!.type).toBe('result');
    const resumed = await serverStream(client, 'watchSession', { id: created.id, afterSequence: 2 }, alice());
    expect(resumed.events.map((e) => e.sequence)).toEqual(all.events.slice(2).map((e) => e.sequence));
    expect(fromStruct(all.events[0]!.data)).toMatchObject({ sessionId: created.id });
    succeeded.add('watchSession');
  });

  it('cancels sessions and batches', async () => {
    const queued = await ok('createSession', t2i({ steps: 150, width: 128, height: 128 }));
    const cancelled = await ok('cancelSession', { id: queued.id });
    expect(cancelled.id).toBe(queued.id);
    await waitFor(async () => ((await restJson(`/api/inference/sessions/${queued.id}`)).status === 'cancelled' ? true : undefined), {
      what: 'the session to end cancelled',
    });

    const batch = await ok('createBatch', { items: [embedding, embedding], concurrency: 1 });
    expect(batch).toMatchObject({ owner: 'jwt:alice', itemCount: 2 });
    expect((await ok('getBatch', { id: batch.id })).id).toBe(batch.id);
    const restBatch = await restJson(`/api/processing/batches/${batch.id}`);
    expect(restBatch.itemCount).toBe(2);
    expect((await ok('cancelBatch', { id: batch.id })).id).toBe(batch.id);
  });

  it('cancels the job on the worker when a streaming caller goes away', async () => {
    let sessionId = '';
    const outcome = await serverStream(client, 'executeStream', t2i({ steps: 150, width: 128, height: 128 }), alice(), (event) => {
      if (event.type === 'accepted') sessionId = fromStruct(event.data)!.sessionId as string;
      return event.type === 'progress' ? 'cancel' : undefined;
    });
    expect(outcome.status.code).toBe(status.CANCELLED);
    const ended = await waitFor(
      async () => {
        const body = await restJson(`/api/inference/sessions/${sessionId}`);
        return body.status === 'running' ? undefined : body;
      },
      { what: 'the abandoned job to end' },
    );
    expect(ended.status).toBe('cancelled');
    const events = await serverStream(client, 'watchSession', { id: sessionId }, alice());
    expect(events.events.at(-1)!.type).toBe('cancelled');
  });

  it('names the invalid field in INVALID_ARGUMENT with a BadRequest detail, before anything runs', async () => {
    const rows = await sessionRows();
    const tooMany = await unary(client, 'execute', t2i({ steps: 1000 }), alice());
    expect(tooMany.error?.code).toBe(status.INVALID_ARGUMENT);
    expect(tooMany.error?.details).toMatch(/^text_to_image\.steps: /);
    expect(details(tooMany.error!)).toContainEqual({
      '@type': 'google.rpc.BadRequest',
      fieldViolations: [{ field: 'text_to_image.steps', description: expect.stringContaining('150') }],
    });
    const none = await unary(client, 'execute', { model: 'tiny-sd' }, alice());
    expect(none.error?.code).toBe(status.INVALID_ARGUMENT);
    expect(none.error?.details).toContain('parameters: set exactly one of text_to_image');
    const badId = await unary(client, 'getSession', { id: 'not-a-uuid' }, alice());
    expect(badId.error?.details).toBe('id: must be a session id (UUID)');
    const noModel = await unary(client, 'loadModel', {}, manager());
    expect(details(noModel.error!).find((d) => d['@type'] === 'google.rpc.BadRequest')).toMatchObject({ fieldViolations: [{ field: 'model' }] });
    expect(await sessionRows()).toBe(rows);
  });
});

describe('the REST attack matrix, replayed in gRPC metadata', () => {
  let revokedKey: string;
  let expiringKey: string;

  beforeAll(async () => {
    const create = async (name: string, extra: Record<string, unknown> = {}) =>
      (await restJson('/api/admin/keys', { body: { name, scopes: ['inference'], ...extra }, headers: admin() })) as { id: string; key: string };
    const revoked = await create('revoked-key');
    await rest(`/api/admin/keys/${revoked.id}`, { method: 'DELETE', headers: admin() });
    revokedKey = revoked.key;
    expiringKey = (await create('short-lived', { expiresInSeconds: 1 })).key;
    // The key must have expired by the time the matrix runs.
    await new Promise((resolve) => setTimeout(resolve, 1600));
  });

  const other = () => generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const now = () => Math.floor(Date.now() / 1000);
  const CASES: [string, () => Record<string, string>][] = [
    ['expired token', () => bearer(sign('alice', 'inference', { expiresIn: -300 }))],
    ['token without exp', () => bearer(jwt.sign({ sub: 'alice', scope: 'inference' }, keys.privateKey, { algorithm: 'RS256' }))],
    ['alg: none', () => bearer(unsignedToken())],
    ['signed with another key', () => bearer(jwt.sign({ scope: 'inference' }, other(), { algorithm: 'RS256', subject: 'alice', expiresIn: 300 }))],
    [
      'HS256 signed with the public key (HS/RS confusion)',
      () => bearer(jwt.sign({ sub: 'mallory', scope: 'admin', exp: now() + 300 }, keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(), { algorithm: 'HS256' })),
    ],
    ['revoked API key', () => ({ 'x-api-key': revokedKey })],
    ['expired API key', () => ({ 'x-api-key': expiringKey })],
    ['no credential', () => ({})],
  ];

  it.each(CASES)('%s → UNAUTHENTICATED, no worker call, no session', async (_name, headers) => {
    const [calls, rows] = [await workerCalls(), await sessionRows()];
    const outcome = await unary(client, 'execute', embedding, headers());
    expect(outcome.error?.code).toBe(status.UNAUTHENTICATED);
    expect(outcome.error?.details).toBe('A valid bearer token or API key is required.');
    expect(await workerCalls()).toBe(calls);
    expect(await sessionRows()).toBe(rows);
  });

  it('a credential without the scope → PERMISSION_DENIED, no worker call, no session', async () => {
    const [calls, rows] = [await workerCalls(), await sessionRows()];
    const execute = await unary(client, 'execute', embedding, as('viewer', 'models:manage'));
    expect(execute.error?.code).toBe(status.PERMISSION_DENIED);
    expect(execute.error?.details).toBe("This route requires the 'inference' scope.");
    const load = await unary(client, 'loadModel', { model: 'tiny-mlp' }, alice());
    expect(load.error?.code).toBe(status.PERMISSION_DENIED);
    expect(await workerCalls()).toBe(calls);
    expect(await sessionRows()).toBe(rows);
  });

  it('counts REST and gRPC calls against one inference limit: RESOURCE_EXHAUSTED with pushback', async () => {
    const hasty = as('hasty');
    const id = randomUUID();
    for (let i = 0; i < INFERENCE_LIMIT / 2; i += 1) expect((await rest(`/api/inference/sessions/${id}`, { method: 'DELETE', headers: hasty })).status).toBe(404);
    for (let i = 0; i < INFERENCE_LIMIT / 2; i += 1) expect((await unary(client, 'cancelSession', { id }, hasty)).error?.code).toBe(status.NOT_FOUND);
    const refused = await unary(client, 'cancelSession', { id }, hasty);
    expect(refused.error?.code).toBe(status.RESOURCE_EXHAUSTED);
    const pushback = Number(refused.error!.metadata.get('grpc-retry-pushback-ms')[0]);
    expect(pushback).toBeGreaterThan(0);
    expect(details(refused.error!)).toContainEqual({ '@type': 'google.rpc.RetryInfo', retryDelay: expect.objectContaining({ seconds: pushback / 1000 }) });
    expect((await rest(`/api/inference/sessions/${id}`, { method: 'DELETE', headers: hasty })).status).toBe(429);
    // Other principals are not affected.
    expect((await unary(client, 'cancelSession', { id }, alice())).error?.code).toBe(status.NOT_FOUND);
  });
});

describe('a Python grpcio client (examples/grpc-client, stubs generated from proto/)', () => {
  const python = join(repoRoot, 'python-workers', '.venv', 'bin', 'python');
  const run = async (args: string[], env: Record<string, string>) => {
    const outcome = await promisify(execFile)(python, [join(repoRoot, 'examples', 'grpc-client', 'client.py'), '--address', address, ...args], {
      env: { PATH: process.env.PATH, ...env },
    }).then(
      (done) => ({ code: 0, stdout: done.stdout }),
      (failed: { code: number; stdout: string; stderr: string }) => ({ code: failed.code, stdout: failed.stdout, stderr: failed.stderr }),
    );
    return { ...outcome, lines: outcome.stdout.trim().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, any>) };
  };
  const token = (sub: string, scope = 'inference') => ({ GATEWAY_TOKEN: sign(sub, scope) });

  it('calls unary and streaming rpcs with a bearer token', async () => {
    expect((await run(['whoami'], token('py-client'))).lines).toEqual([{ id: 'jwt:py-client', subject: 'py-client', method: 'jwt', scopes: ['inference'] }]);
    const devices = (await run(['devices'], token('py-client'))).lines[0]!;
    expect(devices.devices[0]).toMatchObject({ workerId: 'worker-0', kind: 'cpu' });
    const embedded = (await run(['embed', 'hello', 'world'], token('py-client'))).lines[0]!;
    expect(embedded).toMatchObject({ status: 'succeeded', owner: 'jwt:py-client', task: 'text-embedding' });
    expect(embedded.result.embeddings).toHaveLength(2);
    const events = (await run(['generate', 'a kite', '--steps', '3', '--size', '64'], token('py-client'))).lines;
    expect(events[0]!.type).toBe('accepted');
    expect(events.at(-1)!.type).toBe('result');
  });

  it('follows a session it submitted, resuming after an event', async () => {
    const submitted = (await run(['submit', 'a kite', '--steps', '3', '--size', '64'], token('py-client'))).lines[0]!;
    const all = (await run(['watch', submitted.id], token('py-client'))).lines;
    expect(all.at(-1)!.type).toBe('result');
    const resumed = (await run(['watch', submitted.id, '--after', '2'], token('py-client'))).lines;
    expect(resumed.map((e) => e.sequence)).toEqual(all.slice(2).map((e) => e.sequence));
  });

  it('reads the refusals: UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT with the field, RESOURCE_EXHAUSTED with the delay', async () => {
    const unauthenticated = await run(['whoami'], { GATEWAY_TOKEN: 'not-a-token' });
    expect(unauthenticated.code).toBe(1);
    expect(unauthenticated.lines[0]!.error).toMatchObject({ code: 'UNAUTHENTICATED', reason: 'unauthorized', correlationId: expect.any(String) });
    expect((await run(['embed', 'hi'], token('py-viewer', 'models:manage'))).lines[0]!.error).toMatchObject({ code: 'PERMISSION_DENIED' });
    const invalid = (await run(['generate', 'a kite', '--steps', '1000', '--size', '64'], token('py-client'))).lines[0]!.error;
    expect(invalid).toMatchObject({ code: 'INVALID_ARGUMENT', fields: ['text_to_image.steps'] });
    // 'hasty' spent its inference limit in the attack matrix above (same window).
    const limited = (await run(['submit', 'a kite'], token('hasty'))).lines[0]!.error;
    expect(limited).toMatchObject({ code: 'RESOURCE_EXHAUSTED', reason: 'rate-limited' });
    expect(limited.retryAfterSeconds).toBeGreaterThan(0);
  });
});

describe("grpcurl, as the README calls the gateway (reflection, no .proto files)", () => {
  const grpcurl = requireTool('grpcurl', 'go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4 (.ci/run does)');
  const call = (args: string[]) =>
    promisify(execFile)(grpcurl!, args).then(
      (done) => ({ code: 0, stdout: done.stdout, stderr: done.stderr }),
      (failed: { code: number; stdout: string; stderr: string }) => ({ code: failed.code, stdout: failed.stdout, stderr: failed.stderr }),
    );

  it.skipIf(!grpcurl)('lists the service by reflection and calls ListDevices with a bearer token, exactly the README line', async () => {
    const services = await call(['-plaintext', address, 'list']);
    expect(services.stdout.split('\n')).toEqual(expect.arrayContaining(['device_ops.gateway.v1.DeviceOperations', 'grpc.health.v1.Health']));
    const listed = await call(['-plaintext', '-H', `authorization: Bearer ${sign('curl', 'inference')}`, address, 'device_ops.gateway.v1.DeviceOperations/ListDevices']);
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout).devices[0]).toMatchObject({ workerId: 'worker-0', kind: 'cpu' });
    const refused = await call(['-plaintext', address, 'device_ops.gateway.v1.DeviceOperations/ListDevices']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('Code: Unauthenticated');
    const health = await call(['-plaintext', '-d', '{"service":"device_ops.gateway.v1.DeviceOperations"}', address, 'grpc.health.v1.Health/Check']);
    expect(JSON.parse(health.stdout)).toEqual({ status: 'SERVING' });
  });
});

describe('serving every method and draining', () => {
  it('served every rpc of the service in this file', () => {
    const service = Object.keys((client.constructor as unknown as { service: Record<string, unknown> }).service);
    expect([...succeeded].sort()).toEqual(service.map((m) => m.charAt(0).toLowerCase() + m.slice(1)).sort());
  });

  it('reports SERVING, then NOT_SERVING and refuses new work with UNAVAILABLE while draining; reads go on', async () => {
    expect(await healthCheck(address)).toBe('SERVING');
    expect(await healthCheck(address, 'device_ops.gateway.v1.DeviceOperations')).toBe('SERVING');
    // A job that outlasts the start of the drain keeps the gateway draining.
    let sessionId = '';
    const started = new Promise<void>((resolve) => {
      void serverStream(client, 'executeStream', t2i({ steps: 150, width: 128, height: 128 }), alice(), (event) => {
        if (event.type === 'accepted') sessionId = fromStruct(event.data)!.sessionId as string;
        if (event.type === 'progress') resolve();
      });
    });
    await started;
    const closing = real.gateway.close();
    await waitFor(async () => ((await healthCheck(address)) === 'NOT_SERVING' ? true : undefined), {
      timeoutMs: 1000 + MACHINE_MARGIN_MS,
      what: 'health to turn NOT_SERVING',
    });
    const refused = await unary(client, 'execute', embedding, alice());
    expect(refused.error?.code).toBe(status.UNAVAILABLE);
    expect(Number(refused.error!.metadata.get('grpc-retry-pushback-ms')[0])).toBe(1000);
    expect(details(refused.error!)).toContainEqual(expect.objectContaining({ '@type': 'google.rpc.ErrorInfo', metadata: expect.objectContaining({ reason: 'draining' }) }));
    expect((await unary(client, 'getSession', { id: sessionId }, alice())).response).toMatchObject({ id: sessionId });
    await closing;
  });
});
