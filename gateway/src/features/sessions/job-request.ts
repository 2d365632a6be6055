import type { InferRequest } from '../../generated/device_ops/v1/InferRequest.js';
import { TASK_TO_PROTO, toInferRequest, type InferenceRequest } from '../inference/inference-schemas.js';

/**
 * A job as accepted, in a form any gateway instance can dispatch again: it
 * is stored with its session (`sessions.request`) until the session ends, so
 * a queued job survives the process that accepted it and a job that never
 * started can be sent again by whoever takes it over.
 */
export type StoredJob =
  | { kind: 'inference'; request: InferenceRequest }
  | {
      kind: 'postprocess';
      task: 'upscale' | 'enhance';
      model: string;
      /** An uploaded image, base64. */
      image?: string;
      /** An earlier job's output, "<session id>/<file>". */
      sourceOutput: string;
      scale?: number;
      adjustments?: Record<string, number>;
    };

/** What to run: everything the session records, and the job itself. */
export interface JobSpec {
  task: string;
  model: string | null;
  /** Pinned to a device: never moved to another worker. */
  deviceId?: string;
  /** Recorded with the session (no raw images or texts). */
  parameters: Record<string, unknown>;
  job: StoredJob;
}

/**
 * The worker request for a job. `keepRunningOnDisconnect`: the job outlives
 * the call, so the gateway process that sent it may die without losing it
 * (another instance reattaches); only CancelJob stops it.
 */
export function toWorkerRequest(jobId: string, deviceId: string, job: StoredJob): InferRequest {
  if (job.kind === 'inference') return { ...toInferRequest(jobId, job.request, deviceId), keepRunningOnDisconnect: true };
  return {
    jobId,
    model: job.model,
    task: TASK_TO_PROTO[job.task],
    deviceId,
    keepRunningOnDisconnect: true,
    postprocess: {
      ...(job.image ? { image: Buffer.from(job.image, 'base64') } : {}),
      sourceOutput: job.sourceOutput,
      ...(job.scale ? { scale: job.scale } : {}),
      ...(job.adjustments ? { adjustments: job.adjustments } : {}),
    },
  };
}
