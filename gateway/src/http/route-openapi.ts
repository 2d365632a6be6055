import type { RouteConfig } from '@asteasolutions/zod-to-openapi';
import { OPERATIONS_SCOPE } from '../features/auth/scopes.js';
import { PROBLEM_CONTENT_TYPE } from './problem-middleware.js';
import { ProblemSchema } from './problem-schema.js';
import type { z } from 'zod';

/**
 * Who may call a route, declared where the route is defined:
 * 'public'; 'internal' (operators' endpoints: callers on INTERNAL_ALLOW_LIST,
 * or anyone with METRICS_PUBLIC, or else a principal with `operations:read`); or an
 * authenticated principal holding `scope` (null: any authenticated principal).
 */
export type RouteAuth = 'public' | 'internal' | { scope: string | null };

export type OpenApiResponse = Exclude<RouteConfig['responses'][string], { $ref: string }>;

export interface ResponseSpec {
  description: string;
  schema?: z.ZodType;
  /** Defaults to application/json, or problem+json for 4xx/5xx. */
  contentType?: string;
  headers?: OpenApiResponse['headers'];
  /** OpenAPI links: operations a client can call next with values from this response. */
  links?: OpenApiResponse['links'];
}

/** What documenting a route reads of its declaration (RouteSpec in route.ts). */
export interface DocumentedRoute {
  method: 'get' | 'post' | 'put' | 'delete';
  /** OpenAPI-style path, e.g. /api/device/{deviceId}. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tags: string[];
  auth: RouteAuth;
  request?: { params?: z.ZodObject<z.ZodRawShape>; query?: z.ZodObject<z.ZodRawShape>; body?: z.ZodType };
  responses: Record<number, ResponseSpec>;
  /** How this route's errors are documented, when its front writes them in its own shape (default: problem+json). */
  errorBody?: { schema: z.ZodType; contentType: string };
}

/*
 * How a route is documented in the OpenAPI document, from its declaration:
 * the statuses its guards can answer, its own responses, security and body.
 */

/**
 * Who may call, as OpenAPI 3.1 says it: no requirement for public routes;
 * otherwise a bearer token or an API key, with the scope the route needs as
 * the requirement's role (3.1 allows roles for every scheme type).
 */
function securityOf(auth: RouteAuth): RouteConfig['security'] {
  if (auth === 'public') return [];
  const roles = auth === 'internal' ? [OPERATIONS_SCOPE] : auth.scope ? [auth.scope] : [];
  return [{ bearerAuth: roles }, { apiKeyAuth: roles }];
}

/**
 * What any route that sends work to a worker can also answer, besides its
 * guards' statuses: spread first into its `responses`, then its own words.
 */
export const WORKER_REFUSALS: Record<number, ResponseSpec> = Object.freeze({
  404: { description: 'Unknown model, device or worker.' },
  409: { description: 'The model does not run this task, or its state forbids it now.' },
  422: { description: 'Valid by this document, but not for what it names: an input the model cannot read, a dtype the device lacks.' },
  503: { description: 'No worker can take it now, or the gateway is at a capacity limit; see Retry-After.' },
  504: { description: 'The worker did not answer in time.' },
});

const RATE_LIMIT_HEADERS = {
  RateLimit: { description: 'Remaining quota of each limit that applies (IETF draft 8).', schema: { type: 'string' as const } },
  'RateLimit-Policy': { description: 'The limits that apply: quota and window of each (IETF draft 8).', schema: { type: 'string' as const } },
};
const RETRY_AFTER = { description: 'Seconds to wait before retrying.', schema: { type: 'integer' as const, minimum: 0 } };

/**
 * The statuses every route of a kind can answer, whatever its handler does:
 * the guards mountRoutes puts in front of it, in their order.
 */
function guardResponses(spec: DocumentedRoute): Record<number, ResponseSpec> {
  const all: Record<number, ResponseSpec> = {};
  if (spec.request) all[400] = { description: 'The request failed validation; `errors` names each field.' };
  if (spec.auth !== 'public') all[401] = { description: 'Missing or invalid credentials.' };
  if (spec.auth === 'internal') all[403] = { description: `From outside INTERNAL_ALLOW_LIST: lacks the '${OPERATIONS_SCOPE}' scope.` };
  if (typeof spec.auth === 'object' && spec.auth.scope) all[403] = { description: `Lacks the '${spec.auth.scope}' scope.` };
  if (/\{\w+\}/.test(spec.path)) all[404] = { description: 'Nothing by that name or id.' };
  if (spec.request?.body) {
    all[413] = { description: 'The body exceeds REQUEST_BODY_LIMIT_BYTES.' };
    all[415] = { description: 'The body is not application/json.' };
  }
  all[429] = { description: 'A rate limit was reached; retry after `Retry-After` seconds.', headers: { 'Retry-After': { ...RETRY_AFTER, required: true }, ...RATE_LIMIT_HEADERS } };
  if (spec.auth !== 'public') {
    all[503] = { description: 'The gateway is draining, has no capacity, or cannot reach its database; retry after `Retry-After` seconds.', headers: { 'Retry-After': RETRY_AFTER } };
  }
  return all;
}

export function toOpenApi(spec: DocumentedRoute): RouteConfig {
  const responses: RouteConfig['responses'] = {};
  const guards = guardResponses(spec);
  const all: Record<number, ResponseSpec> = { ...guards, ...spec.responses };
  for (const [status, response] of Object.entries(all)) {
    const isProblem = Number(status) >= 400;
    const schema = response.schema ?? (isProblem ? (spec.errorBody?.schema ?? ProblemSchema) : undefined);
    const contentType = response.contentType ?? (isProblem ? (spec.errorBody?.contentType ?? PROBLEM_CONTENT_TYPE) : 'application/json');
    const headers = response.headers ?? guards[Number(status)]?.headers;
    responses[status] = {
      description: response.description,
      ...(headers ? { headers } : {}),
      ...(response.links ? { links: response.links } : {}),
      ...(schema ? { content: { [contentType]: { schema } } } : {}),
    };
  }
  const request: RouteConfig['request'] = {};
  if (spec.request?.params) request.params = spec.request.params;
  if (spec.request?.query) request.query = spec.request.query;
  if (spec.request?.body) {
    // The validator reads a missing body as {} (parseRouteInput): required exactly when {} is refused.
    request.body = { required: !spec.request.body.safeParse({}).success, content: { 'application/json': { schema: spec.request.body } } };
  }
  return {
    method: spec.method,
    path: spec.path,
    operationId: spec.operationId,
    summary: spec.summary,
    ...(spec.description ? { description: spec.description } : {}),
    tags: spec.tags,
    security: securityOf(spec.auth),
    request,
    responses,
  };
}
