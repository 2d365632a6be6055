import { z } from 'zod';
import { defineRoute, type RouteSpec } from '../../http/route.js';
import { WORKER_REFUSALS } from '../../http/route-openapi.js';
import { InferenceRequestSchema } from '../inference/inference-schemas.js';
import { SessionSchema, presentSession } from '../sessions/session-schemas.js';
import type { BatchService } from './batch-service.js';
import { NEEDS_INFERENCE } from '../auth/scopes.js';

const BatchBody = z.strictObject({
  items: z.array(InferenceRequestSchema).min(1).max(100),
  concurrency: z.number().int().min(1).max(16).optional().meta({ description: 'Items running at once (default 2).' }),
});

const BatchSchema = z
  .object({
    id: z.string(),
    owner: z.string(),
    status: z.enum(['running', 'succeeded', 'failed', 'cancelled', 'interrupted', 'partial']),
    itemCount: z.number().int(),
    createdAt: z.iso.datetime(),
    finishedAt: z.iso.datetime().nullable(),
    progress: z.object({ finished: z.number().int(), total: z.number().int(), notStarted: z.number().int() }),
    counts: z.record(z.string(), z.number().int()).meta({ description: 'Sessions by status.' }),
    sessions: z.array(SessionSchema),
  })
  .meta({ id: 'Batch' });

const BatchIdParams = z.strictObject({ id: z.uuid({ error: 'must be a batch id (UUID)' }) });

export type BatchView = Awaited<ReturnType<BatchService['get']>>;
export const presentBatch = (view: BatchView) => ({
  id: view.batch.id,
  owner: view.batch.owner,
  status: view.batch.status,
  itemCount: view.batch.itemCount,
  createdAt: view.batch.createdAt.toISOString(),
  finishedAt: view.batch.finishedAt?.toISOString() ?? null,
  progress: view.progress,
  counts: view.counts,
  sessions: view.sessions.map(presentSession),
});

export function batchRoutes(batches: BatchService): RouteSpec[] {
  return [
    defineRoute({
      method: 'post',
      path: '/api/processing/batches',
      operationId: 'createBatch',
      summary: 'Run many inference items as one batch with its own progress',
      description: 'Every item is checked (model, task, device) before the batch is accepted; then each runs as a session of the batch.',
      tags: ['Processing'],
      auth: NEEDS_INFERENCE,
      rateLimit: 'inference',
      request: { body: BatchBody },
      responses: { ...WORKER_REFUSALS, 
        202: {
          description: 'Accepted; runs in the background.',
          schema: BatchSchema,
          headers: { Location: { description: 'The batch.', schema: { type: 'string' }, required: true } },
          links: {
            GetBatch: { operationId: 'getBatch', parameters: { id: '$response.body#/id' }, description: 'Read the batch and its items.' },
            CancelBatch: { operationId: 'cancelBatch', parameters: { id: '$response.body#/id' }, description: 'Cancel what has not finished.' },
          },
        },
      },
      handler: async ({ body, context }) => {
        const batch = await batches.create(body.items, body.concurrency ?? 2, context.principal!, context.correlationId);
        const view = await batches.get(batch.id, context.principal!);
        return { status: 202, body: presentBatch(view), headers: { Location: `/api/processing/batches/${batch.id}` } };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/processing/batches/{id}',
      operationId: 'getBatch',
      summary: 'A batch with its progress and sessions',
      tags: ['Processing'],
      auth: NEEDS_INFERENCE,
      request: { params: BatchIdParams },
      responses: { 200: { description: 'The batch.', schema: BatchSchema }, 404: { description: 'No such batch of yours.' } },
      handler: async ({ params, context }) => ({ status: 200, body: presentBatch(await batches.get(params.id, context.principal!)) }),
    }),
    defineRoute({
      method: 'delete',
      path: '/api/processing/batches/{id}',
      operationId: 'cancelBatch',
      summary: 'Cancel a batch: items not started are dropped, running ones cancelled',
      tags: ['Processing'],
      auth: NEEDS_INFERENCE,
      request: { params: BatchIdParams },
      responses: { 202: { description: 'Cancellation requested.', schema: BatchSchema } },
      handler: async ({ params, context }) => ({
        status: 202,
        body: presentBatch(await batches.cancel(params.id, context.principal!, context.correlationId)),
      }),
    }),
  ];
}
