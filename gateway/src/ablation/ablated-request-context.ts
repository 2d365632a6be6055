import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { Logger } from '../infra/logger.js';
import type { GatewayMetrics } from '../infra/metrics.js';
import { correlationIdOf, observeExchange } from '../http/request-context.js';
import type { LayerName } from './layers.js';

// Every request gets the same one when the context layer is removed: nothing to derive, nothing to echo.
const FIXED_CORRELATION_ID = 'ablated';

/**
 * requestContext (http/request-context.ts) with some of its three layers
 * removed, for the bench: the context (correlation id, header, child
 * logger), the access-log line, the request metrics. What is left does what
 * it does in requestContext; handlers still find a `req.context`.
 */
export function ablatedRequestContext(logger: Logger, metrics: GatewayMetrics | undefined, without: ReadonlySet<LayerName>): RequestHandler {
  const withContext = !without.has('context');
  const withLog = !without.has('access-log');
  const observed = without.has('metrics') ? undefined : metrics;
  return (req: Request, res: Response, next: NextFunction): void => {
    const correlationId = withContext ? correlationIdOf(req) : FIXED_CORRELATION_ID;
    const log = withContext ? logger.child({ correlationId }) : logger;
    req.context = { correlationId, log, principal: null };
    if (withContext) res.setHeader('X-Request-Id', correlationId);
    if (withLog || observed) observeExchange(req, res, observed, withLog ? log : null);
    next();
  };
}
