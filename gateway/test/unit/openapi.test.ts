import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getJson } from '../helpers/http.js';
import { startFakeGateway, type FakeGateway } from '../helpers/fake-app.js';

interface Operation {
  security?: unknown[];
  responses: Record<string, { content?: Record<string, unknown> }>;
}

describe('API documentation', () => {
  let gateway: FakeGateway;
  beforeAll(async () => {
    gateway = await startFakeGateway();
  });
  afterAll(() => gateway.close());

  it('serves an OpenAPI 3.1 document of every route', async () => {
    const { status, body } = await getJson(`${gateway.url}/api-docs/openapi.json`);
    expect(status).toBe(200);
    expect(body!.openapi).toBe('3.1.0');
    const paths = body!.paths as Record<string, Record<string, Operation>>;
    expect(Object.keys(paths).sort()).toEqual([
      '/api/admin/audit',
      '/api/admin/keys',
      '/api/admin/keys/{id}',
      '/api/auth/whoami',
      '/api/device/list',
      '/api/device/{deviceId}',
      '/api/device/{deviceId}/capabilities',
      '/api/device/{deviceId}/status',
      '/api/inference/capabilities',
      '/api/inference/execute',
      '/api/inference/outputs/{sessionId}/{file}',
      '/api/inference/sessions',
      '/api/inference/sessions/{id}',
      '/api/inference/sessions/{id}/events',
      '/api/inference/sessions/{id}/stream-token',
      '/api/inference/validate',
      '/api/memory/clear',
      '/api/memory/status',
      '/api/model/available',
      '/api/model/load',
      '/api/model/status',
      '/api/model/unload',
      '/api/model/validate',
      '/api/postprocessing/enhance',
      '/api/postprocessing/upscale',
      '/api/processing/batches',
      '/api/processing/batches/{id}',
      '/health',
      '/health/detailed',
      '/health/ready',
      '/metrics',
      '/metrics/workers/{workerId}',
      '/v1/embeddings',
      '/v1/images/generations',
      '/v1/models',
      '/v1/models/{model}',
    ]);
    // The OpenAI-compatible operations: tagged apart, their errors in OpenAI's shape.
    const embeddings = paths['/v1/embeddings']!.post! as Operation & { tags: string[] };
    expect(embeddings.tags).toEqual(['OpenAI-compatible']);
    expect(embeddings.security).toEqual([{ bearerAuth: ['inference'] }, { apiKeyAuth: ['inference'] }]);
    expect(Object.keys(embeddings.responses).sort()).toEqual(['200', '400', '401', '403', '404', '409', '413', '415', '422', '429', '503', '504']);
    expect(embeddings.responses['429']!.content).toEqual({ 'application/json': { schema: { $ref: '#/components/schemas/OpenAIError' } } });
    // Auth is part of each operation: public ones have none, the rest bearer.
    expect(paths['/health']!.get!.security).toEqual([]);
    expect(paths['/api/device/list']!.get!.security).toEqual([{ bearerAuth: [] }, { apiKeyAuth: [] }]);
    // The scope a route needs is the security requirement's role.
    expect(paths['/api/model/load']!.post!.security).toEqual([{ bearerAuth: ['models:manage'] }, { apiKeyAuth: ['models:manage'] }]);
    expect(paths['/api/admin/keys']!.post!.security).toEqual([{ bearerAuth: ['admin'] }, { apiKeyAuth: ['admin'] }]);
    expect(Object.keys(paths['/api/device/list']!.get!.responses).sort()).toEqual(['200', '401', '429', '503']);
    // Rate-limited answers say when to retry and which limits apply.
    expect(Object.keys((paths['/api/device/list']!.get!.responses['429'] as { headers: object }).headers).sort()).toEqual(['RateLimit', 'RateLimit-Policy', 'Retry-After']);
    // Operators' routes from outside the allow-list need operations:read.
    expect(paths['/metrics']!.get!.security).toEqual([{ bearerAuth: ['operations:read'] }, { apiKeyAuth: ['operations:read'] }]);
    expect(paths['/api/device/list']!.get!.responses['401']!.content).toHaveProperty(['application/problem+json']);
    const schemas = (body!.components as { schemas: Record<string, unknown> }).schemas;
    expect(Object.keys(schemas)).toEqual(expect.arrayContaining(['Device', 'DeviceList', 'DetailedHealth', 'Problem']));
  });

  it('states servers, license, which bodies are required, and links from what creates to what reads', async () => {
    const { body } = await getJson(`${gateway.url}/api-docs/openapi.json`);
    expect(body!.servers).toEqual([expect.objectContaining({ url: '/' })]);
    expect((body!.info as { license: unknown }).license).toEqual({ name: 'Apache-2.0', identifier: 'Apache-2.0' });
    type Op = { requestBody?: { required: boolean }; responses: Record<string, { links?: Record<string, { operationId: string }> }> };
    const paths = body!.paths as Record<string, Record<string, Op>>;
    expect(paths['/api/model/load']!.post!.requestBody!.required).toBe(true);
    // Clearing memory without a body clears every device: the body is optional, as the validator treats it.
    expect(paths['/api/memory/clear']!.post!.requestBody!.required).toBe(false);
    const links = paths['/api/inference/sessions']!.post!.responses['202']!.links!;
    expect(Object.values(links).map((l) => l.operationId).sort()).toEqual(['cancelSession', 'followSession', 'getOutput', 'getSession']);
    const operationIds = Object.values(paths).flatMap((ops) => Object.values(ops).map((op) => (op as { operationId?: string }).operationId));
    expect(operationIds.every((id) => typeof id === 'string')).toBe(true);
    expect(new Set(operationIds).size).toBe(operationIds.length);
    // Every operation the links name exists.
    for (const link of Object.values(paths).flatMap((ops) => Object.values(ops).flatMap((op) => Object.values(op.responses).flatMap((r) => Object.values(r.links ?? {}))))) {
      expect(operationIds).toContain(link.operationId);
    }
  });

  it('answers a known path with an undeclared method 405 with Allow, an unknown path 404', async () => {
    const trace = await fetch(`${gateway.url}/api/device/list`, { method: 'PATCH' });
    expect(trace.status).toBe(405);
    expect(trace.headers.get('allow')).toBe('GET, HEAD, OPTIONS');
    expect(trace.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(((await trace.json()) as { detail: string }).detail).toBe('/api/device/list does not answer PATCH; it answers GET, HEAD, OPTIONS.');
    const put = await fetch(`${gateway.url}/api/inference/sessions/3c1f4b6e-0000-4000-8000-000000000000`, { method: 'PUT' });
    expect(put.status).toBe(405);
    expect(put.headers.get('allow')).toBe('GET, HEAD, DELETE, OPTIONS');
    const openai = await fetch(`${gateway.url}/v1/embeddings`, { method: 'GET' });
    expect(openai.status).toBe(405);
    expect(((await openai.json()) as { error: { code: string } }).error.code).toBe('method-not-allowed');
    expect((await fetch(`${gateway.url}/api/nothing-here`, { method: 'PATCH' })).status).toBe(404);
  });

  it('renders Swagger UI at /api-docs', async () => {
    const response = await fetch(`${gateway.url}/api-docs/`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await response.text();
    expect(html).toContain('swagger-ui');
    const init = await fetch(`${gateway.url}/api-docs/swagger-ui-init.js`);
    expect(init.status).toBe(200);
    expect(await init.text()).toContain('/api-docs/openapi.json');
  });
});
