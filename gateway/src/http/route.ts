import type { OpenAPIRegistry } from '@asteasolutions/zod-to-openapi';
import { Router, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { z } from 'zod';
import { ForbiddenError, UnsupportedMediaTypeError, ValidationError, type FieldProblem } from '../errors/gateway-error.js';
import { isAdmin, type Principal } from '../features/auth/principal.js';
import { OPERATIONS_SCOPE } from '../features/auth/scopes.js';
import { toOpenApi, type DocumentedRoute, type ResponseSpec } from './route-openapi.js';
import { NONE_REMOVED, type LayerName } from '../ablation/layers.js';

export type { ResponseSpec, RouteAuth } from './route-openapi.js';
import type { RequestContext } from './request-context.js';

type Shape = z.ZodObject<z.ZodRawShape>;

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

/** A route: what route-openapi.ts documents (DocumentedRoute), plus how it is guarded and handled. */
export interface RouteSpec<P extends Shape = Shape, Q extends Shape = Shape, B extends z.ZodType = z.ZodType>
  extends Omit<DocumentedRoute, 'request'> {
  request?: { params?: P; query?: Q; body?: B };
  /** Which per-principal limit counts this route: inference routes have their own, stricter one. */
  rateLimit?: 'default' | 'inference';
  /** A session stream token in `?access_token=` may stand for the credential (the session events route only; ADR 0028). */
  streamToken?: boolean;
  /** Management actions: recorded in the audit log with their outcome. */
  audit?: { action: string; target?: (input: HandlerInput<P, Q, B>) => string | null };
  handler: (input: HandlerInput<P, Q, B>) => Promise<HandlerResult | typeof HANDLED>;
}

/** Helper that keeps the generic types of one route together. */
export function defineRoute<P extends Shape = Shape, Q extends Shape = Shape, B extends z.ZodType = z.ZodType>(
  spec: RouteSpec<P, Q, B>,
): RouteSpec<P, Q, B> {
  return spec;
}

/** What mountRoutes puts in front of every route, besides validation. */
export interface RouteGuards {
  /** Authentication; `onFailure` sees each refused credential (audit of admin routes). */
  authenticate: (onFailure?: (req: Request, failure: { method: string; reason: string }) => void) => RequestHandler;
  /** Per client address, before any credential is checked. */
  perClient?: RequestHandler;
  /** On routes with `streamToken`: authenticates by `?access_token=` when present, else hands over to `fallback`. */
  streamToken?: (fallback: RequestHandler) => RequestHandler;
  /** Per principal, after authentication and before the body is parsed. */
  perPrincipal?: RequestHandler;
  inference?: RequestHandler;
  /** JSON body parser (size limit), run only on routes that take a body. */
  jsonBody: RequestHandler;
  /** Whether a request may use an 'internal' route without credentials. */
  internalAccess: (req: Request) => boolean;
  /** Records management actions and refused admin access. */
  audit?: (entry: { req: Request; action: string; target: string | null; outcome: 'success' | 'failure' | 'denied'; details?: Record<string, unknown> }) => void;
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

export interface RouteInputValues {
  params?: unknown;
  query?: unknown;
  body?: unknown;
}

/**
 * A route's input through its schemas: the parsed params, query and body,
 * or a ValidationError naming every field ("body.steps", "params.id"). The
 * one validation of both fronts: REST requests and gRPC messages.
 */
export function parseRouteInput(request: RouteSpec['request'], values: RouteInputValues): Record<string, unknown> {
  const { params, query, body } = request ?? {};
  const found: FieldProblem[] = [];
  const parsed: Record<string, unknown> = {};
  for (const [location, schema, value] of [
    ['params', params, values.params],
    ['query', query, values.query],
    ['body', body, values.body],
  ] as const) {
    if (!schema) continue;
    const result = schema.safeParse(value ?? {});
    if (result.success) parsed[location] = result.data;
    else found.push(...problems(location, result.error));
  }
  if (found.length > 0) throw new ValidationError(found);
  return parsed;
}

function validator(spec: RouteSpec): RequestHandler {
  return (req: Request, _res: Response, next: NextFunction) => {
    if (spec.request?.body && hasBody(req) && !req.is('application/json')) {
      next(new UnsupportedMediaTypeError(`Send the body as application/json, not ${req.get('content-type') ?? 'no content type'}.`));
      return;
    }
    try {
      validatedInput(req).validated = parseRouteInput(spec.request, req);
    } catch (error) {
      next(error);
      return;
    }
    next();
  };
}

/** In place of validation when the bench removes that layer: the handler gets the raw params, query and body. */
const unvalidated: RequestHandler = (req, _res, next) => {
  validatedInput(req).validated = { params: req.params, query: req.query, body: req.body };
  next();
};

const hasBody = (req: Request) => Number(req.get('content-length') ?? 0) > 0 || req.get('transfer-encoding') !== undefined;

// Validated input travels on the request without widening Express's types.
const VALIDATED = Symbol('validated');
function validatedInput(req: Request): { validated: Record<string, unknown> } {
  const holder = req as unknown as { [VALIDATED]?: { validated: Record<string, unknown> } };
  holder[VALIDATED] ??= { validated: {} };
  return holder[VALIDATED];
}

/** The refusal when `principal` lacks the scope an operation needs (admins hold every scope); null when allowed. Both fronts. */
export function scopeRefusal(scope: string | null, principal: Principal | null): ForbiddenError | null {
  if (!scope || !principal || principal.scopes.includes(scope) || isAdmin(principal)) return null;
  return new ForbiddenError(`This route requires the '${scope}' scope.`);
}

function requireScope(scope: string | null, onDenied?: (req: Request) => void): RequestHandler {
  return (req, _res, next) => {
    const refusal = scopeRefusal(scope, req.context.principal);
    if (refusal) {
      onDenied?.(req);
      next(refusal);
      return;
    }
    next();
  };
}

/**
 * Mount routes on a router and document each in the OpenAPI registry from
 * the same schemas that validate it. Order per route, cheapest refusal
 * first: per-client limit, authentication, scope, per-principal limit, body
 * parsing, validation, handler (with its audit entry). `without` is for the
 * bench's layer ablation only (ablation/layers.ts): body parsing or
 * validation left out of every route.
 */
export function mountRoutes(
  routes: readonly RouteSpec[],
  options: { registry: OpenAPIRegistry; guards: RouteGuards; without?: ReadonlySet<LayerName> },
): Router {
  const router = Router();
  const { guards } = options;
  const without = options.without ?? NONE_REMOVED;
  const parseBodies = !without.has('body-parsing');
  const validate = !without.has('validation');
  for (const spec of routes) {
    options.registry.registerPath(toOpenApi(spec));
    const chain: RequestHandler[] = [];
    if (guards.perClient) chain.push(guards.perClient);
    if (spec.auth === 'internal') {
      const authenticate = guards.authenticate();
      const scope = requireScope(OPERATIONS_SCOPE);
      chain.push((req, res, next) => (guards.internalAccess(req) ? next() : authenticate(req, res, (error?: unknown) => (error ? next(error) : scope(req, res, next)))));
    } else if (spec.auth !== 'public') {
      const adminRoute = spec.auth.scope === 'admin';
      const auditRefusal = (outcome: 'failure' | 'denied') => (req: Request, failure?: { method: string; reason: string }) =>
        guards.audit?.({ req, action: 'auth.admin', target: `${spec.method.toUpperCase()} ${spec.path}`, outcome, ...(failure ? { details: { method: failure.method, reason: failure.reason } } : {}) });
      const authenticate = guards.authenticate(adminRoute ? auditRefusal('failure') : undefined);
      chain.push(spec.streamToken && guards.streamToken ? guards.streamToken(authenticate) : authenticate);
      chain.push(requireScope(spec.auth.scope, adminRoute ? auditRefusal('denied') : undefined));
      const limiter = spec.rateLimit === 'inference' ? guards.inference : guards.perPrincipal;
      if (limiter) chain.push(limiter);
    }
    if (spec.request?.body && parseBodies) chain.push(guards.jsonBody);
    if (spec.request) chain.push(validate ? validator(spec) : unvalidated);
    chain.push(async (req, res) => {
      const validated = validatedInput(req).validated;
      const input = {
        params: validated.params ?? {},
        query: validated.query ?? {},
        body: validated.body,
        context: req.context,
        req,
        res,
      } as HandlerInput<Shape, Shape, z.ZodType>;
      const audited = spec.audit && guards.audit ? { ...spec.audit, record: guards.audit } : null;
      const target = audited?.target?.(input) ?? null;
      let result: HandlerResult | typeof HANDLED;
      try {
        result = await spec.handler(input);
      } catch (error) {
        audited?.record({ req, action: audited.action, target, outcome: 'failure', details: { status: (error as { status?: number }).status ?? 500 } });
        throw error;
      }
      audited?.record({ req, action: audited.action, target, outcome: 'success' });
      if ('handled' in result) return;
      for (const [name, value] of Object.entries(result.headers ?? {})) res.setHeader(name, value);
      res.status(result.status).json(result.body);
    });
    router[spec.method](toExpressPath(spec.path), ...chain);
  }
  return router;
}
