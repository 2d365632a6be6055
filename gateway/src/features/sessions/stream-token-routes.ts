import { ForbiddenError, NotFoundError } from '../../errors/gateway-error.js';
import { defineRoute, type RouteSpec } from '../../http/route.js';
import { NEEDS_INFERENCE } from '../auth/scopes.js';
import { SessionIdParams, StreamTokenSchema, eventsUrlWithToken } from './session-schemas.js';
import type { SessionService } from './session-service.js';
import type { StreamTokenService } from './stream-token-service.js';

/**
 * POST /api/inference/sessions/{id}/stream-token: a fresh stream token for
 * the session's owner (ADR 0028), e.g. when a page must reopen an
 * EventSource after the one in links.events expired. Needs a real
 * credential: a stream token never buys another.
 */
export function streamTokenRoutes(sessions: SessionService, tokens: StreamTokenService | null): RouteSpec[] {
  return [
    defineRoute({
      method: 'post',
      path: '/api/inference/sessions/{id}/stream-token',
      operationId: 'createStreamToken',
      summary: "A short-lived token that opens this session's event stream from a browser EventSource",
      description:
        'For the session\'s owner only. The token goes in `?access_token=` on GET /api/inference/sessions/{id}/events ' +
        '(and nowhere else); it is checked when the stream opens, so pass `?lastEventId=` to a new EventSource to resume.',
      tags: ['Inference'],
      auth: NEEDS_INFERENCE,
      request: { params: SessionIdParams },
      responses: {
        200: { description: 'The token, its expiry and the events URL that carries it.', schema: StreamTokenSchema },
        403: { description: 'The session is not yours (admins read it with their own credential).' },
        404: { description: 'No such session of yours, or this gateway issues no stream tokens.' },
      },
      handler: async ({ params, context }) => {
        if (!tokens) throw new NotFoundError('This gateway issues no stream tokens (set STREAM_TOKEN_SECRET or JWT_SECRET).');
        const session = await sessions.get(params.id, context.principal!);
        const grant = tokens.issueFor(session, context.principal!);
        if (!grant) throw new ForbiddenError("Stream tokens are issued only to the session's owner.");
        return {
          status: 200,
          body: { token: grant.token, expiresAt: grant.expiresAt.toISOString(), events: eventsUrlWithToken(session, grant.token) },
          headers: { 'Cache-Control': 'no-store' },
        };
      },
    }),
  ];
}
