import { defineRoute, type RouteSpec } from '../../http/route.js';
import { WORKER_REFUSALS } from '../../http/route-openapi.js';
import {
  LoadModelBody,
  LoadModelResultSchema,
  ModelListSchema,
  ModelStatusSchema,
  UnloadModelBody,
  UnloadModelResultSchema,
  ValidateModelBody,
  ValidateModelResultSchema,
} from './model-schemas.js';
import type { ModelService } from './model-service.js';
import { NEEDS_CREDENTIAL, NEEDS_MODELS_MANAGE } from '../auth/scopes.js';


export function modelRoutes(models: ModelService): RouteSpec[] {
  return [
    defineRoute({
      method: 'get',
      path: '/api/model/available',
      operationId: 'listModels',
      summary: "Every model in the workers' repositories, with its validation state and placements",
      tags: ['Models'],
      auth: NEEDS_CREDENTIAL,
      responses: { 200: { description: 'Models by name.', schema: ModelListSchema }, 503: { description: 'No worker answered.' } },
      handler: async ({ context }) => ({ status: 200, body: await models.available(context.correlationId) }),
    }),
    defineRoute({
      method: 'get',
      path: '/api/model/status',
      operationId: 'modelStatus',
      summary: 'What is loaded where, with the bytes each placement takes',
      tags: ['Models'],
      auth: NEEDS_CREDENTIAL,
      responses: { 200: { description: 'Loaded placements.', schema: ModelStatusSchema } },
      handler: async ({ context }) => ({ status: 200, body: await models.status(context.correlationId) }),
    }),
    defineRoute({
      method: 'post',
      path: '/api/model/validate',
      operationId: 'validateModel',
      summary: "Check a model's structure, checksums and weight headers without loading it",
      tags: ['Models'],
      auth: NEEDS_MODELS_MANAGE,
      audit: { action: 'model.validate', target: ({ body }) => body.model },
      request: { body: ValidateModelBody },
      responses: { ...WORKER_REFUSALS,  200: { description: 'The verdict and each problem found.', schema: ValidateModelResultSchema } },
      handler: async ({ body, context }) => ({
        status: 200,
        body: await models.validate(body.model, body.workerId, context.correlationId),
      }),
    }),
    defineRoute({
      method: 'post',
      path: '/api/model/load',
      operationId: 'loadModel',
      summary: 'Place a model on a device (validated first), reporting its measured footprint',
      tags: ['Models'],
      auth: NEEDS_MODELS_MANAGE,
      audit: { action: 'model.load', target: ({ body }) => (body.deviceId ? `${body.model}@${body.deviceId}` : body.model) },
      request: { body: LoadModelBody },
      responses: { ...WORKER_REFUSALS, 
        200: { description: 'Loaded (or already loaded).', schema: LoadModelResultSchema },
        404: { description: 'Unknown model or device.' },
        409: { description: 'The model failed validation.' },
        503: { description: 'It does not fit the device (the detail has the numbers), or no worker is serving.' },
      },
      handler: async ({ body, context }) => ({ status: 200, body: await models.load(body, context.correlationId) }),
    }),
    defineRoute({
      method: 'post',
      path: '/api/model/unload',
      operationId: 'unloadModel',
      summary: 'Free a model from one device or every device, reporting the bytes released',
      tags: ['Models'],
      auth: NEEDS_MODELS_MANAGE,
      audit: { action: 'model.unload', target: ({ body }) => (body.deviceId ? `${body.model}@${body.deviceId}` : body.model) },
      request: { body: UnloadModelBody },
      responses: { ...WORKER_REFUSALS, 
        200: { description: 'Unloaded.', schema: UnloadModelResultSchema },
        404: { description: 'Not loaded there.' },
        409: { description: 'It has jobs in flight.' },
      },
      handler: async ({ body, context }) => ({ status: 200, body: await models.unload(body, context.correlationId) }),
    }),
  ];
}
