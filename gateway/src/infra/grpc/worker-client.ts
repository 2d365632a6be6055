import * as grpc from '@grpc/grpc-js';
import type { WorkerServiceClient } from '../../generated/device_ops/v1/WorkerService.js';
import type { HealthClient } from '../../generated/grpc/health/v1/Health.js';
import type { WorkerInfo__Output } from '../../generated/device_ops/v1/WorkerInfo.js';
import type { ListDevicesResponse__Output } from '../../generated/device_ops/v1/ListDevicesResponse.js';
import type {
  HealthCheckResponse__Output,
  _grpc_health_v1_HealthCheckResponse_ServingStatus__Output as ServingStatus,
} from '../../generated/grpc/health/v1/HealthCheckResponse.js';
import { WorkerCallError } from '../../errors/worker-call-error.js';
import { WORKER_CHANNEL_OPTIONS } from './channel-options.js';
import { loadProtos, type Protos } from './protos.js';

export interface CallOptions {
  /** Correlation id of the HTTP request, sent as `x-request-id` metadata. */
  correlationId?: string;
  /** Overrides the client's default deadline. */
  deadlineMs?: number;
}

export type HealthStatus = ServingStatus;

type Callback<T> = (error: grpc.ServiceError | null, value?: T) => void;

/** What the gateway calls on a worker; WorkerClient over gRPC, fakes in unit tests. */
export interface WorkerApi {
  readonly workerId: string;
  readonly address: string;
  getWorkerInfo(options?: CallOptions): Promise<WorkerInfo__Output>;
  listDevices(options?: CallOptions): Promise<ListDevicesResponse__Output>;
  checkHealth(options?: CallOptions): Promise<HealthStatus>;
  close(): void;
}

/**
 * One worker's gRPC client: one channel, shared by the worker service and the
 * health service, reused for every call. Every call has a deadline.
 */
export class WorkerClient implements WorkerApi {
  private readonly worker: WorkerServiceClient;
  private readonly health: HealthClient;

  constructor(
    readonly workerId: string,
    readonly address: string,
    private readonly defaultDeadlineMs: number,
    protos: Protos = loadProtos(),
  ) {
    const credentials = grpc.credentials.createInsecure();
    this.worker = new protos.device_ops.v1.WorkerService(address, credentials, WORKER_CHANNEL_OPTIONS);
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

  close(): void {
    this.worker.close();
  }

  private unary<T>(
    rpc: string,
    options: CallOptions,
    invoke: (metadata: grpc.Metadata, callOptions: grpc.CallOptions, callback: Callback<T>) => unknown,
  ): Promise<T> {
    const deadlineMs = options.deadlineMs ?? this.defaultDeadlineMs;
    const metadata = new grpc.Metadata();
    if (options.correlationId) metadata.set('x-request-id', options.correlationId);
    return new Promise<T>((resolve, reject) => {
      invoke(metadata, { deadline: Date.now() + deadlineMs }, (error, value) => {
        if (error) reject(this.toError(rpc, error, deadlineMs));
        else resolve(value as T);
      });
    });
  }

  private toError(rpc: string, error: grpc.ServiceError, deadlineMs: number): WorkerCallError {
    const detail =
      error.code === grpc.status.DEADLINE_EXCEEDED
        ? `worker ${this.workerId} did not answer ${rpc} within ${deadlineMs} ms`
        : error.code === grpc.status.UNAVAILABLE
          ? `worker ${this.workerId} is unavailable (${error.details})`
          : error.details || `worker ${this.workerId} failed ${rpc}`;
    return new WorkerCallError(this.workerId, rpc, error.code, detail);
  }
}
