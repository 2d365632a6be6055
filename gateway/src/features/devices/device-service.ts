import type { Device__Output } from '../../generated/device_ops/v1/Device.js';
import { ServiceUnavailableError } from '../../errors/gateway-error.js';
import type { WorkerPool } from '../workers/worker-handle.js';
import type { Device, DeviceList } from './device-schemas.js';

/** proto3 `optional` fields arrive absent when the worker did not report them. */
const orNull = <T>(value: T | undefined | null): T | null => value ?? null;

export function toDevice(workerId: string, device: Device__Output): Device {
  const cuda = device.cuda;
  const cpu = device.cpu;
  return {
    id: device.id,
    workerId,
    kind: device.kind === 'DEVICE_KIND_CUDA' ? 'cuda' : 'cpu',
    name: device.name,
    memory: {
      totalBytes: orNull(device.memory?.totalBytes),
      freeBytes: orNull(device.memory?.freeBytes),
    },
    supportedDtypes: device.supportedDtypes,
    cuda: cuda
      ? {
          index: cuda.index,
          uuid: orNull(cuda.uuid),
          computeCapability: cuda.computeCapability,
          multiprocessorCount: orNull(cuda.multiprocessorCount),
          utilizationPercent: orNull(cuda.utilizationPercent),
          memoryUtilizationPercent: orNull(cuda.memoryUtilizationPercent),
          temperatureCelsius: orNull(cuda.temperatureCelsius),
          powerWatts: orNull(cuda.powerWatts),
          powerLimitWatts: orNull(cuda.powerLimitWatts),
          driverVersion: orNull(cuda.driverVersion),
          cudaRuntimeVersion: orNull(cuda.cudaRuntimeVersion),
        }
      : null,
    cpu: cpu
      ? {
          modelName: orNull(cpu.modelName),
          logicalCores: orNull(cpu.logicalCores),
          physicalCores: orNull(cpu.physicalCores),
          architecture: cpu.architecture,
          torchThreads: cpu.torchThreads,
        }
      : null,
  };
}

export class DeviceService {
  constructor(
    private readonly pool: WorkerPool,
    private readonly deadlineMs: number,
  ) {}

  /**
   * Ask every worker in parallel, each with the deadline. Workers that fail
   * or do not answer in time are named in missingWorkers; if none answers
   * there is nothing to list and the call fails with 503.
   */
  async listDevices(correlationId: string): Promise<DeviceList> {
    const workers = this.pool.workers();
    const results = await Promise.all(
      workers.map(async (worker) => {
        const client = worker.client;
        if (!client) return { workerId: worker.id, error: `worker is ${worker.snapshot().state}` };
        try {
          const response = await client.listDevices({ correlationId, deadlineMs: this.deadlineMs });
          return { workerId: worker.id, devices: response.devices.map((d) => toDevice(worker.id, d)) };
        } catch (error) {
          return { workerId: worker.id, error: (error as Error).message };
        }
      }),
    );
    const devices = results.flatMap((r) => r.devices ?? []);
    const missingWorkers = results.flatMap((r) => (r.error === undefined ? [] : [{ workerId: r.workerId, reason: r.error }]));
    if (workers.length > 0 && missingWorkers.length === workers.length) {
      throw new ServiceUnavailableError(
        `No worker answered: ${missingWorkers.map((m) => `${m.workerId} (${m.reason})`).join('; ')}.`,
        5,
      );
    }
    return { devices, totalCount: devices.length, partial: missingWorkers.length > 0, missingWorkers };
  }
}
