import { defineRoute, type RouteSpec } from '../../http/route.js';
import { WORKER_REFUSALS } from '../../http/route-openapi.js';
import { NEEDS_INFERENCE } from '../auth/scopes.js';
import { SessionSchema, presentSession } from '../sessions/session-schemas.js';
import { EnhanceBody, UpscaleBody } from './postprocessing-schemas.js';
import type { PostprocessingService } from './postprocessing-service.js';

export function postprocessingRoutes(postprocessing: PostprocessingService): RouteSpec[] {
  return [
    defineRoute({
      method: 'post',
      path: '/api/postprocessing/upscale',
      operationId: 'upscale',
      summary: 'Enlarge an image (Lanczos, or an upscaler model) — an uploaded one or a session output',
      tags: ['Postprocessing'],
      auth: NEEDS_INFERENCE,
      rateLimit: 'inference',
      request: { body: UpscaleBody },
      responses: { ...WORKER_REFUSALS, 200: { description: 'The finished session; its result lists the new file.', schema: SessionSchema } },
      handler: async ({ body, context }) => ({
        status: 200,
        body: presentSession(await postprocessing.upscale(body, context.principal!, context.correlationId)),
      }),
    }),
    defineRoute({
      method: 'post',
      path: '/api/postprocessing/enhance',
      operationId: 'enhance',
      summary: 'Adjust contrast, colour, sharpness and exposure of an uploaded image or a session output',
      tags: ['Postprocessing'],
      auth: NEEDS_INFERENCE,
      rateLimit: 'inference',
      request: { body: EnhanceBody },
      responses: { ...WORKER_REFUSALS, 200: { description: 'The finished session; its result lists the new file.', schema: SessionSchema } },
      handler: async ({ body, context }) => ({
        status: 200,
        body: presentSession(await postprocessing.enhance(body, context.principal!, context.correlationId)),
      }),
    }),
  ];
}
