import type { z } from 'zod';
import { defineRpc, type RpcSpec } from '../../grpc/rpc.js';
import type { LoadModelBody, UnloadModelBody, ValidateModelBody } from './model-schemas.js';
import type { ModelService } from './model-service.js';

/** The model rpcs over the same ModelService as the REST routes. */
export function modelRpcs(models: ModelService): RpcSpec[] {
  const body = (message: Record<string, unknown>) => ({ body: message });
  return [
    defineRpc({ name: 'ListModels', operationId: 'listModels', unary: ({ context }) => models.available(context.correlationId) }),
    defineRpc({ name: 'GetModelStatus', operationId: 'modelStatus', unary: ({ context }) => models.status(context.correlationId) }),
    defineRpc({
      name: 'ValidateModel',
      operationId: 'validateModel',
      input: body,
      unary: ({ body, context }) => {
        const request = body as z.output<typeof ValidateModelBody>;
        return models.validate(request.model, request.workerId, context.correlationId);
      },
    }),
    defineRpc({
      name: 'LoadModel',
      operationId: 'loadModel',
      input: body,
      unary: ({ body, context }) => models.load(body as z.output<typeof LoadModelBody>, context.correlationId),
    }),
    defineRpc({
      name: 'UnloadModel',
      operationId: 'unloadModel',
      input: body,
      unary: ({ body, context }) => models.unload(body as z.output<typeof UnloadModelBody>, context.correlationId),
    }),
  ];
}
