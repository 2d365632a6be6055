import { defineRpc, type RpcSpec } from '../../grpc/rpc.js';
import { inferenceBody, sessionMessage } from '../inference/inference-message.js';
import type { InferenceRequest } from '../inference/inference-schemas.js';
import type { BatchService } from './batch-service.js';
import { presentBatch, type BatchView } from './batch-routes.js';

const batchMessage = (view: BatchView) => {
  const body = presentBatch(view);
  return { ...body, sessions: body.sessions.map(sessionMessage) };
};

/** The batch rpcs over the same BatchService as the REST routes. */
export function batchRpcs(batches: BatchService): RpcSpec[] {
  return [
    defineRpc({
      name: 'CreateBatch',
      operationId: 'createBatch',
      input: (message) => {
        const items = (message.items ?? []) as Record<string, unknown>[];
        return { body: { ...message, items: items.map((item, index) => inferenceBody(item, `items.${index}.parameters`)) } };
      },
      unary: async ({ body, context }) => {
        const { items, concurrency } = body as { items: InferenceRequest[]; concurrency?: number };
        const batch = await batches.create(items, concurrency ?? 2, context.principal!, context.correlationId);
        return batchMessage(await batches.get(batch.id, context.principal!));
      },
    }),
    defineRpc({
      name: 'GetBatch',
      operationId: 'getBatch',
      input: (message) => ({ params: { id: message.id } }),
      unary: async ({ params, context }) => batchMessage(await batches.get(params.id as string, context.principal!)),
    }),
    defineRpc({
      name: 'CancelBatch',
      operationId: 'cancelBatch',
      input: (message) => ({ params: { id: message.id } }),
      unary: async ({ params, context }) => batchMessage(await batches.cancel(params.id as string, context.principal!, context.correlationId)),
    }),
  ];
}
