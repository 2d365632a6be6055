import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { Logger } from '../infra/logger.js';
import { statusClass, type GatewayMetrics } from '../infra/metrics.js';
import type { Principal } from '../features/auth/principal.js';

export interface RequestContext {
  /** Accepted from X-Request-Id when well formed, generated otherwise. */
  correlationId: string;
  /** Logger bound to this request's correlation id. */
  log: Logger;
  /** Set by the auth middleware on routes that require it. */
  principal: Principal | null;
}

declare module 'express-serve-static-core' {
  interface Request {
    context: RequestContext;
  }
}

// Safe to echo in a header and a log line verbatim.
const CORRELATION_ID = /^[A-Za-z0-9._:-]{1,128}$/;
// W3C trace context: version-traceid-parentid-flags; the trace id joins us to the caller's trace.
const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** X-Request-Id when well formed, else the trace id of a well-formed traceparent, else a new id. */
export function correlationIdOf(req: Request): string {
  const offered = req.get('x-request-id');
  if (offered && CORRELATION_ID.test(offered)) return offered;
  const trace = TRACEPARENT.exec(req.get('traceparent') ?? '')?.[1];
  if (trace && trace !== '0'.repeat(32)) return trace;
  return randomUUID();
}

/** The route template (/api/inference/sessions/{id}), never the raw URL with its ids and query. */
export function routeTemplate(req: Request): string {
  const path = req.route?.path;
  if (typeof path === 'string') return `${req.baseUrl}${path}`.replace(/:(\w+)/g, '{$1}');
  return req.originalUrl.startsWith('/api-docs') ? '/api-docs' : 'unmatched';
}

/** The request metrics of an exchange that ended: out of the in-flight gauge, into the histogram and the counter. */
function recordRequest(metrics: GatewayMetrics, method: string, route: string, status: number, seconds: number): void {
  metrics.inFlight.dec();
  const labels = { method, route, status_class: statusClass(status) };
  metrics.httpDuration.observe(labels, seconds);
  metrics.httpRequests.inc(labels);
}

/** The access-log line of an exchange that ended. */
function logRequest(log: Logger, req: Request, route: string, status: number, seconds: number): void {
  log.info('request', {
    method: req.method,
    route,
    status,
    durationMs: seconds * 1000,
    principal: req.context.principal?.id ?? null,
  });
}

/**
 * First middleware: gives each request a correlation id (returned in
 * X-Request-Id, logged on every line, passed to workers), and when the
 * exchange ends (finished or cut off) writes one access-log line and the
 * request metrics. (The bench's layer ablation removes these three parts
 * one at a time: ablation/ablated-request-context.ts.)
 */
export function requestContext(logger: Logger, metrics?: GatewayMetrics) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const correlationId = correlationIdOf(req);
    const log = logger.child({ correlationId });
    req.context = { correlationId, log, principal: null };
    res.setHeader('X-Request-Id', correlationId);
    observeExchange(req, res, metrics, log);
    next();
  };
}

/** In flight from now; when the exchange ends (finished, or 499 when cut off), its metrics and, given a logger, its access-log line. */
export function observeExchange(req: Request, res: Response, metrics: GatewayMetrics | undefined, log: Logger | null): void {
  const started = process.hrtime.bigint();
  metrics?.inFlight.inc();
  res.once('close', () => {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const route = routeTemplate(req);
    const status = res.writableFinished ? res.statusCode : 499;
    if (metrics) recordRequest(metrics, req.method, route, status, seconds);
    if (log) logRequest(log, req, route, status, seconds);
  });
}
