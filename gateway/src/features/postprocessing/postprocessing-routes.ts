import { z } from 'zod';
import { defineRoute, type RouteSpec } from '../../http/route.js';
import type { Principal } from '../auth/principal.js';
import { ModelNameSchema } from '../models/model-schemas.js';
import { SessionSchema, presentSession } from '../sessions/session-schemas.js';
import type { JobSpec, SessionService } from '../sessions/session-service.js';
import { SessionFailedError } from '../sessions/session-streaming.js';
import { NEEDS_INFERENCE } from '../auth/scopes.js';


const Source = z
  .strictObject({
    sessionId: z.uuid({ error: 'must be a session id (UUID)' }),
    file: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'must be a file name'),
  })
  .meta({ description: "An output of one of your sessions, as listed in its result's files." });
const Image = z
  .string()
  .min(1)
  .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be base64')
  .meta({ description: 'PNG or JPEG, base64-encoded.', contentEncoding: 'base64' });
const exactlyOne = (value: { image?: string; source?: unknown }) => (value.image === undefined) !== (value.source === undefined);
const ONE_MESSAGE = { message: 'give exactly one of image and source', path: ['image'] };

export const UpscaleBody = z
  .strictObject({
    image: Image.optional(),
    source: Source.optional(),
    scale: z.union([z.literal(2), z.literal(4)]).optional().meta({ description: 'Default 2 (a model upscales by its own factor).' }),
    model: ModelNameSchema.optional().meta({ description: 'An upscaler model; absent: Lanczos.' }),
  })
  .refine(exactlyOne, ONE_MESSAGE)
  .meta({ id: 'UpscaleRequest' });

const factor = z.number().min(0).max(4);
export const EnhanceBody = z
  .strictObject({
    image: Image.optional(),
    source: Source.optional(),
    adjustments: z
      .strictObject({ contrast: factor.optional(), color: factor.optional(), sharpness: factor.optional(), exposure: factor.optional() })
      .refine((a) => Object.keys(a).length > 0, 'name at least one of contrast, color, sharpness, exposure')
      .meta({ description: '1.0 leaves a property unchanged.' }),
  })
  .refine(exactlyOne, ONE_MESSAGE)
  .meta({ id: 'EnhanceRequest' });

type Source = z.infer<typeof Source>;

export function postprocessingRoutes(sessions: SessionService): RouteSpec[] {
  /** The source must be an output of the caller's own session (or any, for admins). */
  const sourcePath = async (source: Source | undefined, principal: Principal) => {
    if (!source) return '';
    await sessions.get(source.sessionId, principal);
    return `${source.sessionId}/${source.file}`;
  };

  const run = async (spec: JobSpec, principal: Principal, correlationId: string) => {
    const running = await sessions.start(spec, principal, { correlationId });
    const finished = await running.done;
    if (finished.status !== 'succeeded') throw new SessionFailedError(finished);
    return { status: 200, body: presentSession(finished) };
  };


  return [
    defineRoute({
      method: 'post',
      path: '/api/postprocessing/upscale',
      operationId: 'upscale',
      summary: 'Enlarge an image (Lanczos, or an upscaler model) — an uploaded one or a session output',
      tags: ['Postprocessing'],
      auth: NEEDS_INFERENCE,
      rateLimit: 'inference',
      request: { body: UpscaleBody },
      responses: { 200: { description: 'The finished session; its result lists the new file.', schema: SessionSchema } },
      handler: async ({ body, context }) => {
        const source = await sourcePath(body.source, context.principal!);
        const input = { ...(body.image ? { image: body.image } : {}), sourceOutput: source, ...(body.scale ? { scale: body.scale } : {}) };
        const parameters = { source: body.source ?? { uploadedBytes: Buffer.byteLength(body.image!, 'base64') }, scale: body.scale ?? null };
        return run(
          { task: 'upscale', model: body.model ?? null, parameters, job: { kind: 'postprocess', task: 'upscale', model: body.model ?? '', ...input } },
          context.principal!,
          context.correlationId,
        );
      },
    }),
    defineRoute({
      method: 'post',
      path: '/api/postprocessing/enhance',
      operationId: 'enhance',
      summary: 'Adjust contrast, colour, sharpness and exposure of an uploaded image or a session output',
      tags: ['Postprocessing'],
      auth: NEEDS_INFERENCE,
      rateLimit: 'inference',
      request: { body: EnhanceBody },
      responses: { 200: { description: 'The finished session; its result lists the new file.', schema: SessionSchema } },
      handler: async ({ body, context }) => {
        const source = await sourcePath(body.source, context.principal!);
        const adjustments = Object.fromEntries(Object.entries(body.adjustments).filter(([, v]) => v !== undefined)) as Record<string, number>;
        const input = { ...(body.image ? { image: body.image } : {}), sourceOutput: source, adjustments };
        const parameters = { source: body.source ?? { uploadedBytes: Buffer.byteLength(body.image!, 'base64') }, adjustments };
        return run(
          { task: 'enhance', model: null, parameters, job: { kind: 'postprocess', task: 'enhance', model: '', ...input } },
          context.principal!,
          context.correlationId,
        );
      },
    }),
  ];
}
