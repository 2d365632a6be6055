import { realpath } from 'node:fs/promises';
import { extname, join, sep } from 'node:path';
import { z } from 'zod';
import { NotFoundError } from '../../errors/gateway-error.js';
import { HANDLED, defineRoute, type RouteSpec } from '../../http/route.js';
import { WORKER_REFUSALS } from '../../http/route-openapi.js';
import { lastEventId, wantsEventStream, type SseOptions } from '../../http/sse.js';
import type { StreamAdmission } from '../sessions/stream-admission.js';
import {
  SessionIdParams,
  SessionListQuery,
  SessionPageSchema,
  SessionSchema,
  SESSION_LINKS,
  presentSession,
  withStreamToken,
} from '../sessions/session-schemas.js';
import { STREAM_TOKEN_PARAM } from '../sessions/stream-token-auth.js';
import type { StreamTokenService } from '../sessions/stream-token-service.js';
import type { SessionService } from '../sessions/session-service.js';
import { streamSession, succeeded } from '../sessions/session-streaming.js';
import { InferenceRequestSchema } from './inference-schemas.js';
import type { InferenceService } from './inference-service.js';
import type { AuditService } from '../audit/audit-service.js';
import { cancelSession } from './cancel-session.js';
import { NEEDS_CREDENTIAL, NEEDS_INFERENCE } from '../auth/scopes.js';

const MEDIA_TYPES: Record<string, string> = { '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg' };

const CapabilitiesSchema = z
  .object({
    tasks: z.array(z.object({ task: z.string(), models: z.array(z.string()) })),
    dtypes: z.array(z.string()),
    limits: z.record(z.string(), z.number()),
  })
  .meta({ id: 'InferenceCapabilities' });

const ValidationResultSchema = z
  .object({
    valid: z.literal(true),
    workerId: z.string(),
    deviceId: z.string().nullable(),
    modelLoaded: z.boolean(),
    estimate: z.object({
      memoryBytes: z.number().int().nullable(),
      memoryBasis: z.string(),
      seconds: z.number().nullable(),
      secondsBasis: z.string(),
    }),
  })
  .meta({ id: 'InferenceValidation' });

const OutputParams = z.strictObject({
  sessionId: z.uuid({ error: 'must be a session id (UUID)' }),
  // Any name: one that leaves the session folder is simply not found there.
  file: z.string().min(1).max(255),
});

