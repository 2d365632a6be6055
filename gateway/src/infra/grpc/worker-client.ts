import * as grpc from '@grpc/grpc-js';
import type { WorkerServiceClient } from '../../generated/device_ops/v1/WorkerService.js';
import type { HealthClient } from '../../generated/grpc/health/v1/Health.js';
import type { WorkerInfo__Output } from '../../generated/device_ops/v1/WorkerInfo.js';
import type { ListDevicesResponse__Output } from '../../generated/device_ops/v1/ListDevicesResponse.js';
import type { ListModelsResponse__Output } from '../../generated/device_ops/v1/ListModelsResponse.js';
import type { ValidateModelResponse__Output } from '../../generated/device_ops/v1/ValidateModelResponse.js';
import type { LoadModelRequest } from '../../generated/device_ops/v1/LoadModelRequest.js';
import type { LoadModelResponse__Output } from '../../generated/device_ops/v1/LoadModelResponse.js';
import type { UnloadModelRequest } from '../../generated/device_ops/v1/UnloadModelRequest.js';
import type { UnloadModelResponse__Output } from '../../generated/device_ops/v1/UnloadModelResponse.js';
import type { MemoryStatus__Output } from '../../generated/device_ops/v1/MemoryStatus.js';
import type { ClearMemoryRequest } from '../../generated/device_ops/v1/ClearMemoryRequest.js';
import type { ClearMemoryResponse__Output } from '../../generated/device_ops/v1/ClearMemoryResponse.js';
import type { InferRequest } from '../../generated/device_ops/v1/InferRequest.js';
import type { InferEvent__Output } from '../../generated/device_ops/v1/InferEvent.js';
import type {
  HealthCheckResponse__Output,
  _grpc_health_v1_HealthCheckResponse_ServingStatus__Output as ServingStatus,
} from '../../generated/grpc/health/v1/HealthCheckResponse.js';
import { WorkerCallError } from '../../errors/worker-call-error.js';
import { workerChannelOptions } from './channel-options.js';
import { loadProtos, type Protos } from './protos.js';
import { PLAINTEXT_CHANNEL, type WorkerChannelSecurity } from './worker-credentials.js';

export interface CallOptions {
  /** Correlation id of the HTTP request, sent as `x-request-id` metadata. */
  correlationId?: string;
  /** Overrides the client's default deadline. */
  deadlineMs?: number;
}

export type HealthStatus = ServingStatus;

type Callback<T> = (error: grpc.ServiceError | null, value?: T) => void;

/** A running Infer or AttachJob call: the job's events in order, and a way to end the call. */
export interface InferStream {
  /** Worker events until the terminal one; a failed call throws WorkerCallError. */
  events: AsyncIterable<InferEvent__Output>;
  /**
   * End the call. The job stops with it only when it was started without
   * keepRunningOnDisconnect; otherwise only CancelJob stops it.
   */
  cancel(): void;
}

/** What the gateway calls on a worker; WorkerClient over gRPC, fakes in unit tests. */
export interface WorkerApi {
  readonly workerId: string;
  readonly address: string;
  getWorkerInfo(options?: CallOptions): Promise<WorkerInfo__Output>;
  listDevices(options?: CallOptions): Promise<ListDevicesResponse__Output>;
  checkHealth(options?: CallOptions): Promise<HealthStatus>;
  listModels(options?: CallOptions): Promise<ListModelsResponse__Output>;
  validateModel(model: string, options?: CallOptions): Promise<ValidateModelResponse__Output>;
  loadModel(request: LoadModelRequest, options?: CallOptions): Promise<LoadModelResponse__Output>;
  unloadModel(request: UnloadModelRequest, options?: CallOptions): Promise<UnloadModelResponse__Output>;
  cancelJob(jobId: string, options?: CallOptions): Promise<boolean>;
  getMemoryStatus(deviceId: string, options?: CallOptions): Promise<MemoryStatus__Output>;
  clearMemory(request: ClearMemoryRequest, options?: CallOptions): Promise<ClearMemoryResponse__Output>;
  infer(request: InferRequest, options?: CallOptions): InferStream;
  /** Follow a job the worker runs or ran recently, from after `afterSequence` (replay, then live). */
  attachJob(jobId: string, afterSequence: number, options?: CallOptions): InferStream;
  close(): void;
}

