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
    expect(Object.keys(embeddings.responses).sort()).toEqual(['200', '400', '401', '403', '404', '409', '429', '503', '504']);
    expect(embeddings.responses['429']!.content).toEqual({ 'application/json': { schema: { $ref: '#/components/schemas/OpenAIError' } } });
    // Auth is part of each operation: public ones have none, the rest bearer.
    expect(paths['/health']!.get!.security).toEqual([]);
    expect(paths['/api/device/list']!.get!.security).toEqual([{ bearerAuth: [] }, { apiKeyAuth: [] }]);
    // The scope a route needs is the security requirement's role.
    expect(paths['/api/model/load']!.post!.security).toEqual([{ bearerAuth: ['models:manage'] }, { apiKeyAuth: ['models:manage'] }]);
    expect(paths['/api/admin/keys']!.post!.security).toEqual([{ bearerAuth: ['admin'] }, { apiKeyAuth: ['admin'] }]);
    expect(Object.keys(paths['/api/device/list']!.get!.responses).sort()).toEqual(['200', '401', '503']);
    expect(paths['/api/device/list']!.get!.responses['401']!.content).toHaveProperty(['application/problem+json']);
    const schemas = (body!.components as { schemas: Record<string, unknown> }).schemas;
    expect(Object.keys(schemas)).toEqual(expect.arrayContaining(['Device', 'DeviceList', 'DetailedHealth', 'Problem']));
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
