import { z } from 'zod';

/**
 * A model's folder name: letters, digits, '.', '_', '-', starting with a
 * letter or digit, never '..' (dot-separated runs, so the pattern itself
 * states it and schema-valid names are the accepted ones).
 */
export const ModelNameSchema = z
  .string()
  .max(128)
  .regex(/^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*\.?$/, "must be a model name (letters, digits, '.', '_', '-'; no '..')");

export const PlacementSchema = z
  .object({
    workerId: z.string(),
    deviceId: z.string(),
    dtype: z.string(),
    footprintBytes: z.number().int().meta({ description: 'Measured when it was loaded.' }),
    inFlightJobs: z.number().int(),
    lastUsedAt: z.iso.datetime().nullable(),
  })
  .meta({ id: 'ModelPlacement' });

export const ModelSchema = z
  .object({
    name: z.string(),
    task: z.string(),
    tasks: z.array(z.string()),
    format: z.enum(['diffusers', 'transformers', 'torchscript', 'unknown']),
    sizeBytes: z.number().int(),
    validation: z.enum(['unknown', 'valid', 'invalid']),
    preferredDtype: z.string().nullable(),
    workers: z.array(z.string()).meta({ description: 'Workers whose repository has the model.' }),
    placements: z.array(PlacementSchema),
  })
  .meta({ id: 'Model' });

export const ModelListSchema = z.object({ models: z.array(ModelSchema), partial: z.boolean() }).meta({ id: 'ModelList' });

export const ModelStatusSchema = z
  .object({
    placements: z.array(PlacementSchema.extend({ model: z.string() })),
    totalBytes: z.number().int(),
    partial: z.boolean(),
  })
  .meta({ id: 'ModelStatus' });

export const ValidateModelBody = z.strictObject({
  model: ModelNameSchema,
  workerId: z.string().min(1).optional().meta({ description: 'Validate on this worker; default: the first serving one.' }),
});
export const ValidateModelResultSchema = z
  .object({ model: ModelSchema.nullable(), workerId: z.string(), valid: z.boolean(), problems: z.array(z.string()) })
  .meta({ id: 'ModelValidation' });

export const LoadModelBody = z.strictObject({
  model: ModelNameSchema,
  deviceId: z.string().min(1).max(200).optional(),
  dtype: z.enum(['float16', 'bfloat16', 'float32']).optional(),
});
export const LoadModelResultSchema = z
  .object({ model: z.string(), placement: PlacementSchema, alreadyLoaded: z.boolean() })
  .meta({ id: 'ModelLoad' });

export const UnloadModelBody = z.strictObject({
  model: ModelNameSchema,
  deviceId: z.string().min(1).max(200).optional().meta({ description: 'Only from this device; default: from every device.' }),
});
export const UnloadModelResultSchema = z
  .object({ model: z.string(), freedBytes: z.number().int(), devices: z.array(z.string()) })
  .meta({ id: 'ModelUnload' });