/**
 * One worker's gRPC client: one channel, shared by the worker service and the
 * health service, reused for every call. Every call has a deadline and, when
 * the worker has a token, carries it (the health call too: a wrong token then
 * shows in health checks instead of a worker that refuses all work).
 */
/** Told about every finished call: which worker, which rpc, its gRPC status name, its duration. */
export type CallObserver = (workerId: string, rpc: string, code: string, seconds: number) => void;

const ignoreCalls: CallObserver = () => {};

export class WorkerClient implements WorkerApi {
  private readonly worker: WorkerServiceClient;
  private readonly health: HealthClient;
  // A private field: util.inspect and JSON.stringify of the client never show it.
  readonly #authorization: string | undefined;

  constructor(
    readonly workerId: string,
    readonly address: string,
    private readonly defaultDeadlineMs: number,
    protos: Protos = loadProtos(),
    security: WorkerChannelSecurity = PLAINTEXT_CHANNEL,
    private readonly observe: CallObserver = ignoreCalls,
  ) {
    const { credentials, token } = security;
    this.#authorization = token === undefined ? undefined : `Bearer ${token}`;
    const WorkerService = protos.device_ops.v1.WorkerService;
    this.worker = new WorkerService(address, credentials, { ...workerChannelOptions(WorkerService.service), ...security.channelOptions });
    this.health = new protos.grpc.health.v1.Health(address, credentials, {
      channelOverride: this.worker.getChannel(),
    });
  }

  getWorkerInfo(options: CallOptions = {}): Promise<WorkerInfo__Output> {
    return this.unary('GetWorkerInfo', options, (md, opts, cb) => this.worker.getWorkerInfo({}, md, opts, cb));
  }

  listDevices(options: CallOptions = {}): Promise<ListDevicesResponse__Output> {
    return this.unary('ListDevices', options, (md, opts, cb) => this.worker.listDevices({}, md, opts, cb));
  }

  /** grpc.health.v1 Check of the whole server (empty service name). */
  async checkHealth(options: CallOptions = {}): Promise<HealthStatus> {
    const response = await this.unary<HealthCheckResponse__Output>('Health/Check', options, (md, opts, cb) =>
      this.health.check({ service: '' }, md, opts, cb),
    );
    return response.status;
  }

  listModels(options: CallOptions = {}): Promise<ListModelsResponse__Output> {
    return this.unary('ListModels', options, (md, opts, cb) => this.worker.listModels({}, md, opts, cb));
  }

  validateModel(model: string, options: CallOptions = {}): Promise<ValidateModelResponse__Output> {
    return this.unary('ValidateModel', options, (md, opts, cb) => this.worker.validateModel({ model }, md, opts, cb));
  }

  loadModel(request: LoadModelRequest, options: CallOptions = {}): Promise<LoadModelResponse__Output> {
    return this.unary('LoadModel', options, (md, opts, cb) => this.worker.loadModel(request, md, opts, cb));
  }

  unloadModel(request: UnloadModelRequest, options: CallOptions = {}): Promise<UnloadModelResponse__Output> {
    return this.unary('UnloadModel', options, (md, opts, cb) => this.worker.unloadModel(request, md, opts, cb));
  }

  async cancelJob(jobId: string, options: CallOptions = {}): Promise<boolean> {
    const response = await this.unary<{ cancelled: boolean }>('CancelJob', options, (md, opts, cb) =>
      this.worker.cancelJob({ jobId }, md, opts, cb),
    );
    return response.cancelled;
  }

  getMemoryStatus(deviceId: string, options: CallOptions = {}): Promise<MemoryStatus__Output> {
    return this.unary('GetMemoryStatus', options, (md, opts, cb) => this.worker.getMemoryStatus({ deviceId }, md, opts, cb));
  }

