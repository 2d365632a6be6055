import { DeviceService } from '../features/devices/device-service.js';
import type { DeviceList } from '../features/devices/device-schemas.js';
import type { WorkerScheduler } from '../features/scheduling/worker-scheduler.js';
import type { WorkerPool } from '../features/workers/worker-handle.js';

/**
 * DeviceService without its own work on the device list, for the bench's
 * "handler" layer: every request still calls ListDevices on every worker,
 * with the same deadline and correlation id, but the answers are not mapped
 * again: the list built for the first request is the answer.
 */
export class RelayOnlyDeviceService extends DeviceService {
  private first: DeviceList | null = null;

  constructor(
    private readonly relayPool: WorkerPool,
    scheduler: WorkerScheduler,
    private readonly relayDeadlineMs: number,
  ) {
    super(relayPool, scheduler, relayDeadlineMs);
  }

  override async listDevices(correlationId: string): Promise<DeviceList> {
    if (!this.first) return (this.first = await super.listDevices(correlationId));
    await Promise.all(this.relayPool.workers().map((worker) => worker.client?.listDevices({ correlationId, deadlineMs: this.relayDeadlineMs })));
    return this.first;
  }
}
