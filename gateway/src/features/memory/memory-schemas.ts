import { z } from 'zod';

export const DeviceMemoryStatusSchema = z
  .object({
    deviceId: z.string(),
    workerId: z.string(),
    allocatedBytes: z.number().int().nullable().meta({ description: 'Live tensors (CUDA allocator); null on CPUs.' }),
    reservedBytes: z.number().int().nullable().meta({ description: 'Held by the CUDA allocator, cache included.' }),
    usedBytes: z.number().int().nullable(),
    totalBytes: z.number().int().nullable(),
    models: z.array(z.object({ model: z.string(), footprintBytes: z.number().int() })),
  })
  .meta({ id: 'DeviceMemoryStatus' });

export const MemoryStatusSchema = z.object({ devices: z.array(DeviceMemoryStatusSchema), partial: z.boolean() }).meta({ id: 'MemoryStatus' });

export const MemoryStatusQuery = z.strictObject({ deviceId: z.string().min(1).max(200).optional() });

export const ClearMemoryBody = z.strictObject({
  deviceId: z.string().min(1).max(200).optional(),
  unloadIdle: z.boolean().optional().meta({ description: 'Also unload models with no work in flight.' }),
});

export const ClearResultSchema = z
  .object({ freedBytes: z.number().int(), unloadedModels: z.array(z.string()), workers: z.array(z.string()) })
  .meta({ id: 'MemoryClear' });

export type MemoryStatusBody = z.infer<typeof MemoryStatusSchema>;
export type ClearResultBody = z.infer<typeof ClearResultSchema>;
