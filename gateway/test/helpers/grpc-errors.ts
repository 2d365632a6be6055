import { status } from '@grpc/grpc-js';
import { WorkerCallError } from '../../src/errors/worker-call-error.js';

/** The error WorkerClient raises for a failed call, for fakes to throw. */
export function GrpcWorkerError(workerId: string, code: keyof typeof status, detail: string): WorkerCallError {
  return new WorkerCallError(workerId, 'test', status[code], detail);
}
