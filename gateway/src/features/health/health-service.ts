import { statfs } from 'node:fs/promises';
import type { WorkerInfo__Output } from '../../generated/device_ops/v1/WorkerInfo.js';
import type { Device__Output } from '../../generated/device_ops/v1/Device.js';
import type { ModelDescriptor__Output } from '../../generated/device_ops/v1/ModelDescriptor.js';
import type { WorkerHandle, WorkerPool } from '../workers/worker-handle.js';
import type { DetailedHealth, WorkerHealth } from './health-schemas.js';

/** Something the gateway depends on besides workers (Redis, the database…), as /health/detailed shows it. */
export interface DependencyCheck {
  name: string;
  check(): Promise<{ healthy: boolean; detail: string | null; latencyMs?: number }>;
}

export interface HealthServiceOptions {
  deadlineMs: number;
  version: string;
  dependencies?: DependencyCheck[];
  /** Jobs this gateway has in flight on a worker. */
  inFlight?: (workerId: string) => number;
  /** Folders whose free space is reported (models, outputs, data). */
  disks?: { name: string; path: string }[];
}

/** Below this share of free space a disk is reported unhealthy. */
const MIN_FREE_SHARE = 0.05;

/** Aggregates every worker's gRPC health and info with the gateway's own facts. */
export class HealthService {
  private readonly startedAt = Date.now();

  constructor(
    private readonly pool: WorkerPool,
    private readonly options: HealthServiceOptions,
  ) {}

  async detailed(correlationId: string): Promise<DetailedHealth> {
    const [workers, dependencies, disks] = await Promise.all([
      Promise.all(this.pool.workers().map((w) => this.checkWorker(w, correlationId))),
      Promise.all((this.options.dependencies ?? []).map((d) => this.checkDependency(d))),
      Promise.all((this.options.disks ?? []).map((d) => this.checkDisk(d))),
    ]);
    const serving = workers.filter((w) => w.healthy).length;
    const allWell = serving === workers.length && dependencies.every((d) => d.healthy) && disks.every((d) => d.healthy);
    const status = serving === 0 ? 'unhealthy' : allWell ? 'healthy' : 'degraded';
    const memory = process.memoryUsage();
    return {
      status,
      timestamp: new Date().toISOString(),
      gateway: {
        version: this.options.version,
        pid: process.pid,
        uptimeSeconds: (Date.now() - this.startedAt) / 1000,
        nodeVersion: process.version,
        memory: { rssBytes: memory.rss, heapUsedBytes: memory.heapUsed },
      },
      workers,
      dependencies,
      disks,
    };
  }

  private async checkDisk(disk: { name: string; path: string }) {
    try {
      const stats = await statfs(disk.path);
      const freeBytes = stats.bavail * stats.bsize;
      const totalBytes = stats.blocks * stats.bsize;
      return { ...disk, freeBytes, totalBytes, healthy: totalBytes === 0 || freeBytes / totalBytes >= MIN_FREE_SHARE };
    } catch {
      return { ...disk, freeBytes: null, totalBytes: null, healthy: false };
    }
  }

  private async checkDependency(dependency: DependencyCheck) {
    try {
      const result = await dependency.check();
      return { name: dependency.name, healthy: result.healthy, detail: result.detail, latencyMs: result.latencyMs ?? null };
    } catch (error) {
      return { name: dependency.name, healthy: false, detail: (error as Error).message, latencyMs: null };
    }
  }

  private async checkWorker(worker: WorkerHandle, correlationId: string): Promise<WorkerHealth> {
    const client = worker.client;
    let healthy = false;
    let error: string | null = null;
    let latencyMs: number | null = null;
    let info: WorkerInfo__Output | null = null;
    let devices: Device__Output[] | null = null;
    let models: ModelDescriptor__Output[] = [];
    if (!client) {
      error = `worker is ${worker.snapshot().state}`;
    } else {
      const options = { correlationId, deadlineMs: this.options.deadlineMs };
      const started = performance.now();
      const [health, workerInfo, deviceList, modelList] = await Promise.allSettled([
        client.checkHealth(options),
        client.getWorkerInfo(options),
        client.listDevices(options),
        client.listModels(options),
      ]);
      if (deviceList.status === 'fulfilled') devices = deviceList.value.devices;
      if (modelList.status === 'fulfilled') models = modelList.value.models;
      latencyMs = performance.now() - started;
      if (health.status === 'fulfilled') {
        healthy = health.value === 'SERVING';
        if (!healthy) error = `health check answered ${health.value}`;
        worker.observeHealth(healthy);
      } else {
        error = (health.reason as Error).message;
        worker.observeHealth('unreachable');
      }
      if (workerInfo.status === 'fulfilled') info = workerInfo.value;
    }
    const snapshot = worker.snapshot();
    return {
      id: snapshot.id,
      mode: snapshot.mode,
      address: snapshot.address,
      state: snapshot.state,
      healthy,
      error,
      pid: info?.pid ?? snapshot.pid,
      uptimeSeconds: info?.uptimeSeconds ?? null,
      restarts: snapshot.restarts,
      deviceCount: info?.deviceCount ?? null,
      version: info?.version ?? null,
      torchVersion: info?.torchVersion ?? null,
      cudaAvailable: info?.cudaAvailable ?? null,
      latencyMs,
      lastExit: snapshot.lastExit
        ? { ...snapshot.lastExit, at: snapshot.lastExit.at.toISOString() }
        : null,
      nextRestartAt: snapshot.nextRestartAt?.toISOString() ?? null,
      inFlightJobs: this.options.inFlight?.(snapshot.id) ?? 0,
      runningJobs: devices ? devices.reduce((sum, d) => sum + d.runningJobs, 0) : null,
      queuedJobs: devices ? devices.reduce((sum, d) => sum + d.queuedJobs, 0) : null,
      loadedModels: models.flatMap((m) => m.placements.map((p) => ({ model: m.name, deviceId: p.deviceId, footprintBytes: p.footprintBytes }))),
      devices: (devices ?? []).map((d) => ({
        id: d.id,
        kind: d.kind === 'DEVICE_KIND_CUDA' ? ('cuda' as const) : ('cpu' as const),
        totalBytes: d.memory?.totalBytes ?? null,
        freeBytes: d.memory?.freeBytes ?? null,
      })),
    };
  }
}
