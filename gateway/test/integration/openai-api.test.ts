import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { repoRoot } from '../../src/infra/paths.js';
import { bearer } from '../helpers/http.js';
import { samples } from '../helpers/metrics.js';
import { startRealGatewayOn, type GatewayOnDatabase } from '../helpers/real-gateway.js';
import { signToken } from '../helpers/tokens.js';
import { WORKER_VENV_PYTHON } from '../helpers/worker-python.js';

/**
 * The OpenAI-compatible routes called by the official OpenAI SDKs (the npm
 * package here, the Python package through examples/openai-client), pointed
 * at the real gateway with a real Python worker and the demo models.
 */
const INFERENCE_LIMIT = 40;
const TEXTS = ['A man is eating food.', 'The stock market fell sharply today.', 'hello'];
let real: GatewayOnDatabase;
let models: string;
let outputs: string;
let key: string;
let limitedKey: string;
let tokenIds: number[][];
let client: OpenAI;

const admin = () => bearer(signToken({ sub: 'root', scope: 'admin' }));
const http = (path: string, init: { method?: string; body?: unknown; headers?: Record<string, string> } = {}) =>
  fetch(`${real.url}${path}`, {
    method: init.method ?? (init.body ? 'POST' : 'GET'),
    headers: { ...(init.body ? { 'content-type': 'application/json' } : {}), ...(init.headers ?? bearer(key)) },
    ...(init.body ? { body: JSON.stringify(init.body) } : {}),
  });
const createKey = async (name: string, scopes = ['inference']) => {
  const response = await http('/api/admin/keys', { body: { name, scopes }, headers: admin() });
  expect(response.status).toBe(201);
  return ((await response.json()) as { key: string }).key;
};
/** The native route's vectors for the same input (normalized, as /v1/embeddings returns them). */
const native = async (parameters: Record<string, unknown>, model = 'minilm'): Promise<number[][]> => {
  const response = await http('/api/inference/execute', { body: { task: 'text-embedding', model, parameters: { normalize: true, ...parameters } } });
  expect(response.status).toBe(200);
  return ((await response.json()) as { result: { embeddings: number[][] } }).result.embeddings;
};
const maxDifference = (a: number[][], b: number[][]) => {
  expect(a.map((row) => row.length)).toEqual(b.map((row) => row.length));
  return Math.max(...a.flatMap((row, i) => row.map((value, j) => Math.abs(value - b[i]![j]!))));
};
const sdk = (apiKey: string, options: Partial<ConstructorParameters<typeof OpenAI>[0]> = {}) =>
  new OpenAI({ apiKey, baseURL: `${real.url}/v1`, maxRetries: 0, ...options });
const rejections = async (limiter: string) =>
  samples(await (await fetch(`${real.url}/metrics`)).text(), 'device_ops_gateway_rate_limit_rejections_total')
    .filter((s) => s.labels.limiter === limiter)
    .reduce((sum, s) => sum + s.value, 0);
const sessionRow = (id: string) => real.gateway.database.knex('sessions').where({ id }).first();

beforeAll(async () => {
  // The demo models, plus MiniLM declared as trained for truncation (its manifest lists dimensions).
  models = mkdtempSync(join(tmpdir(), 'device-ops-openai-models-'));
  for (const name of ['minilm', 'tiny-sd']) cpSync(join(inject('demoModels'), name), join(models, name), { recursive: true });
  cpSync(join(models, 'minilm'), join(models, 'minilm-mrl'), { recursive: true });
  const manifestPath = join(models, 'minilm-mrl', 'manifest.json');
  const { name: _name, ...manifest } = JSON.parse(readFileSync(manifestPath, 'utf8')) as Record<string, unknown>;
  writeFileSync(manifestPath, JSON.stringify({ ...manifest, dimensions: [128, 256] }));
  outputs = mkdtempSync(join(tmpdir(), 'device-ops-outputs-'));
  real = await startRealGatewayOn('sqlite', {
    MODEL_DIRECTORY: models,
    OUTPUT_DIRECTORY: outputs,
    RATE_LIMIT_INFERENCE_PER_PRINCIPAL: String(INFERENCE_LIMIT),
    // Long enough that Retry-After exceeds what the SDKs wait for: they back off on their own and give up.
    RATE_LIMIT_WINDOW_SECONDS: '3600',
    RATE_LIMIT_PER_PRINCIPAL: '1000',
    RATE_LIMIT_PER_IP: '5000',
  });
  key = await createKey('openai-sdk');
  limitedKey = await createKey('openai-limited');
  client = sdk(key);
  // MiniLM's own token ids for the texts (special tokens included), from its tokenizer.
  const script = 'import json,sys\nfrom transformers import AutoTokenizer\nt=AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True)\nprint(json.dumps([t(x)["input_ids"] for x in json.loads(sys.argv[2])]))';
  const { stdout } = await promisify(execFile)(WORKER_VENV_PYTHON, ['-c', script, join(models, 'minilm'), JSON.stringify(TEXTS)], {
    env: { PATH: process.env.PATH, HF_HUB_OFFLINE: '1' },
  });
  tokenIds = JSON.parse(stdout) as number[][];
});

