import { GatewayError } from './gateway-error.js';
import { grpcCodeName, mapWorkerStatus } from './worker-status.js';

/** A call to a worker failed; carries the gRPC code, mapped to HTTP by the worker-status table. */
export class WorkerCallError extends GatewayError {
  readonly status: number;
  readonly type: string;
  readonly title: string;
  readonly grpcCode: string;
  private readonly capacity: boolean;

  constructor(
    readonly workerId: string,
    readonly rpc: string,
    code: number,
    detail: string,
  ) {
    super(detail);
    this.grpcCode = grpcCodeName(code);
    const mapping = mapWorkerStatus(this.grpcCode);
    this.status = mapping.httpStatus;
    this.type = mapping.type;
    this.title = mapping.title;
    this.capacity = mapping.capacity === true;
    this.extensions.workerId = workerId;
    if (mapping.retryAfterSeconds !== undefined) this.headers['Retry-After'] = String(mapping.retryAfterSeconds);
  }

  override isRefusal(): boolean {
    return this.capacity || super.isRefusal();
  }
}
