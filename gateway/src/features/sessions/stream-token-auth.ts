import type { RequestHandler } from 'express';
import { UnauthorizedError } from '../../errors/gateway-error.js';
import type { GatewayMetrics } from '../../infra/metrics.js';
import { reasonLabel } from '../auth/authenticator.js';
import type { StreamTokenService } from './stream-token-service.js';

/** The query parameter a stream token travels in (EventSource cannot send headers). */
export const STREAM_TOKEN_PARAM = 'access_token';

/**
 * Authentication of the one route that declares `streamToken` (a session's
 * events, whose id is the `id` path parameter): a token in ?access_token=
 * must be genuine, unexpired and for that session, else 401 with the same
 * body as every refused credential; without one, the header credential is
 * checked as on any route. The token never reaches a log line: the access
 * log writes route templates, and failures log only the reason.
 */
export function streamTokenAuth(tokens: StreamTokenService | null, metrics?: GatewayMetrics) {
  return (fallback: RequestHandler): RequestHandler =>
    (req, res, next) => {
      const token = req.query[STREAM_TOKEN_PARAM];
      if (token === undefined) {
        fallback(req, res, next);
        return;
      }
      const outcome =
        typeof token !== 'string'
          ? { reason: 'malformed stream token' }
          : tokens
            ? tokens.verify(token, String(req.params.id))
            : { reason: 'stream tokens are disabled (no STREAM_TOKEN_SECRET or JWT_SECRET)' };
      if ('reason' in outcome) {
        req.context.log.info('authentication failed', { authMethod: 'stream-token', reason: outcome.reason });
        metrics?.authFailures.inc({ method: 'stream-token', reason: reasonLabel(outcome.reason) });
        next(new UnauthorizedError());
        return;
      }
      req.context.principal = outcome.principal;
      next();
    };
}