afterAll(async () => {
  await real?.close();
});

describe('the official OpenAI npm SDK', () => {
  it('embeds one text, as the native route does, and records the session', async () => {
    const { data: response, response: raw } = await client.embeddings
      .create({ model: 'minilm', input: TEXTS[0]!, encoding_format: 'float' })
      .withResponse();
    expect(response).toMatchObject({ object: 'list', model: 'minilm', data: [{ object: 'embedding', index: 0 }] });
    expect(response.data[0]!.embedding).toHaveLength(384);
    expect(response.usage).toEqual({ prompt_tokens: tokenIds[0]!.length, total_tokens: tokenIds[0]!.length });
    expect(maxDifference(response.data.map((d) => d.embedding), await native({ texts: [TEXTS[0]] }))).toBeLessThan(1e-6);
    const sessionId = raw.headers.get('x-session-id')!;
    expect(await sessionRow(sessionId)).toMatchObject({ status: 'succeeded', task: 'text-embedding', model: 'minilm' });
    const session = (await (await http(`/api/inference/sessions/${sessionId}`)).json()) as { owner: string };
    expect(session.owner).toMatch(/^key:/);
  });

  it('embeds many texts, and token arrays, equal to the native route for the same inputs', async () => {
    const many = await client.embeddings.create({ model: 'minilm', input: TEXTS, encoding_format: 'float' });
    expect(many.data.map((d) => d.index)).toEqual([0, 1, 2]);
    const fromTexts = many.data.map((d) => d.embedding);
    expect(maxDifference(fromTexts, await native({ texts: TEXTS }))).toBeLessThan(1e-6);
    expect(many.usage.prompt_tokens).toBe(tokenIds.flat().length);

    const tokens = await client.embeddings.create({ model: 'minilm', input: tokenIds, encoding_format: 'float' });
    const fromTokens = tokens.data.map((d) => d.embedding);
    expect(maxDifference(fromTokens, await native({ tokenIds }))).toBeLessThan(1e-6);
    // The texts' own token ids give the texts' vectors.
    expect(maxDifference(fromTokens, fromTexts)).toBeLessThan(1e-5);
    expect(tokens.usage.prompt_tokens).toBe(tokenIds.flat().length);
    // One token array alone (a flat list of ids) is one input.
    const one = await client.embeddings.create({ model: 'minilm', input: tokenIds[1]!, encoding_format: 'float' });
    expect(maxDifference([one.data[0]!.embedding], [fromTexts[1]!])).toBeLessThan(1e-5);
  });

  it('sends base64 by default and decodes it to the same floats', async () => {
    const seen: string[] = [];
    const recording = sdk(key, {
      fetch: async (url: string | URL | Request, init?: RequestInit) => {
        seen.push(String(init?.body));
        return fetch(url, init);
      },
    });
    const decoded = await recording.embeddings.create({ model: 'minilm', input: TEXTS });
    expect(JSON.parse(seen[0]!)).toMatchObject({ encoding_format: 'base64' });
    const floats = await client.embeddings.create({ model: 'minilm', input: TEXTS, encoding_format: 'float' });
    expect(maxDifference(decoded.data.map((d) => d.embedding), floats.data.map((d) => d.embedding))).toBeLessThan(1e-7);
    // On the wire: little-endian float32 bytes.
    const wire = (await (await http('/v1/embeddings', { body: { model: 'minilm', input: 'hello', encoding_format: 'base64' } })).json()) as {
      data: { embedding: string }[];
    };
    const bytes = Buffer.from(wire.data[0]!.embedding, 'base64');
    expect(bytes.length).toBe(384 * 4);
    expect(bytes.readFloatLE(0)).toBeCloseTo(floats.data[2]!.embedding[0]!, 6);
  });

  it('truncates to `dimensions` where the model is trained for it, and names the parameter where not', async () => {
    const cut = await client.embeddings.create({ model: 'minilm-mrl', input: TEXTS, dimensions: 128, encoding_format: 'float' });
    expect(cut.data.map((d) => d.embedding.length)).toEqual([128, 128, 128]);
    for (const row of cut.data) expect(Math.hypot(...row.embedding)).toBeCloseTo(1, 5);
    const full = await native({ texts: TEXTS, normalize: false }, 'minilm-mrl');
    const expected = full.map((row) => {
      const head = row.slice(0, 128);
      const norm = Math.hypot(...head);
      return head.map((value) => value / norm);
    });
    expect(maxDifference(cut.data.map((d) => d.embedding), expected)).toBeLessThan(1e-5);

    const refused = await client.embeddings.create({ model: 'minilm', input: 'hi', dimensions: 128 }).catch((e: unknown) => e);
    // Valid by the document, not for this model: 422 (ADR 0029).
    expect(refused).toBeInstanceOf(OpenAI.UnprocessableEntityError);
    expect((refused as InstanceType<typeof OpenAI.UnprocessableEntityError>).error).toMatchObject({
      type: 'invalid_request_error',
      param: 'dimensions',
      message: expect.stringContaining('not trained for truncation'),
    });
  });

  it('generates a decodable PNG with the demo pipeline, as base64 and as a URL', async () => {
    const b64 = await client.images.generate({ model: 'tiny-sd', prompt: 'a kite', size: '64x64', response_format: 'b64_json', steps: 3, seed: 5 } as never);
    expect(b64.data).toHaveLength(1);
    const png = Buffer.from(b64.data![0]!.b64_json!, 'base64');
    expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    expect(png.readUInt32BE(16)).toBe(64); // IHDR width
    expect(png.readUInt32BE(20)).toBe(64); // IHDR height
    expect(b64).toMatchObject({ output_format: 'png', size: '64x64' });

    const { data: byUrl, response } = await client.images
      .generate({ model: 'tiny-sd', prompt: 'a kite', size: '64x64', n: 2, response_format: 'url', steps: 3, seed: 5 } as never)
      .withResponse();
    expect(byUrl.data).toHaveLength(2);
    expect(response.headers.get('x-seed')).toBe('5');
    const first = await fetch(byUrl.data![0]!.url!, { headers: bearer(key) });
    expect(first.status).toBe(200);
    expect(first.headers.get('content-type')).toBe('image/png');
    // The same seed, prompt and size: the same pixels as the base64 answer.
    expect(Buffer.from(await first.arrayBuffer())).toEqual(png);
    expect(await sessionRow(response.headers.get('x-session-id')!)).toMatchObject({ status: 'succeeded', task: 'text-to-image' });
  });

  it('lists the demo models with their tasks, and retrieves one', async () => {
    const listed = [];
    for await (const model of client.models.list()) listed.push(model);
    expect(listed.map((m) => m.id).sort()).toEqual(['minilm', 'minilm-mrl', 'tiny-sd']);
    expect(listed.find((m) => m.id === 'tiny-sd')).toMatchObject({ object: 'model', owned_by: 'device-operations', tasks: expect.arrayContaining(['text-to-image']) });
    expect(await client.models.retrieve('minilm')).toMatchObject({ id: 'minilm', tasks: ['text-embedding'] });
    expect(await client.models.retrieve('nope').catch((e: unknown) => e)).toBeInstanceOf(OpenAI.NotFoundError);
  });

  it('answers a wrong key with AuthenticationError, a missing scope with PermissionDeniedError', async () => {
    const wrong = await sdk('dok_notakey000_000000000000000000000000000000000000000').embeddings.create({ model: 'minilm', input: 'x' }).catch((e: unknown) => e);
    expect(wrong).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((wrong as InstanceType<typeof OpenAI.AuthenticationError>).error).toEqual({
      message: 'A valid bearer token or API key is required.',
      type: 'authentication_error',
      param: null,
      code: 'invalid_api_key',
    });
    // A JWT works the same way, as the same Bearer header.
    const jwtClient = sdk(signToken({ sub: 'jwt-user', scope: 'inference' }));
    expect((await jwtClient.embeddings.create({ model: 'minilm', input: 'x' })).data).toHaveLength(1);
    const readOnly = sdk(signToken({ sub: 'reader', scope: 'read' }));
    expect(await readOnly.embeddings.create({ model: 'minilm', input: 'x' }).catch((e: unknown) => e)).toBeInstanceOf(OpenAI.PermissionDeniedError);
  });

  it('answers an unknown model with NotFoundError, and bad input with BadRequestError naming the parameter', async () => {
    const unknown = await client.embeddings.create({ model: 'no-such-model', input: 'x' }).catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(OpenAI.NotFoundError);
    expect((unknown as InstanceType<typeof OpenAI.NotFoundError>).error).toMatchObject({ code: 'model_not_found', param: 'model' });
    const empty = await client.embeddings.create({ model: 'minilm', input: [] }).catch((e: unknown) => e);
    expect(empty).toBeInstanceOf(OpenAI.BadRequestError);
    expect((empty as InstanceType<typeof OpenAI.BadRequestError>).error).toMatchObject({ param: 'input', type: 'invalid_request_error' });
    const size = await client.images.generate({ model: 'tiny-sd', prompt: 'x', size: '100x100' as never }).catch((e: unknown) => e);
    expect(size).toBeInstanceOf(OpenAI.BadRequestError);
    expect((size as InstanceType<typeof OpenAI.BadRequestError>).error).toMatchObject({ param: 'size', message: expect.stringContaining('multiple of 8') });
    // 409 is one the SDK would retry: the answer says not to, and it does not.
    let calls = 0;
    const counting = sdk(key, { maxRetries: 2, fetch: async (url: string | URL | Request, init?: RequestInit) => ((calls += 1), fetch(url, init)) });
    const wrongTask = await counting.embeddings.create({ model: 'tiny-sd', input: 'x' }).catch((e: unknown) => e);
    expect(wrongTask).toBeInstanceOf(OpenAI.ConflictError);
    expect((wrongTask as InstanceType<typeof OpenAI.ConflictError>).error).toMatchObject({ param: 'model', message: expect.stringContaining('not text-embedding') });
    expect(calls).toBe(1);
    // Native routes keep problem+json.
    const problem = await http('/api/inference/execute', { body: { task: 'text-embedding', model: 'no-such-model', parameters: { texts: ['x'] } } });
    expect(problem.headers.get('content-type')).toContain('application/problem+json');
    const openAiShape = await http('/v1/nowhere');
    expect(openAiShape.status).toBe(404);
    expect(await openAiShape.json()).toMatchObject({ error: { type: 'invalid_request_error', code: 'not-found' } });
  });

  it('answers over the rate limit with RateLimitError after the SDK retried on its own', async () => {
    // Fill the principal's inference budget with cheap refused requests (the limiter counts them before validation).
    for (let i = 0; i < INFERENCE_LIMIT; i += 1) {
      const response = await http('/v1/embeddings', { body: { model: 'minilm' }, headers: bearer(limitedKey) });
      expect(response.status).toBe(400);
    }
    const before = await rejections('inference');
    const retrying = sdk(limitedKey, { maxRetries: 2 });
    const limited = await retrying.embeddings.create({ model: 'minilm', input: 'x' }).catch((e: unknown) => e);
    expect(limited).toBeInstanceOf(OpenAI.RateLimitError);
    const error = limited as InstanceType<typeof OpenAI.RateLimitError>;
    expect(error.error).toMatchObject({ type: 'rate_limit_error', code: 'rate_limit_exceeded' });
    expect(Number(error.headers?.get('retry-after'))).toBeGreaterThan(60);
    // The first try and both retries reached the gateway and were refused.
    expect((await rejections('inference')) - before).toBe(3);
  });
});

