import { defineRoute, type RouteSpec } from '../../http/route.js';
import { DetailedHealthSchema, LivenessSchema } from './health-schemas.js';
import type { HealthService } from './health-service.js';

export function healthRoutes(health: HealthService): RouteSpec[] {
  return [
    defineRoute({
      method: 'get',
      path: '/health',
      operationId: 'liveness',
      summary: 'Liveness of the gateway process',
      description: 'Cheap and dependency-free: 200 while the process can serve HTTP, whatever its workers do.',
      tags: ['Health'],
      auth: 'public',
      responses: { 200: { description: 'The gateway process is alive.', schema: LivenessSchema } },
      handler: async () => ({ status: 200, body: { status: 'ok' } }),
    }),
    defineRoute({
      method: 'get',
      path: '/health/detailed',
      operationId: 'detailedHealth',
      summary: "Every worker's health and the gateway's process facts",
      tags: ['Health'],
      auth: 'internal',
      responses: {
        200: { description: 'Healthy or degraded.', schema: DetailedHealthSchema },
        503: { description: 'Unhealthy: no worker is serving.', schema: DetailedHealthSchema, contentType: 'application/json' },
      },
      handler: async ({ context }) => {
        const report = await health.detailed(context.correlationId);
        return {
          status: report.status === 'unhealthy' ? 503 : 200,
          body: report,
          headers: { 'Cache-Control': 'no-store' },
        };
      },
    }),
  ];
}
