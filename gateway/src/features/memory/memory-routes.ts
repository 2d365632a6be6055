import { z } from 'zod';
import { NotFoundError } from '../../errors/gateway-error.js';
import { defineRoute, type RouteSpec } from '../../http/route.js';
import type { WorkerScheduler } from '../scheduling/worker-scheduler.js';
import { NEEDS_CREDENTIAL, NEEDS_MODELS_MANAGE } from '../auth/scopes.js';

const DeviceMemorySchema = z
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

const MemoryStatusSchema = z.object({ devices: z.array(DeviceMemorySchema), partial: z.boolean() }).meta({ id: 'MemoryStatus' });
const ClearBody = z.strictObject({
  deviceId: z.string().min(1).max(200).optional(),
  unloadIdle: z.boolean().optional().meta({ description: 'Also unload models with no work in flight.' }),
});
const ClearResultSchema = z
  .object({ freedBytes: z.number().int(), unloadedModels: z.array(z.string()), workers: z.array(z.string()) })
  .meta({ id: 'MemoryClear' });

const orNull = <T>(value: T | undefined) => value ?? null;

export function memoryRoutes(scheduler: WorkerScheduler): RouteSpec[] {
  return [
    defineRoute({
      method: 'get',
      path: '/api/memory/status',
      operationId: 'memoryStatus',
      summary: 'Allocator and device memory per device, with each resident model',
      tags: ['Memory'],
      auth: NEEDS_CREDENTIAL,
      request: { query: z.strictObject({ deviceId: z.string().min(1).max(200).optional() }) },
      responses: { 200: { description: 'Per device.', schema: MemoryStatusSchema }, 404: { description: 'Unknown device.' } },
      handler: async ({ query, context }) => {
        const targets = query.deviceId
          ? [{ ...(await scheduler.locateDevice(query.deviceId, context.correlationId)).view, deviceId: query.deviceId }]
          : scheduler.serving().map((s) => ({ ...s, deviceId: '' }));
        const settled = await Promise.allSettled(
          targets.map(async (t) => ({ workerId: t.worker.id, status: await t.client.getMemoryStatus(t.deviceId, { correlationId: context.correlationId }) })),
        );
        const devices = settled.flatMap((r) =>
          r.status === 'fulfilled'
            ? r.value.status.devices.map((d) => ({
                deviceId: d.deviceId,
                workerId: r.value.workerId,
                allocatedBytes: orNull(d.allocatedBytes),
                reservedBytes: orNull(d.reservedBytes),
                usedBytes: orNull(d.usedBytes),
                totalBytes: orNull(d.totalBytes),
                models: d.models.map((m) => ({ model: m.model, footprintBytes: m.footprintBytes })),
              }))
            : [],
        );
        return { status: 200, body: { devices, partial: settled.some((r) => r.status === 'rejected') } };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/api/memory/clear',
      operationId: 'clearMemory',
      summary: 'Empty allocator caches (and optionally unload idle models); reports the bytes freed as measured',
      tags: ['Memory'],
      auth: NEEDS_MODELS_MANAGE,
      audit: { action: 'memory.clear', target: ({ body }) => body.deviceId ?? 'all devices' },
      request: { body: ClearBody },
      responses: { 200: { description: 'What was freed.', schema: ClearResultSchema }, 404: { description: 'Unknown device.' } },
      handler: async ({ body, context }) => {
        const targets = body.deviceId
          ? [{ ...(await scheduler.locateDevice(body.deviceId, context.correlationId)).view, deviceId: body.deviceId }]
          : scheduler.serving().map((s) => ({ ...s, deviceId: '' }));
        if (targets.length === 0) throw new NotFoundError('No serving worker to clear.');
        let freedBytes = 0;
        const unloadedModels: string[] = [];
        for (const t of targets) {
          const result = await t.client.clearMemory(
            { deviceId: t.deviceId, unloadIdle: body.unloadIdle ?? false },
            { correlationId: context.correlationId },
          );
          freedBytes += result.freedBytes;
          unloadedModels.push(...result.unloadedModels);
          scheduler.invalidate(t.worker.id);
        }
        return { status: 200, body: { freedBytes, unloadedModels, workers: targets.map((t) => t.worker.id) } };
      },
    }),
  ];
}