describe('the official OpenAI Python SDK (examples/openai-client)', () => {
  const run = async (args: string[], apiKey = key) => {
    const outcome = await promisify(execFile)(WORKER_VENV_PYTHON, [join(repoRoot, 'examples', 'openai-client', 'client.py'), ...args], {
      env: { PATH: process.env.PATH, OPENAI_BASE_URL: `${real.url}/v1`, OPENAI_API_KEY: apiKey },
      maxBuffer: 16 * 1024 * 1024,
    }).then(
      (done) => ({ code: 0, stdout: done.stdout }),
      (failed: { code: number; stdout: string }) => ({ code: failed.code, stdout: failed.stdout }),
    );
    return { code: outcome.code, line: JSON.parse(outcome.stdout.trim()) as Record<string, any> };
  };

  it('embeds texts (base64 by default, and float) and token arrays, equal to the native route', async () => {
    const expected = await native({ texts: TEXTS });
    const byDefault = await run(['embed', ...TEXTS]);
    expect(byDefault.code).toBe(0);
    expect(maxDifference(byDefault.line.vectors, expected)).toBeLessThan(1e-6);
    expect(byDefault.line.usage).toEqual({ prompt_tokens: tokenIds.flat().length, total_tokens: tokenIds.flat().length });
    expect(await sessionRow(byDefault.line.sessionId)).toMatchObject({ status: 'succeeded' });
    expect(maxDifference((await run(['embed', ...TEXTS, '--format', 'float'])).line.vectors, expected)).toBeLessThan(1e-6);
    const tokens = await run(['embed-tokens', ...tokenIds.map((ids) => ids.join(','))]);
    expect(maxDifference(tokens.line.vectors, expected)).toBeLessThan(1e-5);
  });

  it('generates a PNG and lists the models', async () => {
    const image = await run(['image', 'a kite', '--size', '64x64', '--steps', '3', '--seed', '5']);
    expect(image.code).toBe(0);
    expect(Buffer.from(image.line.images[0], 'base64').subarray(1, 4).toString()).toBe('PNG');
    const listed = await run(['models']);
    expect(listed.line.models.map((m: { id: string }) => m.id).sort()).toEqual(['minilm', 'minilm-mrl', 'tiny-sd']);
  });

  it('raises AuthenticationError, NotFoundError and RateLimitError as it does against OpenAI', async () => {
    expect((await run(['models'], 'dok_wrong')).line.error).toMatchObject({ class: 'AuthenticationError', status: 401 });
    expect((await run(['embed', 'x', '--model', 'no-such-model'])).line.error).toMatchObject({ class: 'NotFoundError', status: 404 });
    const before = await rejections('inference');
    const limited = await run(['--max-retries', '2', 'embed', 'x'], limitedKey);
    expect(limited.code).toBe(1);
    expect(limited.line.error).toMatchObject({ class: 'RateLimitError', status: 429, body: { code: 'rate_limit_exceeded' } });
    // This SDK does not retry when Retry-After exceeds its 60 s maximum (the npm one backs off and retries): one try.
    expect((await rejections('inference')) - before).toBe(1);
  });
});

