import { z } from 'zod';
import { BASE64 } from '../inference/inference-schemas.js';
import { ModelNameSchema } from '../models/model-schemas.js';

export const SourceSchema = z
  .strictObject({
    sessionId: z.uuid({ error: 'must be a session id (UUID)' }),
    file: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'must be a file name'),
  })
  .meta({ description: "An output of one of your sessions, as listed in its result's files." });
const Image = z
  .string()
  .min(1)
  .regex(BASE64, 'must be base64')
  .meta({ description: 'PNG or JPEG, base64-encoded.', contentEncoding: 'base64' });
const exactlyOne = (value: { image?: string; source?: unknown }) => (value.image === undefined) !== (value.source === undefined);
const ONE_MESSAGE = { message: 'give exactly one of image and source', path: ['image'] };
const EXACTLY_ONE = [{ required: ['image'] }, { required: ['source'] }];

export const UpscaleBody = z
  .strictObject({
    image: Image.optional(),
    source: SourceSchema.optional(),
    scale: z.union([z.literal(2), z.literal(4)]).optional().meta({ description: 'Default 2 (a model upscales by its own factor).' }),
    model: ModelNameSchema.optional().meta({ description: 'An upscaler model; absent: Lanczos.' }),
  })
  .refine(exactlyOne, ONE_MESSAGE)
  .meta({ id: 'UpscaleRequest', oneOf: EXACTLY_ONE });

const factor = z.number().min(0).max(4);
export const EnhanceBody = z
  .strictObject({
    image: Image.optional(),
    source: SourceSchema.optional(),
    adjustments: z
      .strictObject({ contrast: factor.optional(), color: factor.optional(), sharpness: factor.optional(), exposure: factor.optional() })
      .refine((a) => Object.keys(a).length > 0, 'name at least one of contrast, color, sharpness, exposure')
      .meta({ description: '1.0 leaves a property unchanged.', minProperties: 1 }),
  })
  .refine(exactlyOne, ONE_MESSAGE)
  .meta({ id: 'EnhanceRequest', oneOf: EXACTLY_ONE });

export type UpscaleRequest = z.infer<typeof UpscaleBody>;
export type EnhanceRequest = z.infer<typeof EnhanceBody>;
type Source = z.infer<typeof SourceSchema>;
export type { Source as OutputSource };
