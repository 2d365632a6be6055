import { createHash } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Dialect } from '../../src/infra/database/database.js';
import { DeviceListSchema } from '../../src/features/devices/device-schemas.js';
import { SessionPageSchema, SessionSchema } from '../../src/features/sessions/session-schemas.js';
import { dialectAvailable } from '../helpers/databases.js';
import { bearer, getJson } from '../helpers/http.js';
import { startRealGatewayOn, type GatewayOnDatabase } from '../helpers/real-gateway.js';
import { readSse, type SseEvent } from '../helpers/sse.js';
import { signToken } from '../helpers/tokens.js';
import { waitFor } from '../helpers/wait.js';

const alice = bearer(signToken({ sub: 'alice', scope: 'inference' }));
const bob = bearer(signToken({ sub: 'bob', scope: 'inference' }));
const manager = bearer(signToken({ sub: 'ops', scope: 'inference models:manage' }));
const admin = bearer(signToken({ sub: 'root', scope: 'admin' }));

const t2i = (parameters: Record<string, unknown> = {}) => ({
  task: 'text-to-image',
  model: 'tiny-sd',
  parameters: { prompt: 'a red bicycle', steps: 3, width: 64, height: 64, seed: 11, ...parameters },
});

describe.each(['sqlite', 'postgres'] as Dialect[])('REST API on %s', (dialect) => {
  let real: GatewayOnDatabase;
  let outputs: string;

  const post = (path: string, body: unknown, headers: Record<string, string> = alice) =>
    fetch(`${real.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  const json = async (response: Response) => ({ status: response.status, body: (await response.json()) as Record<string, any> });
  const rows = async (table: string) => real.gateway.database.knex(table).select('*');

  beforeAll(async () => {
    if (!dialectAvailable(dialect)) return;
    outputs = mkdtempSync(join(tmpdir(), 'device-ops-outputs-'));
    real = await startRealGatewayOn(dialect, { MODEL_DIRECTORY: inject('demoModels'), OUTPUT_DIRECTORY: outputs, LOG_LEVEL: 'warn' });
  });

  afterAll(() => real?.close());

  it.skipIf(!dialectAvailable(dialect))('uses the configured database', () => {
    expect(real.gateway.database.dialect).toBe(dialect);
  });

  // ------------------------------------------------------------ models and memory

  it.skipIf(!dialectAvailable(dialect))('lists, validates, loads and unloads models', async () => {
    const available = await getJson(`${real.url}/api/model/available`, alice);
    expect(available.status).toBe(200);
    const names = (available.body!.models as { name: string }[]).map((m) => m.name);
    expect(names).toEqual(['minilm', 'tiny-mlp', 'tiny-sd', 'tiny-upscaler']);

    expect((await post('/api/model/validate', { model: 'tiny-mlp' })).status).toBe(403);
    const validated = await json(await post('/api/model/validate', { model: 'tiny-mlp' }, manager));
    expect(validated).toMatchObject({ status: 200, body: { valid: true, problems: [], workerId: 'worker-0' } });

    const loaded = await json(await post('/api/model/load', { model: 'tiny-mlp', dtype: 'float32' }, manager));
    expect(loaded.status).toBe(200);
    expect(loaded.body.placement).toMatchObject({ workerId: 'worker-0', deviceId: 'worker-0:cpu', dtype: 'float32', footprintBytes: 60 });
    const status = await getJson(`${real.url}/api/model/status`, alice);
    expect(status.body!.placements).toEqual([expect.objectContaining({ model: 'tiny-mlp', footprintBytes: 60 })]);
    const memory = await getJson(`${real.url}/api/memory/status?deviceId=worker-0:cpu`, alice);
    expect((memory.body!.devices as any[])[0].models).toEqual([{ model: 'tiny-mlp', footprintBytes: 60 }]);

    const unloaded = await json(await post('/api/model/unload', { model: 'tiny-mlp' }, manager));
    expect(unloaded.body).toEqual({ model: 'tiny-mlp', freedBytes: 60, devices: ['worker-0:cpu'] });
    expect((await json(await post('/api/model/unload', { model: 'tiny-mlp' }, manager))).status).toBe(404);
    expect((await json(await post('/api/model/load', { model: 'ghost' }, manager))).status).toBe(404);
    const cleared = await json(await post('/api/memory/clear', { unloadIdle: true }, manager));
    expect(cleared).toMatchObject({ status: 200, body: { workers: ['worker-0'] } });
  });

  it.skipIf(!dialectAvailable(dialect))('describes a device, its live status and its capabilities', async () => {
    const list = DeviceListSchema.parse((await getJson(`${real.url}/api/device/list`, alice)).body);
    const cpu = list.devices[0]!;
    const one = await getJson(`${real.url}/api/device/${encodeURIComponent(cpu.id)}`, alice);
    expect(one.body).toMatchObject({ id: cpu.id, kind: 'cpu' });
    const status = await getJson(`${real.url}/api/device/${encodeURIComponent(cpu.id)}/status`, alice);
    expect(status.body).toMatchObject({ deviceId: cpu.id, workerId: 'worker-0', runningJobs: 0, queuedJobs: 0, queueCapacity: 64 });
    const capabilities = await getJson(`${real.url}/api/device/${encodeURIComponent(cpu.id)}/capabilities`, alice);
    expect(capabilities.body).toMatchObject({ dtypes: ['float32', 'bfloat16'], computeCapability: null });
    expect(capabilities.body!.tasks).toEqual(expect.arrayContaining(['text-to-image', 'text-embedding', 'tensor', 'upscale', 'enhance']));
    expect((await getJson(`${real.url}/api/device/GPU-none/status`, alice)).status).toBe(404);
  });

  // ------------------------------------------------------------ inference

  it.skipIf(!dialectAvailable(dialect))('runs text-to-image synchronously, records it and serves the PNG', async () => {
    const { status, body } = await json(await post('/api/inference/execute', t2i()));
    expect(status).toBe(200);
    const session = SessionSchema.parse(body);
    expect(session).toMatchObject({ status: 'succeeded', owner: 'jwt:alice', task: 'text-to-image', model: 'tiny-sd', workerId: 'worker-0' });
    const files = (session.result as any).files as { url: string; sha256: string; width: number }[];
    expect(files).toHaveLength(1);
    expect((session.result as any).seed).toBe(11);

    const png = await fetch(`${real.url}${files[0]!.url}`, { headers: alice });
    expect(png.status).toBe(200);
    expect(png.headers.get('content-type')).toBe('image/png');
    const bytes = Buffer.from(await png.arrayBuffer());
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(files[0]!.sha256);

    // Only to its owner (or an admin).
    expect((await fetch(`${real.url}${files[0]!.url}`, { headers: bob })).status).toBe(404);
    expect((await fetch(`${real.url}${files[0]!.url}`, { headers: admin })).status).toBe(200);

    const [row] = (await rows('sessions')).filter((r) => r.id === session.id);
    expect(row).toMatchObject({ owner: 'jwt:alice', status: 'succeeded', task: 'text-to-image', worker_id: 'worker-0' });
    const events = (await rows('session_events')).filter((r) => r.session_id === session.id).map((r) => r.type);
    expect(events[0]).toBe('accepted');
    expect(events.at(-1)).toBe('result');
    expect(events.filter((type) => type === 'progress')).toHaveLength(3);
  });

  it.skipIf(!dialectAvailable(dialect))('runs image-to-image and inpainting on uploaded images, at the requested size', async () => {
    // A real PNG to start from: a text-to-image output of this worker.
    const source = SessionSchema.parse((await json(await post('/api/inference/execute', t2i()))).body);
    const sourceFile = (source.result as any).files[0] as { url: string };
    const initImage = Buffer.from(await (await fetch(`${real.url}${sourceFile.url}`, { headers: alice })).arrayBuffer());
    // A mask: any image does (the worker reads it as grayscale, white = repaint); another output of this worker.
    const maskSession = SessionSchema.parse((await json(await post('/api/inference/execute', t2i({ seed: 5 })))).body);
    const maskImage = Buffer.from(await (await fetch(`${real.url}${(maskSession.result as any).files[0].url}`, { headers: alice })).arrayBuffer());

    const cases = [
      { task: 'image-to-image', parameters: { initImage: initImage.toString('base64'), strength: 0.6 }, width: 96, height: 64 },
      {
        task: 'inpainting',
        parameters: { initImage: initImage.toString('base64'), maskImage: maskImage.toString('base64') },
        width: 64,
        height: 96,
      },
    ];
    for (const { task, parameters, width, height } of cases) {
      const request = { task, model: 'tiny-sd', parameters: { prompt: 'the same, at night', steps: 3, seed: 3, width, height, ...parameters } };
      const { status, body } = await json(await post('/api/inference/execute', request));
      expect(status, JSON.stringify(body)).toBe(200);
      const session = SessionSchema.parse(body);
      expect(session).toMatchObject({ status: 'succeeded', task, model: 'tiny-sd', owner: 'jwt:alice' });
      const files = (session.result as any).files as { url: string; sha256: string }[];
      expect(files).toHaveLength(1);
      const png = Buffer.from(await (await fetch(`${real.url}${files[0]!.url}`, { headers: alice })).arrayBuffer());
      // The PNG signature, then IHDR's width and height (big-endian) as written in the file.
      expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
      expect([png.readUInt32BE(16), png.readUInt32BE(20)], task).toEqual([width, height]);
      expect(createHash('sha256').update(png).digest('hex')).toBe(files[0]!.sha256);

      const [row] = (await rows('sessions')).filter((r) => r.id === session.id);
      const recorded = typeof row.parameters === 'string' ? JSON.parse(row.parameters) : row.parameters;
      // Images are recorded by size, never as their bytes.
      expect(recorded).toMatchObject({ prompt: 'the same, at night', steps: 3, seed: 3, width, height, initImage: { bytes: initImage.length } });
      if (task === 'inpainting') expect(recorded.maskImage).toEqual({ bytes: maskImage.length });
      expect(JSON.stringify(recorded)).not.toContain(initImage.toString('base64').slice(0, 40));
    }
  });

  it.skipIf(!dialectAvailable(dialect))('streams a job as Server-Sent Events ending with the result', async () => {
    const response = await fetch(`${real.url}/api/inference/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...alice },
      body: JSON.stringify(t2i({ steps: 4 })),
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = await readSse(response);
    expect(events.map((e) => e.event)).toEqual(['accepted', 'queued', 'started', 'progress', 'progress', 'progress', 'progress', 'result']);
    expect(events.map((e) => Number(e.id))).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect((events.at(-1)!.data as any).files[0].width).toBe(64);
  });

  it.skipIf(!dialectAvailable(dialect))('runs a background session that is followed, resumed and fetched', async () => {
    const created = await post('/api/inference/sessions', t2i({ steps: 6 }));
    expect(created.status).toBe(202);
    const session = SessionSchema.parse(await created.json());
    expect(created.headers.get('location')).toBe(`/api/inference/sessions/${session.id}`);

    // Read up to the second progress event, then drop the connection.
    const abort = new AbortController();
    const first = await readSse(
      await fetch(`${real.url}/api/inference/sessions/${session.id}/events`, { headers: alice, signal: abort.signal }),
      (_event, all) => all.filter((e) => e.event === 'progress').length === 2,
      abort,
    );
    const lastSeen = first.at(-1)!.id!;
    // Reconnect as EventSource does: only what was missed, then the end.
    const rest = await readSse(
      await fetch(`${real.url}/api/inference/sessions/${session.id}/events`, { headers: { ...alice, 'last-event-id': lastSeen } }),
    );
    const ids = [...first, ...rest].map((e) => Number(e.id));
    expect(ids).toEqual(ids.map((_, i) => i + 1));
    expect(rest.at(-1)!.event).toBe('result');

    const finished = SessionSchema.parse((await getJson(`${real.url}/api/inference/sessions/${session.id}`, alice)).body);
    expect(finished.status).toBe('succeeded');
    // A later follower replays everything from the store.
    const replay = await readSse(await fetch(`${real.url}/api/inference/sessions/${session.id}/events`, { headers: alice }));
    expect(replay.map((e) => e.event)).toEqual([...first, ...rest].map((e) => e.event));
    // Other users cannot see it.
    expect((await getJson(`${real.url}/api/inference/sessions/${session.id}`, bob)).status).toBe(404);
  });

  it.skipIf(!dialectAvailable(dialect))('cancels a running session', async () => {
    const created = await post('/api/inference/sessions', t2i({ steps: 60, width: 256, height: 256 }));
    const session = SessionSchema.parse(await created.json());
    const seen: SseEvent[] = [];
    const stream = fetch(`${real.url}/api/inference/sessions/${session.id}/events`, { headers: alice }).then((r) =>
      readSse(r, (event) => {
        seen.push(event);
        return false;
      }),
    );
    await waitFor(async () => (seen.some((e) => e.event === 'progress') ? true : undefined), { what: 'progress' });
    const cancelled = await fetch(`${real.url}/api/inference/sessions/${session.id}`, { method: 'DELETE', headers: alice });
    expect(cancelled.status).toBe(202);
    const events = await stream;
    expect(events.at(-1)).toMatchObject({ event: 'cancelled', data: { reason: 'cancel-requested' } });
    const final = await waitFor(async () => {
      const s = SessionSchema.parse((await getJson(`${real.url}/api/inference/sessions/${session.id}`, alice)).body);
      return s.status === 'cancelled' ? s : undefined;
    });
    expect(final.finishedAt).not.toBeNull();
    const page = SessionPageSchema.parse((await getJson(`${real.url}/api/inference/sessions?status=cancelled`, alice)).body);
    expect(page.items.map((s) => s.id)).toContain(session.id);
  });

  it.skipIf(!dialectAvailable(dialect))('cancels the job when a streaming client disconnects', async () => {
    const abort = new AbortController();
    const response = await fetch(`${real.url}/api/inference/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...alice },
      body: JSON.stringify(t2i({ steps: 60, width: 256, height: 256 })),
      signal: abort.signal,
    });
    const events = await readSse(response, (e) => e.event === 'progress', abort);
    const sessionId = (events[0]!.data as { sessionId: string }).sessionId;
    const final = await waitFor(async () => {
      const s = SessionSchema.parse((await getJson(`${real.url}/api/inference/sessions/${sessionId}`, alice)).body);
      return s.status === 'cancelled' ? s : undefined;
    });
    expect(final.status).toBe('cancelled');
  });

  it.skipIf(!dialectAvailable(dialect))('embeds texts and runs tensors', async () => {
    const embedded = await json(
      await post('/api/inference/execute', {
        task: 'text-embedding',
        model: 'minilm',
        parameters: { texts: ['A man is eating food.', 'A man is eating bread.', 'Stocks fell sharply.'], normalize: true },
      }),
    );
    expect(embedded.status).toBe(200);
    const [a, b, c] = embedded.body.result.embeddings as number[][];
    const dot = (x: number[], y: number[]) => x.reduce((sum, v, i) => sum + v * y[i]!, 0);
    expect(dot(a!, b!)).toBeGreaterThan(dot(a!, c!) + 0.3);

    const x = Buffer.from(new Float32Array([0.1, 0.2, 0.3, 0.4]).buffer).toString('base64');
    const ran = await json(
      await post('/api/inference/execute', { task: 'tensor', model: 'tiny-mlp', parameters: { inputs: { x: { dtype: 'float32', shape: [1, 4], data: x } } } }),
    );
    expect(ran.status).toBe(200);
    expect(ran.body.result.tensors.y).toMatchObject({ dtype: 'float32', shape: [1, 3] });
  });

  it.skipIf(!dialectAvailable(dialect))('upscales and enhances a session output and an upload', async () => {
    const made = SessionSchema.parse((await json(await post('/api/inference/execute', t2i()))).body);
    const file = ((made.result as any).files[0] as { name: string }).name;
    const upscaled = await json(await post('/api/postprocessing/upscale', { source: { sessionId: made.id, file }, scale: 2 }));
    expect(upscaled.status).toBe(200);
    expect(upscaled.body.result.files[0]).toMatchObject({ width: 128, height: 128 });
    const png = await fetch(`${real.url}${upscaled.body.result.files[0].url}`, { headers: alice });
    const upload = Buffer.from(await png.arrayBuffer()).toString('base64');
    const enhanced = await json(await post('/api/postprocessing/enhance', { image: upload, adjustments: { contrast: 1.4, exposure: 0.9 } }));
    expect(enhanced.status).toBe(200);
    expect(enhanced.body.result.files[0]).toMatchObject({ width: 128, height: 128 });
    // Someone else's output is not a source.
    expect((await post('/api/postprocessing/upscale', { source: { sessionId: made.id, file } }, bob)).status).toBe(404);
  });

  it.skipIf(!dialectAvailable(dialect))('runs a batch with its own progress', async () => {
    const items = ['one', 'two', 'three'].map((text) => ({ task: 'text-embedding', model: 'minilm', parameters: { texts: [text] } }));
    const created = await json(await post('/api/processing/batches', { items, concurrency: 2 }));
    expect(created.status).toBe(202);
    const done = await waitFor(async () => {
      const { body } = await getJson(`${real.url}/api/processing/batches/${created.body.id}`, alice);
      return body!.status === 'succeeded' ? body : undefined;
    });
    expect(done).toMatchObject({ itemCount: 3, progress: { finished: 3, total: 3, notStarted: 0 }, counts: { succeeded: 3 } });
    const batchRows = (await rows('sessions')).filter((r) => r.batch_id === created.body.id);
    expect(batchRows).toHaveLength(3);
  });

  it.skipIf(!dialectAvailable(dialect))('lists capabilities and dry-runs a request with an estimate', async () => {
    const capabilities = await getJson(`${real.url}/api/inference/capabilities`, alice);
    expect(capabilities.status).toBe(200);
    const byTask = Object.fromEntries((capabilities.body!.tasks as { task: string; models: string[] }[]).map((t) => [t.task, t.models]));
    expect(byTask['text-to-image']).toEqual(['tiny-sd']);
    expect(byTask['text-embedding']).toEqual(['minilm']);
    expect(byTask['upscale']).toEqual(['tiny-upscaler']);
    expect(capabilities.body!.limits).toMatchObject({ maxImageSide: 2048, maxSteps: 150 });

    const before = (await rows('sessions')).length;
    const dry = await json(await post('/api/inference/validate', t2i({ steps: 4 })));
    expect(dry.status).toBe(200);
    expect(dry.body).toMatchObject({ valid: true, workerId: 'worker-0' });
    // Earlier tests ran tiny-sd text-to-image here: the estimate comes from them.
    expect(dry.body.estimate.seconds).toBeGreaterThan(0);
    expect(dry.body.estimate.memoryBytes).toBeGreaterThan(0);
    expect((await json(await post('/api/inference/validate', { ...t2i(), model: 'ghost' }))).status).toBe(404);
    // A dry run records nothing and runs nothing.
    expect((await rows('sessions')).length).toBe(before);
  });

  it.skipIf(!dialectAvailable(dialect))('cancels a batch: running items stop, pending ones never start', async () => {
    const items = Array.from({ length: 4 }, (_, i) => t2i({ steps: 60, width: 256, height: 256, seed: i }));
    const created = await json(await post('/api/processing/batches', { items, concurrency: 1 }));
    expect(created.status).toBe(202);
    await waitFor(async () => {
      const { body } = await getJson(`${real.url}/api/processing/batches/${created.body.id}`, alice);
      return (body!.sessions as { status: string }[]).some((s) => s.status === 'running') ? true : undefined;
    });
    const cancelled = await fetch(`${real.url}/api/processing/batches/${created.body.id}`, { method: 'DELETE', headers: alice });
    expect(cancelled.status).toBe(202);
    const done = await waitFor(async () => {
      const body = (await getJson(`${real.url}/api/processing/batches/${created.body.id}`, alice)).body as Record<string, any>;
      return body.status === 'cancelled' && body.progress.finished === body.sessions.length ? body : undefined;
    });
    // Every item is stored when the batch is accepted; the three still waiting end cancelled without reaching a worker.
    expect(done!.counts).toEqual({ cancelled: 4 });
    expect(done!.progress).toMatchObject({ total: 4, notStarted: 3 });
    expect((done!.sessions as { workerId: string | null }[]).filter((s) => s.workerId !== null)).toHaveLength(1);
    expect((await getJson(`${real.url}/api/processing/batches/${created.body.id}`, bob)).status).toBe(404);
  });

  // ------------------------------------------------------------ bad input

  it.skipIf(!dialectAvailable(dialect))('refuses bad input before any worker call or record', async () => {
    const before = (await rows('sessions')).length;
    const cases: [unknown, number, string][] = [
      [t2i({ width: 65 }), 400, 'body.parameters.width'],
      [t2i({ steps: 0 }), 400, 'body.parameters.steps'],
      [t2i({ prompt: '  ' }), 400, 'body.parameters.prompt'],
      [{ ...t2i(), colour: 'red' }, 400, 'body.colour'],
      [t2i({ sharpen: true }), 400, 'body.parameters.sharpen'],
      [{ ...t2i(), model: '../../etc' }, 400, 'body.model'],
      [{ ...t2i(), model: 'ghost' }, 404, 'ghost'],
      [{ ...t2i(), deviceId: 'GPU-nope' }, 404, 'GPU-nope'],
      [{ ...t2i(), task: 'text-embedding', parameters: { texts: ['x'] } }, 409, 'tiny-sd'],
      [{ task: 'fly', model: 'tiny-sd', parameters: {} }, 400, 'body.task'],
    ];
    for (const [body, status, fragment] of cases) {
      const response = await post('/api/inference/execute', body);
      expect(response.status, JSON.stringify(body)).toBe(status);
      expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(JSON.stringify(await response.json())).toContain(fragment);
    }
    const malformed = await fetch(`${real.url}/api/inference/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...alice },
      body: '{"task": ',
    });
    expect(malformed.status).toBe(400);
    const wrongType = await fetch(`${real.url}/api/inference/execute`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', ...alice },
      body: 'make me a picture',
    });
    expect(wrongType.status).toBe(415);
    const huge = await post('/api/inference/execute', t2i({ prompt: 'x'.repeat(17 * 1024 * 1024) }));
    expect(huge.status).toBe(413);
    expect((await rows('sessions')).length).toBe(before);
  });

  it.skipIf(!dialectAvailable(dialect))('answers 404 for an output path that escapes its session folder', async () => {
    const made = SessionSchema.parse((await json(await post('/api/inference/execute', t2i()))).body);
    for (const file of ['..%2F..%2Fetc%2Fpasswd', '..', 'image-9.png', '%2Fetc%2Fpasswd']) {
      const response = await fetch(`${real.url}/api/inference/outputs/${made.id}/${file}`, { headers: alice });
      expect(response.status, file).toBe(404);
    }
  });
});
