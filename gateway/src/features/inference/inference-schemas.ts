import { z } from 'zod';
import { ModelNameSchema } from '../models/model-schemas.js';
import type { InferRequest } from '../../generated/device_ops/v1/InferRequest.js';
import type { ModelTask__Output } from '../../generated/device_ops/v1/ModelTask.js';
import type { Tensor } from '../../generated/device_ops/v1/Tensor.js';

/**
 * Request limits checked at the edge, before anything reaches a worker. They
 * match the workers' defaults (python-workers settings.Limits); a worker
 * configured tighter still refuses with INVALID_ARGUMENT.
 */
export const INFERENCE_LIMITS = Object.freeze({
  maxImageSide: 2048,
  minImageSide: 64,
  maxSteps: 150,
  maxImagesPerPrompt: 4,
  maxGuidanceScale: 30,
  maxEmbeddingTexts: 2048,
  maxTextChars: 20_000,
  maxTokensPerText: 8192,
  maxTensorInputs: 16,
});

/** Canonical base64: whole 4-character groups, padding only at the end. */
export const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const base64 = (what: string) =>
  z
    .string()
    .min(1)
    .regex(BASE64, `must be base64 (${what})`)
    .meta({ description: `${what}, base64-encoded`, contentEncoding: 'base64' });

const side = z
  .number()
  .int()
  .min(INFERENCE_LIMITS.minImageSide)
  .max(INFERENCE_LIMITS.maxImageSide)
  .multipleOf(8, 'must be a multiple of 8')
  .meta({ multipleOf: 8 });

const text = z.string().max(INFERENCE_LIMITS.maxTextChars);
// Every rule is one the schema states (here: a pattern), so schema-valid means accepted.
const prompt = text.regex(/\S/, 'must not be empty');

const generationFields = {
  prompt: prompt.meta({ description: 'What to draw.', example: 'a lighthouse at dusk' }),
  negativePrompt: text.optional().meta({ description: 'What to avoid.' }),
  steps: z.number().int().min(1).max(INFERENCE_LIMITS.maxSteps).optional().meta({ description: 'Denoising steps (default 25).' }),
  guidanceScale: z.number().min(0).max(INFERENCE_LIMITS.maxGuidanceScale).optional(),
  seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional().meta({ description: 'Absent: drawn, and reported.' }),
  width: side.optional().meta({ description: 'Multiple of 8 (default 512).' }),
  height: side.optional().meta({ description: 'Multiple of 8 (default 512).' }),
  imagesPerPrompt: z.number().int().min(1).max(INFERENCE_LIMITS.maxImagesPerPrompt).optional(),
  scheduler: z.string().regex(/^[A-Za-z0-9]{1,64}$/, 'must be a scheduler class name').optional(),
};

export const TextToImageParameters = z.strictObject(generationFields).meta({ id: 'TextToImageParameters' });
export const ImageToImageParameters = z
  .strictObject({
    ...generationFields,
    initImage: base64('PNG or JPEG input image'),
    strength: z.number().gt(0).max(1).optional(),
  })
  .meta({ id: 'ImageToImageParameters' });
export const InpaintingParameters = z
  .strictObject({
    ...generationFields,
    initImage: base64('PNG or JPEG input image'),
    maskImage: base64('PNG or JPEG mask, white = repaint'),
    strength: z.number().gt(0).max(1).optional(),
  })
  .meta({ id: 'InpaintingParameters' });
const tokenIds = z
  .array(z.number().int().min(0).max(2 ** 32 - 1))
  .min(1)
  .max(INFERENCE_LIMITS.maxTokensPerText);
export const TextEmbeddingParameters = z
  .strictObject({
    texts: z.array(prompt).min(1).max(INFERENCE_LIMITS.maxEmbeddingTexts).optional().meta({
      description: "Texts to embed, one vector each, tokenized by the model's tokenizer (truncated to its maximum length).",
    }),
    tokenIds: z.array(tokenIds).min(1).max(INFERENCE_LIMITS.maxEmbeddingTexts).optional().meta({
      description:
        "Instead of texts: each input as the model's own token ids (special tokens included). Never truncated: " +
        "an id outside the vocabulary or a list longer than the model reads is refused.",
    }),
    normalize: z.boolean().optional().meta({ description: 'Scale each vector to unit length (after truncation to `dimensions`).' }),
    dimensions: z.number().int().min(1).max(65_536).optional().meta({
      description:
        "Keep the first `dimensions` components: the model's own dimension, or a truncation its manifest lists (Matryoshka-trained models).",
    }),
  })
  .refine((p) => (p.texts === undefined) !== (p.tokenIds === undefined), {
    message: 'set exactly one of texts and tokenIds',
  })
  .meta({ id: 'TextEmbeddingParameters', oneOf: [{ required: ['texts'] }, { required: ['tokenIds'] }] });
const TENSOR_INPUT_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
const TensorValue = z.strictObject({
  dtype: z.enum(['float32', 'float64', 'float16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool']),
  shape: z.array(z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)).max(8),
  data: base64('little-endian element bytes'),
});
export const TensorParameters = z
  .strictObject({
    inputs: z
      .record(z.string().regex(TENSOR_INPUT_NAME, 'must be an input name'), TensorValue)
      .refine((inputs) => Object.keys(inputs).length >= 1 && Object.keys(inputs).length <= INFERENCE_LIMITS.maxTensorInputs, {
        message: `must name between 1 and ${INFERENCE_LIMITS.maxTensorInputs} inputs`,
      })
      .meta({ minProperties: 1, maxProperties: INFERENCE_LIMITS.maxTensorInputs, propertyNames: { pattern: TENSOR_INPUT_NAME.source } }),
  })
  .meta({ id: 'TensorParameters' });

