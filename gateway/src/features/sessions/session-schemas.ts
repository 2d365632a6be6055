import { z } from 'zod';
import type { Session } from './session-types.js';

export const SessionStatusSchema = z.enum(['queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted']);

export const OutputFileSchema = z
  .object({
    name: z.string(),
    url: z.string().meta({ description: 'GET it with the same credentials.' }),
    mediaType: z.string(),
    sizeBytes: z.number().int(),
    sha256: z.string(),
    width: z.number().int(),
    height: z.number().int(),
  })
  .meta({ id: 'OutputFile' });

export const SessionResultSchema = z
  .object({
    deviceId: z.string(),
    workerId: z.string(),
    model: z.string().nullable(),
    dtype: z.string().nullable(),
    runMs: z.number(),
    batchSize: z.number().int(),
    seed: z.number().int().optional(),
    files: z.array(OutputFileSchema).optional(),
    embeddings: z.array(z.array(z.number())).optional(),
    promptTokens: z.number().int().optional().meta({ description: 'Text embedding: tokens the model read, padding excluded.' }),
    tensors: z.record(z.string(), z.object({ dtype: z.string(), shape: z.array(z.number().int()), data: z.string() })).optional(),
  })
  .meta({ id: 'SessionResult' });

export const SessionSchema = z
  .object({
    id: z.string(),
    owner: z.string(),
    task: z.string(),
    model: z.string().nullable(),
    deviceId: z.string().nullable(),
    workerId: z.string().nullable(),
    status: SessionStatusSchema,
    parameters: z.record(z.string(), z.unknown()),
    result: z.record(z.string(), z.unknown()).nullable().meta({ description: 'SessionResult when succeeded; { reason } when cancelled.' }),
    error: z.object({ code: z.string(), message: z.string() }).nullable(),
    batchId: z.string().nullable(),
    createdAt: z.iso.datetime(),
    startedAt: z.iso.datetime().nullable(),
    finishedAt: z.iso.datetime().nullable(),
    queuePosition: z
      .number()
      .int()
      .nullable()
      .optional()
      .meta({ description: 'While it waits in the queue for a worker with room: sessions ahead of it (0: next).' }),
    links: z.object({
      self: z.string(),
      events: z.string().meta({
        description:
          "Follow it as Server-Sent Events. For the session's owner (create and read) it carries a short-lived stream token " +
          '(`?access_token=`), so a browser EventSource, which cannot send Authorization, can open it.',
      }),
    }),
  })
  .meta({ id: 'Session' });

/** OpenAPI links from a response that holds a session: what a client calls next with its id. */
export const SESSION_LINKS = {
  GetSession: { operationId: 'getSession', parameters: { id: '$response.body#/id' }, description: 'Read the session.' },
  FollowSession: { operationId: 'followSession', parameters: { id: '$response.body#/id' }, description: 'Follow its events (SSE).' },
  CancelSession: { operationId: 'cancelSession', parameters: { id: '$response.body#/id' }, description: 'Cancel it.' },
  GetOutput: {
    operationId: 'getOutput',
    parameters: { sessionId: '$response.body#/id', file: '$response.body#/result/files/0/name' },
    description: 'Download its first output file (image tasks).',
  },
};

export const SessionPageSchema = z
  .object({
    items: z.array(SessionSchema),
    total: z.number().int(),
    limit: z.number().int(),
    offset: z.number().int(),
  })
  .meta({ id: 'SessionPage' });

export const SessionIdParams = z.strictObject({ id: z.uuid({ error: 'must be a session id (UUID)' }) });

export const SessionListQuery = z.strictObject({
  status: SessionStatusSchema.optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  offset: z.coerce.number().int().min(0).max(1_000_000_000).default(0),
});

export type SessionBody = z.infer<typeof SessionSchema>;

export function presentSession(session: Session, queuePosition?: number | null): SessionBody {
  const self = `/api/inference/sessions/${session.id}`;
  return {
    id: session.id,
    owner: session.owner,
    task: session.task,
    model: session.model,
    deviceId: session.deviceId,
    workerId: session.workerId,
    status: session.status,
    parameters: session.parameters,
    result: session.result,
    error: session.error,
    batchId: session.batchId,
    createdAt: session.createdAt.toISOString(),
    startedAt: session.startedAt?.toISOString() ?? null,
    finishedAt: session.finishedAt?.toISOString() ?? null,
    ...(queuePosition !== undefined ? { queuePosition } : {}),
    links: { self, events: `${self}/events` },
  };
}

export const StreamTokenSchema = z
  .object({
    token: z.string().meta({ description: "Opens this session's events only, as `?access_token=`; never another route." }),
    expiresAt: z.iso.datetime().meta({ description: 'Checked when the stream opens: an open stream outlives it; a reconnect after it needs a new token.' }),
    events: z.string().meta({ description: 'The events URL with the token, for `new EventSource(url)`.' }),
  })
  .meta({ id: 'StreamToken' });

/** The events URL that carries a stream token. */
export const eventsUrlWithToken = (session: Pick<Session, 'id'>, token: string): string =>
  `/api/inference/sessions/${session.id}/events?access_token=${encodeURIComponent(token)}`;

/** The session body with its events link carrying the owner's stream token (none: as it was). */
export function withStreamToken(body: SessionBody, grant: { token: string } | null): SessionBody {
  return grant ? { ...body, links: { ...body.links, events: eventsUrlWithToken(body, grant.token) } } : body;
}
