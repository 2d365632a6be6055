import type { OpenAPIRegistry, RouteConfig } from '@asteasolutions/zod-to-openapi';
import { Router, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { z } from 'zod';
import { ForbiddenError, UnsupportedMediaTypeError, ValidationError, type FieldProblem } from '../errors/gateway-error.js';
import type { RequestContext } from './request-context.js';
import { PROBLEM_CONTENT_TYPE } from './problem-middleware.js';
import { ProblemSchema } from './problem-schema.js';

/**
 * Who may call a route, declared where the route is defined:
 * 'public', or an authenticated principal holding `scope` (null: any
 * authenticated principal).
 */
export type RouteAuth = 'public' | { scope: string | null };

type Shape = z.ZodObject<z.ZodRawShape>;

export interface ResponseSpec {
  description: string;
  schema?: z.ZodType;
  /** Defaults to application/json, or problem+json for 4xx/5xx. */
  contentType?: string;
}

export interface HandlerResult {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

/** Returned by handlers that wrote the response themselves (event streams, files). */
export const HANDLED = Object.freeze({ handled: true as const });

export interface HandlerInput<P extends Shape, Q extends Shape, B extends z.ZodType> {
  params: z.output<P>;
  query: z.output<Q>;
  body: z.output<B>;
  context: RequestContext;
  /** The raw exchange, for handlers that stream or send files. */
  req: Request;
  res: Response;
}

export interface RouteSpec<P extends Shape = Shape, Q extends Shape = Shape, B extends z.ZodType = z.ZodType> {
  method: 'get' | 'post' | 'put' | 'delete';
  /** OpenAPI-style path, e.g. /api/device/{deviceId}. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tags: string[];
  auth: RouteAuth;
  request?: { params?: P; query?: Q; body?: B };
  responses: Record<number, ResponseSpec>;
  handler: (input: HandlerInput<P, Q, B>) => Promise<HandlerResult | typeof HANDLED>;
}

/** Helper that keeps the generic types of one route together. */
export function defineRoute<P extends Shape = Shape, Q extends Shape = Shape, B extends z.ZodType = z.ZodType>(
  spec: RouteSpec<P, Q, B>,
): RouteSpec<P, Q, B> {
  return spec;
}

export interface AuthMiddleware {
  middleware(): RequestHandler;
}

const toExpressPath = (path: string) => path.replace(/\{(\w+)\}/g, ':$1');

function problems(location: string, error: z.ZodError): FieldProblem[] {
  return error.issues.map((issue) => {
    const path = issue.path.map(String);
    // Unknown keys are reported on the object; name each key instead.
    if (issue.code === 'unrecognized_keys') {
      return { field: [location, ...path, ...issue.keys].join('.'), message: 'is not a known field' };
    }
    return { field: [location, ...path].join('.'), message: issue.message };
  });
}

function validator(spec: RouteSpec): RequestHandler {
  const { params, query, body } = spec.request ?? {};
  return (req: Request, _res: Response, next: NextFunction) => {
    if (body && hasBody(req) && !req.is('application/json')) {
      next(new UnsupportedMediaTypeError(`Send the body as application/json, not ${req.get('content-type') ?? 'no content type'}.`));
      return;
    }
    const found: FieldProblem[] = [];
    const parsed: Record<string, unknown> = {};
    for (const [location, schema, value] of [
      ['params', params, req.params],
      ['query', query, req.query],
      ['body', body, req.body],
    ] as const) {
      if (!schema) continue;
      const result = schema.safeParse(value ?? {});
      if (result.success) parsed[location] = result.data;
      else found.push(...problems(location, result.error));
    }
    if (found.length > 0) {
      next(new ValidationError(found));
      return;
    }
    validatedInput(req).validated = parsed;
    next();
  };
}

const hasBody = (req: Request) => Number(req.get('content-length') ?? 0) > 0 || req.get('transfer-encoding') !== undefined;

// Validated input travels on the request without widening Express's types.
const VALIDATED = Symbol('validated');
function validatedInput(req: Request): { validated: Record<string, unknown> } {
  const holder = req as unknown as { [VALIDATED]?: { validated: Record<string, unknown> } };
  holder[VALIDATED] ??= { validated: {} };
  return holder[VALIDATED];
}

function requireScope(scope: string | null): RequestHandler {
  return (req, _res, next) => {
    const principal = req.context.principal;
    if (scope && principal && !principal.scopes.includes(scope) && !principal.scopes.includes('admin')) {
      next(new ForbiddenError(`This route requires the '${scope}' scope.`));
      return;
    }
    next();
  };
}

function toOpenApi(spec: RouteSpec): RouteConfig {
  const responses: RouteConfig['responses'] = {};
  const all: Record<number, ResponseSpec> = { ...spec.responses };
  if (spec.auth !== 'public') all[401] ??= { description: 'Missing or invalid credentials.' };
  if (spec.auth !== 'public' && spec.auth.scope) all[403] ??= { description: `Lacks the '${spec.auth.scope}' scope.` };
  if (spec.request) all[400] ??= { description: 'The request failed validation; `errors` names each field.' };
  for (const [status, response] of Object.entries(all)) {
    const isProblem = Number(status) >= 400;
    const schema = response.schema ?? (isProblem ? ProblemSchema : undefined);
    const contentType = response.contentType ?? (isProblem ? PROBLEM_CONTENT_TYPE : 'application/json');
    responses[status] = {
      description: response.description,
      ...(schema ? { content: { [contentType]: { schema } } } : {}),
    };
  }
  const request: RouteConfig['request'] = {};
  if (spec.request?.params) request.params = spec.request.params;
  if (spec.request?.query) request.query = spec.request.query;
  if (spec.request?.body) request.body = { content: { 'application/json': { schema: spec.request.body } } };
  return {
    method: spec.method,
    path: spec.path,
    operationId: spec.operationId,
    summary: spec.summary,
    ...(spec.description ? { description: spec.description } : {}),
    tags: spec.tags,
    security: spec.auth === 'public' ? [] : [{ bearerAuth: [] }],
    request,
    responses,
  };
}

/**
 * Mount routes on a router and document each in the OpenAPI registry from
 * the same schemas that validate it. Order per route: authentication (so an
 * unauthenticated call costs nothing more), scope, validation, handler.
 */
export function mountRoutes(
  routes: readonly RouteSpec[],
  options: { registry: OpenAPIRegistry; auth: AuthMiddleware },
): Router {
  const router = Router();
  const authenticate = options.auth.middleware();
  for (const spec of routes) {
    options.registry.registerPath(toOpenApi(spec));
    const chain: RequestHandler[] = [];
    if (spec.auth !== 'public') chain.push(authenticate, requireScope(spec.auth.scope));
    if (spec.request) chain.push(validator(spec));
    chain.push(async (req, res) => {
      const validated = validatedInput(req).validated;
      const result = await spec.handler({
        params: validated.params ?? {},
        query: validated.query ?? {},
        body: validated.body,
        context: req.context,
        req,
        res,
      } as HandlerInput<Shape, Shape, z.ZodType>);
      if ('handled' in result) return;
      for (const [name, value] of Object.entries(result.headers ?? {})) res.setHeader(name, value);
      res.status(result.status).json(result.body);
    });
    router[spec.method](toExpressPath(spec.path), ...chain);
  }
  return router;
}