describe('the SDKs honour a short Retry-After and their retry goes through', () => {
  let short: GatewayOnDatabase;
  beforeAll(async () => {
    // A 2-second window: Retry-After is within what both SDKs wait for.
    short = await startRealGatewayOn('sqlite', { MODEL_DIRECTORY: models, RATE_LIMIT_WINDOW_SECONDS: '2', RATE_LIMIT_PER_PRINCIPAL: '2' });
  });
  afterAll(async () => {
    await short?.close();
  });

  it('waits out the window on a 429 and then answers', async () => {
    let calls = 0;
    const statuses: number[] = [];
    const counting = new OpenAI({
      apiKey: signToken({ sub: 'patient', scope: 'inference' }),
      baseURL: `${short.url}/v1`,
      maxRetries: 2,
      fetch: async (url: string | URL | Request, init?: RequestInit) => {
        calls += 1;
        const response = await fetch(url, init);
        statuses.push(response.status);
        return response;
      },
    });
    // Two calls use up a window; a later one meets 429, waits Retry-After, and succeeds in the next
    // window (six calls within a second span at most two windows: at least one meets the limit).
    for (let i = 0; i < 6; i += 1) {
      const listed = [];
      for await (const model of counting.models.list()) listed.push(model.id);
      expect(listed).toContain('minilm');
    }
    expect(statuses).toContain(429);
    expect(statuses.at(-1)).toBe(200);
    expect(calls).toBeGreaterThan(6);
  });
});
