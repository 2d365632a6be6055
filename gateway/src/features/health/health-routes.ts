import { defineRoute, type RouteSpec } from '../../http/route.js';
import { z } from 'zod';
import { DetailedHealthSchema, LivenessSchema } from './health-schemas.js';
import type { Readiness } from './readiness.js';
import type { HealthService } from './health-service.js';

const ReadinessSchema = z
  .object({
    ready: z.boolean(),
    reasons: z.array(z.string()).meta({ description: 'Why not ready; empty when ready.' }),
    servingWorkers: z.number().int(),
  })
  .meta({ id: 'Readiness' });

export function healthRoutes(health: HealthService, readiness: Readiness): RouteSpec[] {
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
      path: '/health/ready',
      operationId: 'readiness',
      summary: 'Readiness: a worker serves, the database answers, the gateway is not draining',
      description: '200 when ready to take work, 503 with the reasons otherwise. For load balancers and orchestrators.',
      tags: ['Health'],
      auth: 'public',
      responses: {
        200: { description: 'Ready.', schema: ReadinessSchema },
        503: { description: 'Not ready; `reasons` says why.', schema: ReadinessSchema, contentType: 'application/json' },
      },
      handler: async () => {
        const report = await readiness.check();
        return { status: report.ready ? 200 : 503, body: report, headers: { 'Cache-Control': 'no-store' } };
      },
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
