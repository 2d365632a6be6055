import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { Logger } from '../infra/logger.js';
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

/**
 * First middleware: gives each request a correlation id (returned in
 * X-Request-Id, logged on every line, passed to workers) and writes one
 * access-log line when the response is finished.
 */
export function requestContext(logger: Logger) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const offered = req.get('x-request-id');
    const correlationId = offered && CORRELATION_ID.test(offered) ? offered : randomUUID();
    const log = logger.child({ correlationId });
    req.context = { correlationId, log, principal: null };
    res.setHeader('X-Request-Id', correlationId);
    const started = process.hrtime.bigint();
    res.once('finish', () => {
      log.info('request', {
        method: req.method,
        // The route template, never the raw URL with its ids and query.
        route: req.route?.path ? `${req.baseUrl}${String(req.route.path)}` : null,
        status: res.statusCode,
        durationMs: Number(process.hrtime.bigint() - started) / 1e6,
        principal: req.context.principal?.id ?? null,
      });
    });
    next();
  };
}
