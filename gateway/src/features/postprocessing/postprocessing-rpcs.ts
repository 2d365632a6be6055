import { defineRpc, type RpcSpec } from '../../grpc/rpc.js';
import { sessionMessage } from '../inference/inference-message.js';
import { presentSession } from '../sessions/session-schemas.js';
import type { EnhanceRequest, UpscaleRequest } from './postprocessing-schemas.js';
import type { PostprocessingService } from './postprocessing-service.js';

/** Upscale and enhance over the same PostprocessingService as the REST routes. */
export function postprocessingRpcs(postprocessing: PostprocessingService): RpcSpec[] {
  const body = (message: Record<string, unknown>) => ({ body: message });
  return [
    defineRpc({
      name: 'Upscale',
      operationId: 'upscale',
      input: body,
      unary: async ({ body, context }) =>
        sessionMessage(presentSession(await postprocessing.upscale(body as UpscaleRequest, context.principal!, context.correlationId))),
    }),
    defineRpc({
      name: 'Enhance',
      operationId: 'enhance',
      input: body,
      unary: async ({ body, context }) =>
        sessionMessage(presentSession(await postprocessing.enhance(body as EnhanceRequest, context.principal!, context.correlationId))),
    }),
  ];
}
