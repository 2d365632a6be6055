import { NotFoundError } from '../../errors/gateway-error.js';
import type { WorkerScheduler } from '../scheduling/worker-scheduler.js';
import type { ClearResultBody, MemoryStatusBody } from './memory-schemas.js';

const orNull = <T>(value: T | undefined) => value ?? null;

/**
 * Device memory across the workers: the allocator's view per device (every
 * serving worker asked in parallel, or the one holding a device), and
 * clearing caches — optionally unloading idle models — with the bytes freed
 * as the workers measured them.
 */
export class MemoryService {
  constructor(private readonly scheduler: WorkerScheduler) {}

  /** One device's worker, or every serving worker (the empty device id: all its devices). */
  private async targets(deviceId: string | undefined, correlationId: string) {
    return deviceId
      ? [{ ...(await this.scheduler.locateDevice(deviceId, correlationId)).view, deviceId }]
      : this.scheduler.serving().map((s) => ({ ...s, deviceId: '' }));
  }

  async status(deviceId: string | undefined, correlationId: string): Promise<MemoryStatusBody> {
    const targets = await this.targets(deviceId, correlationId);
    const settled = await Promise.allSettled(
      targets.map(async (t) => ({ workerId: t.worker.id, status: await t.client.getMemoryStatus(t.deviceId, { correlationId }) })),
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
    return { devices, partial: settled.some((r) => r.status === 'rejected') };
  }

  async clear(request: { deviceId?: string | undefined; unloadIdle?: boolean | undefined }, correlationId: string): Promise<ClearResultBody> {
    const targets = await this.targets(request.deviceId, correlationId);
    if (targets.length === 0) throw new NotFoundError('No serving worker to clear.');
    let freedBytes = 0;
    const unloadedModels: string[] = [];
    for (const t of targets) {
      const result = await t.client.clearMemory({ deviceId: t.deviceId, unloadIdle: request.unloadIdle ?? false }, { correlationId });
      freedBytes += result.freedBytes;
      unloadedModels.push(...result.unloadedModels);
      this.scheduler.invalidate(t.worker.id);
    }
    return { freedBytes, unloadedModels, workers: targets.map((t) => t.worker.id) };
  }
}
