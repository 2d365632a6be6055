import type { Request, Response } from 'express';
import { defineRoute, type RouteSpec } from '../../http/route.js';
import { WORKER_REFUSALS } from '../../http/route-openapi.js';
import { NEEDS_CREDENTIAL, NEEDS_INFERENCE } from '../auth/scopes.js';
import {
  EmbeddingsRequestSchema,
  EmbeddingsResponseSchema,
  ImagesRequestSchema,
  ImagesResponseSchema,
  ModelListSchema,
  ModelParams,
  OpenAIErrorSchema,
  OpenAIModelSchema,
} from './openai-schemas.js';
import type { OpenAiService } from './openai-service.js';

const TAGS = ['OpenAI-compatible'];
const ERROR_BODY = { schema: OpenAIErrorSchema, contentType: 'application/json' };
/** What a job-running route may answer besides its result (and 400/401/403, added for every route). */
const JOB_REFUSALS = {
  ...WORKER_REFUSALS,
  404: { description: 'Unknown model (`code: model_not_found`).' },
  429: { description: 'Over a rate limit; see Retry-After.' },
  503: { description: 'No worker can take the job now; see Retry-After.' },
  504: { description: 'The worker did not finish in time.' },
};

/** Aborts when the client leaves before its answer was written. */
function abandoned(res: Response): AbortSignal {
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  return controller.signal;
}

/** Where this gateway is, as the client reached it (NGINX's X-Forwarded-* honoured per TRUST_PROXY). */
const baseUrl = (req: Request) => `${req.protocol}://${req.get('host')}`;

/**
 * The OpenAI API's embeddings, images and models, so the official SDKs and
 * the tools built on them call the gateway unchanged (ADR 0027). Thin: the
 * service maps each onto a native inference session.
 */
export function openAiRoutes(openai: OpenAiService): RouteSpec[] {
  return [
    defineRoute({
      method: 'post',
      path: '/v1/embeddings',
      operationId: 'openaiCreateEmbeddings',
      summary: 'OpenAI-compatible embeddings',
      description:
        'As OpenAI\'s `POST /v1/embeddings`, over the native text-embedding task (same scheduling, limits and session ' +
        'records; the session id in `X-Session-Id`). Vectors are unit length. Authenticate with `Authorization: Bearer <API key or JWT>`.',
      tags: TAGS,
      auth: NEEDS_INFERENCE,
      rateLimit: 'inference',
      errorBody: ERROR_BODY,
      request: { body: EmbeddingsRequestSchema },
      responses: {
        200: { description: 'One vector per input, in order.', schema: EmbeddingsResponseSchema },
        ...JOB_REFUSALS,
        409: { description: 'The model does not embed text.' },
      },
      handler: async ({ body, context, res }) => {
        const answer = await openai.embeddings(body, context.principal!, context.correlationId, abandoned(res));
        return { status: 200, body: answer.body, headers: { 'X-Session-Id': answer.sessionId } };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/images/generations',
      operationId: 'openaiCreateImages',
      summary: 'OpenAI-compatible image generation',
      description:
        'As OpenAI\'s `POST /v1/images/generations`, over the native text-to-image task (the session id in ' +
        '`X-Session-Id`, the seed used in `X-Seed`). `seed`, `steps`, `negative_prompt` and `guidance_scale` are extensions.',
      tags: TAGS,
      auth: NEEDS_INFERENCE,
      rateLimit: 'inference',
      errorBody: ERROR_BODY,
      request: { body: ImagesRequestSchema },
      responses: {
        200: { description: 'The generated PNGs, as URLs or base64.', schema: ImagesResponseSchema },
        ...JOB_REFUSALS,
        409: { description: 'The model does not generate images from text.' },
      },
      handler: async ({ body, context, req, res }) => {
        const answer = await openai.images(body, context.principal!, context.correlationId, baseUrl(req), abandoned(res));
        return { status: 200, body: answer.body, headers: { 'X-Session-Id': answer.sessionId, ...answer.headers } };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/models',
      operationId: 'openaiListModels',
      summary: 'OpenAI-compatible model list',
      description: "The repository's models, with the tasks each runs (`tasks`, an extension).",
      tags: TAGS,
      auth: NEEDS_CREDENTIAL,
      errorBody: ERROR_BODY,
      responses: {
        200: { description: 'Every model the serving workers have.', schema: ModelListSchema },
        503: { description: 'No worker answered; see Retry-After.' },
      },
      handler: async ({ context }) => ({ status: 200, body: await openai.listModels(context.correlationId) }),
    }),
    defineRoute({
      method: 'get',
      path: '/v1/models/{model}',
      operationId: 'openaiGetModel',
      summary: 'OpenAI-compatible model',
      tags: TAGS,
      auth: NEEDS_CREDENTIAL,
      errorBody: ERROR_BODY,
      request: { params: ModelParams },
      responses: {
        200: { description: 'The model.', schema: OpenAIModelSchema },
        404: { description: 'No such model.' },
        503: { description: 'No worker answered; see Retry-After.' },
      },
      handler: async ({ params, context }) => ({ status: 200, body: await openai.getModel(params.model, context.correlationId) }),
    }),
  ];
}
