import type { Device__Output } from '../../generated/device_ops/v1/Device.js';
import type { WorkerInfo__Output } from '../../generated/device_ops/v1/WorkerInfo.js';
import type { CallOptions, HealthStatus, WorkerApi } from '../../infra/grpc/worker-client.js';
import type { WorkerHandle, WorkerPool, WorkerSnapshot, WorkerState } from './worker-handle.js';

/**
 * In-memory workers for unit tests of gateway logic (auth, validation,
 * aggregation). Integration tests use real worker processes instead.
 */
export class FakeWorker implements WorkerHandle, WorkerApi {
  /** Every call made, by rpc name, with its options. */
  readonly calls: { rpc: string; options: CallOptions }[] = [];
  devices: Device__Output[] = [];
  health: HealthStatus = 'SERVING';
  /** When set, every call fails with it. */
  failure: Error | null = null;
  state: WorkerState = 'serving';

  constructor(
    readonly workerId: string,
    readonly address = `fake://${workerId}`,
  ) {}

  get id(): string {
    return this.workerId;
  }

  get client(): WorkerApi | null {
    return this.state === 'restarting' ? null : this;
  }

  observeHealth(serving: boolean | 'unreachable'): void {
    this.state = serving === 'unreachable' ? 'unreachable' : serving ? 'serving' : 'not-serving';
  }

  snapshot(): WorkerSnapshot {
    return {
      id: this.id,
      address: this.address,
      metricsAddress: null,
      mode: 'remote',
      state: this.state,
      pid: null,
      restarts: 0,
      startedAt: null,
      lastExit: null,
      nextRestartAt: null,
    };
  }

  async getWorkerInfo(options: CallOptions = {}): Promise<WorkerInfo__Output> {
    this.record('GetWorkerInfo', options);
    return {
      workerId: this.id,
      version: 'fake',
      pid: 0,
      hostname: 'fake',
      startedAtUnixMs: 0,
      uptimeSeconds: 0,
      pythonVersion: 'fake',
      torchVersion: 'fake',
      cudaAvailable: false,
      deviceCount: this.devices.length,
      nvmlAvailable: false,
      metricsPort: 0,
    };
  }

  async listDevices(options: CallOptions = {}): Promise<{ devices: Device__Output[] }> {
    this.record('ListDevices', options);
    return { devices: this.devices };
  }

  async checkHealth(options: CallOptions = {}): Promise<HealthStatus> {
    this.record('Health/Check', options);
    return this.health;
  }

  close(): void {}

  private record(rpc: string, options: CallOptions): void {
    this.calls.push({ rpc, options });
    if (this.failure) throw this.failure;
  }
}

export class FakeWorkerPool implements WorkerPool {
  readonly mode = 'remote';

  constructor(readonly fakes: FakeWorker[]) {}

  workers(): readonly WorkerHandle[] {
    return this.fakes;
  }

  async start(): Promise<void> {}

  async stop(): Promise<void> {}

  /** Calls made to any fake worker. */
  get calls(): { workerId: string; rpc: string }[] {
    return this.fakes.flatMap((fake) => fake.calls.map((call) => ({ workerId: fake.id, rpc: call.rpc })));
  }
}
