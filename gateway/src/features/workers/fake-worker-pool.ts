import type { Device__Output } from '../../generated/device_ops/v1/Device.js';
import type { WorkerInfo__Output } from '../../generated/device_ops/v1/WorkerInfo.js';
import type { ModelDescriptor__Output } from '../../generated/device_ops/v1/ModelDescriptor.js';
import type { InferEvent__Output } from '../../generated/device_ops/v1/InferEvent.js';
import type { InferRequest } from '../../generated/device_ops/v1/InferRequest.js';
import type { ListModelsResponse__Output } from '../../generated/device_ops/v1/ListModelsResponse.js';
import type { ValidateModelResponse__Output } from '../../generated/device_ops/v1/ValidateModelResponse.js';
import type { LoadModelRequest } from '../../generated/device_ops/v1/LoadModelRequest.js';
import type { LoadModelResponse__Output } from '../../generated/device_ops/v1/LoadModelResponse.js';
import type { UnloadModelRequest } from '../../generated/device_ops/v1/UnloadModelRequest.js';
import type { UnloadModelResponse__Output } from '../../generated/device_ops/v1/UnloadModelResponse.js';
import type { MemoryStatus__Output } from '../../generated/device_ops/v1/MemoryStatus.js';
import type { ClearMemoryRequest } from '../../generated/device_ops/v1/ClearMemoryRequest.js';
import type { ClearMemoryResponse__Output } from '../../generated/device_ops/v1/ClearMemoryResponse.js';
import { status } from '@grpc/grpc-js';
import { WorkerCallError } from '../../errors/worker-call-error.js';
import type { CallOptions, HealthStatus, InferStream, WorkerApi } from '../../infra/grpc/worker-client.js';
import { remoteSnapshot, type WorkerHandle, type WorkerPool, type WorkerSnapshot, type WorkerState } from './worker-handle.js';

/**
 * In-memory workers for unit tests of gateway logic (auth, validation,
 * aggregation). Integration tests use real worker processes instead.
 */
export class FakeWorker implements WorkerHandle, WorkerApi {
  /** Every call made, by rpc name, with its options. */
  readonly calls: { rpc: string; options: CallOptions }[] = [];
  devices: Device__Output[] = [];
  models: ModelDescriptor__Output[] = [];
  /** Events every Infer call yields (then it ends); an Error entry makes the stream fail there. */
  inferScript: (InferEvent__Output | Error)[] = [];
  /** Infer requests received. */
  readonly inferRequests: InferRequest[] = [];
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
    return remoteSnapshot(this.id, this.address, this.state);
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

  async listModels(options: CallOptions = {}): Promise<ListModelsResponse__Output> {
    this.record('ListModels', options);
    return { models: this.models };
  }

  async validateModel(model: string, options: CallOptions = {}): Promise<ValidateModelResponse__Output> {
    this.record('ValidateModel', options);
    const found = this.models.find((m) => m.name === model);
    return { model: found ?? null, valid: found !== undefined, problems: found ? [] : [`no model ${model}`] };
  }

  async loadModel(request: LoadModelRequest, options: CallOptions = {}): Promise<LoadModelResponse__Output> {
    this.record('LoadModel', options);
    const placement = {
      deviceId: request.deviceId || `${this.id}:cpu`,
      dtype: request.dtype || 'float32',
      footprintBytes: 1024,
      lastUsedUnixMs: 0,
      inFlightJobs: 0,
    };
    return { placement, alreadyLoaded: false };
  }

  async unloadModel(_request: UnloadModelRequest, options: CallOptions = {}): Promise<UnloadModelResponse__Output> {
    this.record('UnloadModel', options);
    return { freedBytes: 1024 };
  }

  async cancelJob(_jobId: string, options: CallOptions = {}): Promise<boolean> {
    this.record('CancelJob', options);
    return true;
  }

  async getMemoryStatus(_deviceId: string, options: CallOptions = {}): Promise<MemoryStatus__Output> {
    this.record('GetMemoryStatus', options);
    return { devices: [] };
  }

  async clearMemory(_request: ClearMemoryRequest, options: CallOptions = {}): Promise<ClearMemoryResponse__Output> {
    this.record('ClearMemory', options);
    return { freedBytes: 0, unloadedModels: [] };
  }

  infer(request: InferRequest, options: CallOptions = {}): InferStream {
    this.record('Infer', options);
    this.inferRequests.push(request);
    const script = [...this.inferScript];
    let cancelled = false;
    async function* events(): AsyncGenerator<InferEvent__Output> {
      for (const step of script) {
        if (cancelled) return;
        if (step instanceof Error) throw step;
        yield step;
      }
    }
    return { events: events(), cancel: () => (cancelled = true) };
  }

  /** The fake keeps no finished jobs: every attach answers NOT_FOUND (override to script one). */
  attachJob(jobId: string, _afterSequence: number, options: CallOptions = {}): InferStream {
    this.record('AttachJob', options);
    const failure = new WorkerCallError(this.id, 'AttachJob', status.NOT_FOUND, `worker ${this.id} holds no job '${jobId}'`);
    return {
      events: { [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(failure) }) },
      cancel: () => {},
    };
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