const modelName = ModelNameSchema;
const common = {
  model: modelName.meta({ description: 'Model name from /api/model/available.', example: 'tiny-sd' }),
  deviceId: z.string().min(1).max(200).optional().meta({ description: 'Run on this device; absent lets the gateway choose.' }),
  dtype: z.enum(['float16', 'bfloat16', 'float32']).optional(),
};

export const InferenceRequestSchema = z
  .discriminatedUnion('task', [
    z.strictObject({ task: z.literal('text-to-image'), ...common, parameters: TextToImageParameters }),
    z.strictObject({ task: z.literal('image-to-image'), ...common, parameters: ImageToImageParameters }),
    z.strictObject({ task: z.literal('inpainting'), ...common, parameters: InpaintingParameters }),
    z.strictObject({ task: z.literal('text-embedding'), ...common, parameters: TextEmbeddingParameters }),
    z.strictObject({ task: z.literal('tensor'), ...common, parameters: TensorParameters }),
  ])
  .meta({ id: 'InferenceRequest' });

export type InferenceRequest = z.infer<typeof InferenceRequestSchema>;
export type InferenceTask = InferenceRequest['task'];

export const TASK_TO_PROTO: Record<string, ModelTask__Output> = {
  'text-to-image': 'MODEL_TASK_TEXT_TO_IMAGE',
  'image-to-image': 'MODEL_TASK_IMAGE_TO_IMAGE',
  inpainting: 'MODEL_TASK_INPAINTING',
  'text-embedding': 'MODEL_TASK_TEXT_EMBEDDING',
  tensor: 'MODEL_TASK_TENSOR',
  upscale: 'MODEL_TASK_UPSCALE',
  enhance: 'MODEL_TASK_ENHANCE',
};

export const PROTO_TO_TASK: Record<string, string> = Object.fromEntries(
  Object.entries(TASK_TO_PROTO).map(([task, proto]) => [proto, task]),
);

const bytes = (value: string) => Buffer.from(value, 'base64');

/** The worker request for a validated REST request. */
export function toInferRequest(jobId: string, request: InferenceRequest, deviceId: string): InferRequest {
  const base: InferRequest = {
    jobId,
    model: request.model,
    task: TASK_TO_PROTO[request.task],
    deviceId,
    dtype: request.dtype ?? '',
  };
  switch (request.task) {
    case 'text-embedding':
    {
      const p = request.parameters;
      return {
        ...base,
        textEmbedding: {
          texts: p.texts ?? [],
          tokenIds: (p.tokenIds ?? []).map((ids) => ({ ids })),
          normalize: p.normalize ?? false,
          ...(p.dimensions !== undefined ? { dimensions: p.dimensions } : {}),
        },
      };
    }
    case 'tensor': {
      const inputs: Record<string, Tensor> = {};
      for (const [name, value] of Object.entries(request.parameters.inputs)) {
        inputs[name] = { dtype: value.dtype, shape: value.shape, data: bytes(value.data) };
      }
      return { ...base, tensor: { inputs } };
    }
    default: {
      const p = request.parameters;
      return {
        ...base,
        imageGeneration: {
          prompt: p.prompt,
          negativePrompt: p.negativePrompt ?? '',
          steps: p.steps,
          guidanceScale: p.guidanceScale,
          seed: p.seed,
          width: p.width,
          height: p.height,
          imagesPerPrompt: p.imagesPerPrompt,
          scheduler: p.scheduler ?? '',
          ...('strength' in p ? { strength: p.strength } : {}),
          ...('initImage' in p ? { initImage: bytes(p.initImage) } : {}),
          ...('maskImage' in p ? { maskImage: bytes(p.maskImage) } : {}),
        },
      };
    }
  }
}

/** The parameters as recorded with a session: images replaced by their size, tensors by dtype and shape. */
export function recordedParameters(request: InferenceRequest): Record<string, unknown> {
  const { parameters } = request;
  const recorded: Record<string, unknown> = { ...parameters };
  for (const key of ['initImage', 'maskImage']) {
    if (typeof recorded[key] === 'string') recorded[key] = { bytes: Buffer.byteLength(recorded[key] as string, 'base64') };
  }
  if (request.task === 'tensor') {
    recorded.inputs = Object.fromEntries(
      Object.entries(request.parameters.inputs).map(([name, t]) => [name, { dtype: t.dtype, shape: t.shape }]),
    );
  }
  if (request.task === 'text-embedding') {
    const { texts, tokenIds } = request.parameters;
    if (texts) recorded.texts = { count: texts.length };
    if (tokenIds) recorded.tokenIds = { count: tokenIds.length, tokens: tokenIds.reduce((sum, ids) => sum + ids.length, 0) };
  }
  return { ...recorded, ...(request.deviceId ? { deviceId: request.deviceId } : {}), ...(request.dtype ? { dtype: request.dtype } : {}) };
}
