import { defineRoute, type RouteSpec } from '../../http/route.js';
import { WORKER_REFUSALS } from '../../http/route-openapi.js';
import { NEEDS_CREDENTIAL, NEEDS_MODELS_MANAGE } from '../auth/scopes.js';
import { ClearMemoryBody, ClearResultSchema, MemoryStatusQuery, MemoryStatusSchema } from './memory-schemas.js';
import type { MemoryService } from './memory-service.js';

export function memoryRoutes(memory: MemoryService): RouteSpec[] {
  return [
    defineRoute({
      method: 'get',
      path: '/api/memory/status',
      operationId: 'memoryStatus',
      summary: 'Allocator and device memory per device, with each resident model',
      tags: ['Memory'],
      auth: NEEDS_CREDENTIAL,
      request: { query: MemoryStatusQuery },
      responses: { ...WORKER_REFUSALS,  200: { description: 'Per device.', schema: MemoryStatusSchema }, 404: { description: 'Unknown device.' } },
      handler: async ({ query, context }) => ({ status: 200, body: await memory.status(query.deviceId, context.correlationId) }),
    }),
    defineRoute({
      method: 'post',
      path: '/api/memory/clear',
      operationId: 'clearMemory',
      summary: 'Empty allocator caches (and optionally unload idle models); reports the bytes freed as measured',
      tags: ['Memory'],
      auth: NEEDS_MODELS_MANAGE,
      audit: { action: 'memory.clear', target: ({ body }) => body.deviceId ?? 'all devices' },
      request: { body: ClearMemoryBody },
      responses: { ...WORKER_REFUSALS,  200: { description: 'What was freed.', schema: ClearResultSchema }, 404: { description: 'Unknown device.' } },
      handler: async ({ body, context }) => ({ status: 200, body: await memory.clear(body, context.correlationId) }),
    }),
  ];
}
