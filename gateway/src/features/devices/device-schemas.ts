import { z } from 'zod';

const nullableInt = z.number().int().nullable();
const nullableNumber = z.number().nullable();

export const DeviceMemorySchema = z
  .object({
    totalBytes: nullableInt.meta({ description: 'Total memory in bytes; null when not reported.' }),
    freeBytes: nullableInt.meta({ description: 'Allocatable memory in bytes; null when not reported.' }),
  })
  .meta({ id: 'DeviceMemory' });

export const CudaDetailsSchema = z
  .object({
    index: z.number().int().meta({ description: 'CUDA ordinal inside the worker.' }),
    uuid: z.string().nullable(),
    computeCapability: z.string().meta({ example: '9.0' }),
    multiprocessorCount: nullableInt,
    utilizationPercent: nullableInt.meta({ description: 'NVML; null without NVML.' }),
    memoryUtilizationPercent: nullableInt,
    temperatureCelsius: nullableNumber,
    powerWatts: nullableNumber,
    powerLimitWatts: nullableNumber,
    driverVersion: z.string().nullable(),
    cudaRuntimeVersion: z.string().nullable(),
  })
  .meta({ id: 'CudaDetails' });

export const CpuDetailsSchema = z
  .object({
    modelName: z.string().nullable(),
    logicalCores: nullableInt,
    physicalCores: nullableInt,
    architecture: z.string(),
    torchThreads: z.number().int(),
  })
  .meta({ id: 'CpuDetails' });

export const DeviceSchema = z
  .object({
    id: z.string().meta({ description: 'Stable id: the GPU UUID, or "<workerId>:cpu".', example: 'worker-0:cpu' }),
    workerId: z.string().meta({ description: 'The worker that holds the device.' }),
    kind: z.enum(['cpu', 'cuda']),
    name: z.string(),
    memory: DeviceMemorySchema,
    supportedDtypes: z.array(z.string()).meta({ description: 'Data types models can be loaded in here.', example: ['float32', 'bfloat16'] }),
    cuda: CudaDetailsSchema.nullable(),
    cpu: CpuDetailsSchema.nullable(),
  })
  .meta({ id: 'Device' });

export const MissingWorkerSchema = z
  .object({
    workerId: z.string(),
    reason: z.string().meta({ description: 'Why its devices are missing.' }),
  })
  .meta({ id: 'MissingWorker' });

export const DeviceListSchema = z
  .object({
    devices: z.array(DeviceSchema),
    totalCount: z.number().int(),
    partial: z.boolean().meta({ description: 'True when some worker did not answer; see missingWorkers.' }),
    missingWorkers: z.array(MissingWorkerSchema),
  })
  .meta({ id: 'DeviceList' });

export type Device = z.infer<typeof DeviceSchema>;
export type DeviceList = z.infer<typeof DeviceListSchema>;

export const DeviceIdParams = z.strictObject({ deviceId: z.string().min(1).max(200) });

export const DeviceStatusSchema = z
  .object({
    deviceId: z.string(),
    workerId: z.string(),
    kind: z.enum(['cpu', 'cuda']),
    utilizationPercent: z.number().int().nullable().meta({ description: 'NVML; null on CPUs and without NVML.' }),
    temperatureCelsius: z.number().nullable(),
    powerWatts: z.number().nullable(),
    memory: DeviceMemorySchema,
    runningJobs: z.number().int(),
    queuedJobs: z.number().int(),
    queueCapacity: z.number().int(),
    loadedModels: z.array(z.object({ model: z.string(), dtype: z.string(), footprintBytes: z.number().int(), inFlightJobs: z.number().int() })),
  })
  .meta({ id: 'DeviceStatus' });

export const DeviceCapabilitiesSchema = z
  .object({
    deviceId: z.string(),
    workerId: z.string(),
    kind: z.enum(['cpu', 'cuda']),
    dtypes: z.array(z.string()).meta({ description: 'Precisions models can be loaded in here.' }),
    tasks: z.array(z.string()).meta({ description: "Tasks the worker's models run (enhance and Lanczos upscale need none)." }),
    computeCapability: z.string().nullable(),
    totalMemoryBytes: z.number().int().nullable(),
  })
  .meta({ id: 'DeviceCapabilities' });
