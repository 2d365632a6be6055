import type { InferEvent__Output } from '../../generated/device_ops/v1/InferEvent.js';
import type { InferResult__Output } from '../../generated/device_ops/v1/InferResult.js';

/** A worker event as the session records it. */
export interface MappedEvent {
  type: string;
  data: Record<string, unknown>;
}

/** Events that end a job's stream: exactly one per job. */
export const TERMINAL_EVENT_TYPES: ReadonlySet<string> = new Set(['result', 'error', 'cancelled']);

/** The session event for a worker's InferEvent; null for one the session does not record. */
export function mapWorkerEvent(
  sessionId: string,
  workerId: string,
  event: InferEvent__Output,
  outputUrl: (sessionId: string, file: string) => string,
): MappedEvent | null {
  switch (event.event) {
    case 'accepted':
      return { type: 'accepted', data: { sessionId, workerId } };
    case 'queued':
      return { type: 'queued', data: { position: event.queued!.position, deviceId: event.queued!.deviceId } };
    case 'started':
      return { type: 'started', data: { deviceId: event.started!.deviceId, workerId } };
    case 'progress':
      return { type: 'progress', data: { current: event.progress!.current, total: event.progress!.total } };
    case 'result':
      return { type: 'result', data: resultSummary(sessionId, workerId, event.result!, outputUrl) };
    case 'error':
      return { type: 'error', data: { code: event.error!.code, message: event.error!.message } };
    case 'cancelled':
      return { type: 'cancelled', data: { reason: event.cancelled!.reason } };
    default:
      return null;
  }
}

function resultSummary(
  sessionId: string,
  workerId: string,
  result: InferResult__Output,
  outputUrl: (sessionId: string, file: string) => string,
): Record<string, unknown> {
  const summary: Record<string, unknown> = {
    deviceId: result.deviceId,
    workerId,
    model: result.model || null,
    dtype: result.dtype || null,
    runMs: Math.round(result.runMs * 1000) / 1000,
    batchSize: result.batchSize,
  };
  if (result.seed !== undefined) summary.seed = result.seed;
  if (result.files.length > 0) {
    summary.files = result.files.map((file) => {
      const name = file.path.split('/').pop()!;
      return {
        name,
        url: outputUrl(sessionId, name),
        mediaType: file.mediaType,
        sizeBytes: file.sizeBytes,
        sha256: file.sha256,
        width: file.width,
        height: file.height,
      };
    });
  }
  if (result.embeddings.length > 0) summary.embeddings = result.embeddings.map((e) => e.values);
  if (result.promptTokens > 0) summary.promptTokens = result.promptTokens;
  const tensors = Object.entries(result.tensors);
  if (tensors.length > 0) {
    summary.tensors = Object.fromEntries(
      tensors.map(([name, t]) => [name, { dtype: t.dtype, shape: t.shape, data: Buffer.from(t.data).toString('base64') }]),
    );
  }
  return summary;
}
