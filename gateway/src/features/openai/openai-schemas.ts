import { z } from 'zod';
import { INFERENCE_LIMITS } from '../inference/inference-schemas.js';
import { ModelNameSchema } from '../models/model-schemas.js';

/**
 * The OpenAI-compatible requests and responses, as the OpenAI API reference
 * defines them (snake_case, as its SDKs send them), with this gateway's
 * documented extensions. Only what the gateway can honour is accepted: an
 * unknown field is refused, never silently ignored.
 */

// The native limits, stated in these schemas too: a request valid by this document is one the native schema accepts.
const L = INFERENCE_LIMITS;
const tokenArray = z
  .array(z.number().int().min(0).max(2 ** 32 - 1))
  .min(1)
  .max(L.maxTokensPerText);
const text = z.string().max(L.maxTextChars).regex(/\S/, 'must not be empty');
/** Every side the native schema accepts (multiples of 8 in its range), as one pattern. */
const SIDES = Array.from({ length: (L.maxImageSide - L.minImageSide) / 8 + 1 }, (_, i) => L.minImageSide + 8 * i).join('|');
const SIZE = new RegExp(`^(${SIDES})x(${SIDES})$`);

export const EmbeddingsRequestSchema = z
  .strictObject({
    model: ModelNameSchema.meta({ description: 'A text-embedding model from GET /v1/models.', example: 'minilm' }),
    input: z
      .union([text, z.array(text).min(1).max(L.maxEmbeddingTexts), tokenArray, z.array(tokenArray).min(1).max(L.maxEmbeddingTexts)])
      .meta({
        description:
          "A text, texts, or token arrays (the model's own token ids, special tokens included; one array or several). One vector per input, in order.",
      }),
    encoding_format: z.enum(['float', 'base64']).optional().meta({
      description: '`float` (default): arrays of numbers; `base64`: each vector as little-endian float32 bytes, base64-encoded.',
    }),
    dimensions: z.number().int().min(1).max(65_536).optional().meta({
      description:
        "Truncate vectors to this length. Accepted when it is the model's own dimension or a truncation its manifest lists (Matryoshka-trained models); otherwise 400.",
    }),
    user: z.string().max(256).optional().meta({ description: 'Accepted for compatibility; not used.' }),
  })
  .meta({ id: 'OpenAIEmbeddingsRequest' });

export type EmbeddingsRequest = z.infer<typeof EmbeddingsRequestSchema>;

export const EmbeddingsResponseSchema = z
  .object({
    object: z.literal('list'),
    data: z.array(
      z.object({
        object: z.literal('embedding'),
        index: z.number().int(),
        embedding: z.union([z.array(z.number()), z.string()]),
      }),
    ),
    model: z.string(),
    usage: z.object({ prompt_tokens: z.number().int(), total_tokens: z.number().int() }),
  })
  .meta({ id: 'OpenAIEmbeddingsResponse' });

export const ImagesRequestSchema = z
  .strictObject({
    prompt: text.meta({ description: 'What to draw.', example: 'a lighthouse at dusk' }),
    model: ModelNameSchema.meta({ description: 'A text-to-image model from GET /v1/models.', example: 'tiny-sd' }),
    n: z.number().int().min(1).max(L.maxImagesPerPrompt).optional().meta({ description: `Images to generate (default 1, at most ${L.maxImagesPerPrompt}).` }),
    size: z
      .string()
      .regex(SIZE, 'must be WIDTHxHEIGHT, each a multiple of 8 from 64 to 2048, e.g. 512x512')
      .optional()
      .meta({ description: 'WIDTHxHEIGHT in pixels, each a multiple of 8 from 64 to 2048 (default 512x512).' }),
    response_format: z.enum(['url', 'b64_json']).optional().meta({
      description:
        '`url` (default): the gateway URL of each PNG (fetch it with the same credential); `b64_json`: the PNG bytes, base64-encoded.',
    }),
    user: z.string().max(256).optional().meta({ description: 'Accepted for compatibility; not used.' }),
    seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional().meta({ description: 'Extension: the seed (absent: drawn, and reported in X-Seed).' }),
    steps: z.number().int().min(1).max(L.maxSteps).optional().meta({ description: 'Extension: denoising steps (default 25).' }),
    negative_prompt: z.string().max(L.maxTextChars).optional().meta({ description: 'Extension: what to avoid.' }),
    guidance_scale: z.number().min(0).max(L.maxGuidanceScale).optional().meta({ description: 'Extension: classifier-free guidance scale.' }),
  })
  .meta({ id: 'OpenAIImagesRequest' });

export type ImagesRequest = z.infer<typeof ImagesRequestSchema>;

export const ImagesResponseSchema = z
  .object({
    created: z.number().int().meta({ description: 'Unix seconds when the images were done.' }),
    data: z.array(z.object({ url: z.string().optional(), b64_json: z.string().optional() })),
    output_format: z.literal('png'),
    size: z.string(),
  })
  .meta({ id: 'OpenAIImagesResponse' });

export const OpenAIModelSchema = z
  .object({
    id: z.string(),
    object: z.literal('model'),
    created: z.number().int().meta({ description: 'Always 0: the repository does not record when a model was added.' }),
    owned_by: z.string(),
    tasks: z.array(z.string()).meta({ description: "Extension: the tasks the model runs (e.g. text-embedding, text-to-image)." }),
  })
  .meta({ id: 'OpenAIModel' });

export const ModelListSchema = z
  .object({ object: z.literal('list'), data: z.array(OpenAIModelSchema) })
  .meta({ id: 'OpenAIModelList' });

export const ModelParams = z.strictObject({
  model: z.string().min(1).max(128),
});

export const OpenAIErrorSchema = z
  .object({
    error: z.object({
      message: z.string(),
      type: z.string(),
      param: z.string().nullable(),
      code: z.string().nullable(),
    }),
  })
  .meta({ id: 'OpenAIError' });