  clearMemory(request: ClearMemoryRequest, options: CallOptions = {}): Promise<ClearMemoryResponse__Output> {
    return this.unary('ClearMemory', options, (md, opts, cb) => this.worker.clearMemory(request, md, opts, cb));
  }

  /** Start a job; its deadline bounds the whole stream. */
  infer(request: InferRequest, options: CallOptions = {}): InferStream {
    const deadlineMs = options.deadlineMs ?? this.defaultDeadlineMs;
    return this.eventStream('Infer', deadlineMs, this.worker.infer(request, this.metadata(options), { deadline: Date.now() + deadlineMs }));
  }

  attachJob(jobId: string, afterSequence: number, options: CallOptions = {}): InferStream {
    const deadlineMs = options.deadlineMs ?? this.defaultDeadlineMs;
    const call = this.worker.attachJob({ jobId, afterSequence }, this.metadata(options), { deadline: Date.now() + deadlineMs });
    return this.eventStream('AttachJob', deadlineMs, call);
  }

  private eventStream(rpc: string, deadlineMs: number, call: grpc.ClientReadableStream<InferEvent__Output>): InferStream {
    const toError = (error: grpc.ServiceError) => this.toError(rpc, error, deadlineMs);
    const started = performance.now();
    const observe = this.observe;
    const workerId = this.workerId;
    let cancelled = false;
    async function* events(): AsyncGenerator<InferEvent__Output> {
      let code: string | null = null;
      try {
        for await (const event of call as AsyncIterable<InferEvent__Output>) yield event;
      } catch (error) {
        const failure = toError(error as grpc.ServiceError);
        code = failure.grpcCode;
        throw failure;
      } finally {
        // Also when the consumer stops after the terminal event.
        observe(workerId, rpc, code ?? (cancelled ? 'CANCELLED' : 'OK'), (performance.now() - started) / 1000);
      }
    }
    return {
      events: events(),
      cancel: () => {
        cancelled = true;
        call.cancel();
      },
    };
  }

  close(): void {
    this.worker.close();
  }

  private metadata(options: CallOptions): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (options.correlationId) metadata.set('x-request-id', options.correlationId);
    if (this.#authorization) metadata.set('authorization', this.#authorization);
    return metadata;
  }

  private unary<T>(
    rpc: string,
    options: CallOptions,
    invoke: (metadata: grpc.Metadata, callOptions: grpc.CallOptions, callback: Callback<T>) => unknown,
  ): Promise<T> {
    const deadlineMs = options.deadlineMs ?? this.defaultDeadlineMs;
    const started = performance.now();
    return new Promise<T>((resolve, reject) => {
      invoke(this.metadata(options), { deadline: Date.now() + deadlineMs }, (error, value) => {
        const seconds = (performance.now() - started) / 1000;
        if (error) {
          const failure = this.toError(rpc, error, deadlineMs);
          this.observe(this.workerId, rpc, failure.grpcCode, seconds);
          reject(failure);
        } else {
          this.observe(this.workerId, rpc, 'OK', seconds);
          resolve(value as T);
        }
      });
    });
  }

  private toError(rpc: string, error: grpc.ServiceError, deadlineMs: number): WorkerCallError {
    return new WorkerCallError(this.workerId, rpc, error.code, this.errorDetail(rpc, error, deadlineMs));
  }

  private errorDetail(rpc: string, error: grpc.ServiceError, deadlineMs: number): string {
    switch (error.code) {
      case grpc.status.DEADLINE_EXCEEDED:
        return `worker ${this.workerId} did not answer ${rpc} within ${deadlineMs} ms`;
      case grpc.status.UNAVAILABLE:
        return `worker ${this.workerId} is unavailable (${error.details})`;
      case grpc.status.UNAUTHENTICATED:
        // Names the setting to check; never what was sent.
        return `worker ${this.workerId} refused the gateway's credentials (authentication failed: check WORKER_TOKEN)`;
      default:
        return error.details || `worker ${this.workerId} failed ${rpc}`;
    }
  }
}
