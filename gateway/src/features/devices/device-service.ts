import type { Device__Output } from '../../generated/device_ops/v1/Device.js';
import { NotFoundError, ServiceUnavailableError } from '../../errors/gateway-error.js';
import { PROTO_TO_TASK } from '../inference/inference-schemas.js';
import type { WorkerScheduler } from '../scheduling/worker-scheduler.js';
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
    private readonly scheduler: WorkerScheduler,
    private readonly deadlineMs: number,
  ) {}

  async device(deviceId: string, correlationId: string): Promise<Device> {
    const list = await this.listDevices(correlationId);
    const device = list.devices.find((d) => d.id === deviceId);
    if (!device) throw new NotFoundError(`No device '${deviceId}' on the workers that answered.`);
    return device;
  }

  /** Live figures of one device: memory, utilization, jobs, resident models. */
  async status(deviceId: string, correlationId: string) {
    this.scheduler.invalidate();
    const { view, device } = await this.scheduler.locateDevice(deviceId, correlationId);
    const mapped = toDevice(view.worker.id, device);
    return {
      deviceId,
      workerId: view.worker.id,
      kind: mapped.kind,
      utilizationPercent: mapped.cuda?.utilizationPercent ?? null,
      temperatureCelsius: mapped.cuda?.temperatureCelsius ?? null,
      powerWatts: mapped.cuda?.powerWatts ?? null,
      memory: mapped.memory,
      runningJobs: device.runningJobs,
      queuedJobs: device.queuedJobs,
      queueCapacity: device.queueCapacity,
      loadedModels: view.models.flatMap((m) =>
        m.placements
          .filter((p) => p.deviceId === deviceId)
          .map((p) => ({ model: m.name, dtype: p.dtype, footprintBytes: p.footprintBytes, inFlightJobs: p.inFlightJobs })),
      ),
    };
  }

  async capabilities(deviceId: string, correlationId: string) {
    const { view, device } = await this.scheduler.locateDevice(deviceId, correlationId);
    const tasks = new Set(['enhance', 'upscale']);
    for (const model of view.models) for (const task of model.tasks) tasks.add(PROTO_TO_TASK[task] ?? task);
    return {
      deviceId,
      workerId: view.worker.id,
      kind: device.kind === 'DEVICE_KIND_CUDA' ? ('cuda' as const) : ('cpu' as const),
      dtypes: device.supportedDtypes,
      tasks: [...tasks].sort(),
      computeCapability: device.cuda?.computeCapability ?? null,
      totalMemoryBytes: device.memory?.totalBytes ?? null,
    };
  }

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