export function inferenceRoutes(deps: {
  inference: InferenceService;
  sessions: SessionService;
  outputDirectory: string;
  audit: AuditService;
  /** Caps on open event streams. */
  streams: StreamAdmission;
  /** How every event stream is written (open-stream gauge, slow-reader cut-off). */
  sse: SseOptions;
  /** Stream tokens for the owner's events link (ADR 0028); null when none are issued. */
  streamTokens: StreamTokenService | null;
}): RouteSpec[] {
  const { inference, sessions, streams, streamTokens } = deps;
  return [
    defineRoute({
      method: 'get',
      path: '/api/inference/capabilities',
      operationId: 'inferenceCapabilities',
      summary: 'Tasks, the models that run each, data types and request limits',
      tags: ['Inference'],
      auth: NEEDS_CREDENTIAL,
      responses: { 200: { description: 'What can be run.', schema: CapabilitiesSchema } },
      handler: async ({ context }) => ({ status: 200, body: await inference.capabilities(context.correlationId) }),
    }),
    defineRoute({
      method: 'post',
      path: '/api/inference/validate',
      operationId: 'validateInference',
      summary: 'Dry run: validate a request, say where it would run and estimate its cost',
      tags: ['Inference'],
      auth: NEEDS_INFERENCE,
      request: { body: InferenceRequestSchema },
      responses: { ...WORKER_REFUSALS, 
        200: { description: 'The request is valid.', schema: ValidationResultSchema },
        404: { description: 'Unknown model or device.' },
        409: { description: 'The model does not run this task.' },
      },
      handler: async ({ body, context }) => ({ status: 200, body: await inference.validate(body, context.correlationId) }),
    }),
    defineRoute({
      method: 'post',
      path: '/api/inference/execute',
      operationId: 'executeInference',
      summary: 'Run a job and wait for its result (or stream its progress as Server-Sent Events)',
      description:
        'With `Accept: text/event-stream` the response is an SSE stream of the job events (accepted, queued, started, ' +
        'progress) ending with exactly one of result, error or cancelled; a client that disconnects cancels the job. ' +
        'Otherwise the response waits for the end: 200 with the session, or the problem the job ended with.',
      tags: ['Inference'],
      auth: NEEDS_INFERENCE,
      rateLimit: 'inference',
      request: { body: InferenceRequestSchema },
      responses: { ...WORKER_REFUSALS, 
        200: { description: 'The finished session (JSON) or its event stream (text/event-stream).', schema: SessionSchema, links: SESSION_LINKS },
        404: { description: 'Unknown model or device.' },
        409: { description: 'The model does not run this task, or the job was cancelled.' },
        429: { description: 'Too many requests, or too many open event streams of yours.' },
        503: { description: 'No worker can take the job now, or the gateway is at a capacity limit; see Retry-After.' },
        504: { description: 'The worker did not finish in time.' },
      },
      handler: async ({ body, context, req, res }) => {
        if (wantsEventStream(req)) {
          // The stream slot first: a refused stream must not leave a job running.
          const release = streams.admit(context.principal!.id);
          try {
            const running = await inference.start(body, context.principal!, context.correlationId);
            await streamSession(req, res, sessions, running.session, { ...deps.sse, after: 0, cancelOnDisconnect: true, release });
          } catch (error) {
            release();
            throw error;
          }
          return HANDLED;
        }
        const running = await inference.start(body, context.principal!, context.correlationId);
        // The client left before the end: nobody waits for the result.
        res.once('close', () => {
          if (!res.writableFinished) sessions.abandon(running.session.id);
        });
        return { status: 200, body: presentSession(await succeeded(running.done)) };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/api/inference/sessions',
      operationId: 'createSession',
      summary: 'Run a job in the background',
      description: 'Answers 202 at once with the session and its Location; follow it at /events, cancel it with DELETE.',
      tags: ['Inference'],
      auth: NEEDS_INFERENCE,
      rateLimit: 'inference',
      request: { body: InferenceRequestSchema },
      responses: { ...WORKER_REFUSALS, 
        202: {
          description: 'Accepted; runs in the background.',
          schema: SessionSchema,
          headers: { Location: { description: 'The session (links.self).', schema: { type: 'string' }, required: true } },
          links: SESSION_LINKS,
        },
        404: { description: 'Unknown model or device.' },
        409: { description: 'The model does not run this task.' },
        503: { description: 'No worker can take the job now.' },
      },
      handler: async ({ body, context }) => {
        const { session: stored, position } = await inference.enqueue(body, context.principal!, context.correlationId);
        const session = withStreamToken(presentSession(stored, position), streamTokens?.issueFor(stored, context.principal!) ?? null);
        return { status: 202, body: session, headers: { Location: session.links.self } };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/inference/sessions',
      operationId: 'listSessions',
      summary: 'Your sessions (every session for admins), newest first',
      tags: ['Inference'],
      auth: NEEDS_INFERENCE,
      request: { query: SessionListQuery },
      responses: { 200: { description: 'One page.', schema: SessionPageSchema } },
      handler: async ({ query, context }) => {
        const page = await sessions.list(context.principal!, query);
        return {
          status: 200,
          body: { items: page.items.map(presentSession), total: page.total, limit: query.limit, offset: query.offset },
        };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/inference/sessions/{id}',
      operationId: 'getSession',
      summary: 'One session',
      tags: ['Inference'],
      auth: NEEDS_INFERENCE,
      request: { params: SessionIdParams },
      responses: { 200: { description: 'The session.', schema: SessionSchema }, 404: { description: 'No such session of yours.' } },
      handler: async ({ params, context }) => {
        const session = await sessions.get(params.id, context.principal!);
        const body = presentSession(session, session.status === 'queued' ? await sessions.queuePosition(session.id) : null);
        return { status: 200, body: withStreamToken(body, streamTokens?.issueFor(session, context.principal!) ?? null) };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/inference/sessions/{id}/events',
      operationId: 'followSession',
      summary: "A session's events as Server-Sent Events: past ones, then live ones",
      description:
        'Each event carries its sequence number as the SSE id; a reconnecting EventSource sends Last-Event-ID and gets ' +
        'only what it missed (or pass ?lastEventId=). The stream ends after the terminal event. Leaving does not cancel the job. ' +
        "A browser's EventSource, which cannot send Authorization, passes the session's stream token as `?access_token=` " +
        '(from `links.events`, or POST …/stream-token); it is accepted on this route only and checked when the stream opens.',
      tags: ['Inference'],
      auth: NEEDS_INFERENCE,
      streamToken: true,
      request: {
        params: SessionIdParams,
        query: z.strictObject({
          lastEventId: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
          [STREAM_TOKEN_PARAM]: z.string().optional().meta({ description: "This session's stream token, instead of a credential header." }),
        }),
      },
      responses: {
        200: { description: 'text/event-stream of session events.', contentType: 'text/event-stream' },
        404: { description: 'No such session of yours.' },
        429: { description: 'Too many open event streams of yours.' },
        503: { description: 'The gateway holds its limit of open event streams; see Retry-After.' },
      },
      handler: async ({ params, context, req, res }) => {
        const session = await sessions.get(params.id, context.principal!);
        const release = streams.admit(context.principal!.id);
        try {
          await streamSession(req, res, sessions, session, { ...deps.sse, after: lastEventId(req), cancelOnDisconnect: false, release });
        } catch (error) {
          release();
          throw error;
        }
        return HANDLED;
      },
    }),
    defineRoute({
      method: 'delete',
      path: '/api/inference/sessions/{id}',
      operationId: 'cancelSession',
      summary: 'Cancel a session',
      description: 'The job stops at its next step boundary and the session ends `cancelled`. Ended sessions are left as they are.',
      tags: ['Inference'],
      auth: NEEDS_INFERENCE,
      rateLimit: 'inference',
      request: { params: SessionIdParams },
      responses: { 202: { description: 'Cancellation requested (or the session had already ended).', schema: SessionSchema } },
      handler: async ({ params, context, req }) => {
        const session = await cancelSession(deps, params.id, context.principal!, context.correlationId, req.ip ?? null);
        return { status: 202, body: presentSession(session) };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/inference/outputs/{sessionId}/{file}',
      operationId: 'getOutput',
      summary: 'A file a session generated',
      description: "Only to the session's owner or an admin.",
      tags: ['Inference'],
      auth: NEEDS_INFERENCE,
      request: { params: OutputParams },
      responses: {
        200: { description: 'The file.', contentType: 'image/png' },
        404: { description: 'No such file of a session of yours.' },
      },
      handler: async ({ params, context, res }) => {
        await sessions.get(params.sessionId, context.principal!);
        const path = await outputPath(deps.outputDirectory, params.sessionId, params.file);
        res.setHeader('Cache-Control', 'private, max-age=3600');
        res.setHeader('X-Content-Type-Options', 'nosniff');
        res.type(MEDIA_TYPES[extname(path).toLowerCase()] ?? 'application/octet-stream');
        await new Promise<void>((resolve, reject) => res.sendFile(path, (error) => (error ? reject(error) : resolve())));
        return HANDLED;
      },
    }),
  ];
}

/** The file's real path, refusing anything outside the session's folder (symlinks included). */
async function outputPath(root: string, sessionId: string, file: string): Promise<string> {
  const missing = new NotFoundError(`No file '${file}' in session ${sessionId}.`);
  try {
    const folder = await realpath(join(root, sessionId));
    const path = await realpath(join(folder, file));
    if (!path.startsWith(folder + sep)) throw missing;
    return path;
  } catch {
    throw missing;
  }
}
