import { WorkerCallError } from '../../errors/worker-call-error.js';
import type { MappedEvent } from './session-event-mapping.js';
import type { SessionError, SessionStatus } from './session-types.js';

/** How a relayed session ends. */
export type Terminal = { status: SessionStatus; result?: Record<string, unknown>; error?: SessionError };

/** What the relay knew when the job failed. */
export interface RelaySituation {
  /** Why the gateway itself stopped the job (shutdown), if it did. */
  interrupted: string | null;
  cancelRequested: boolean;
  /** queued until the worker said it started. */
  status: SessionStatus;
  workerId: string | null;
}

/** Cancelled while it waited, before any worker got it. */
export class CancelledBeforeStart extends Error {}

/** The end a worker's terminal event gives. */
export function toTerminal(event: MappedEvent): Terminal {
  if (event.type === 'result') return { status: 'succeeded', result: event.data };
  if (event.type === 'error') return { status: 'failed', error: { code: String(event.data.code), message: String(event.data.message) } };
  return { status: 'cancelled', result: { reason: event.data.reason } };
}

/**
 * The end a failure gives: interrupted when the gateway stopped the job,
 * cancelled when that was asked, else what the worker's status says — a
 * refusal before it accepted the job, a deadline, a job the worker no
 * longer holds after a takeover, or a worker lost (naming it, and whether
 * the job had started).
 */
export function terminalFor(error: unknown, at: RelaySituation): Terminal {
  if (at.interrupted) return interruption(at.interrupted);
  if (error instanceof CancelledBeforeStart) return { status: 'cancelled', result: { reason: 'cancel-requested' } };
  if (at.cancelRequested) return { status: 'cancelled' };
  if (error instanceof WorkerCallError) {
    if (error.rpc === 'AttachJob' && error.grpcCode === 'NOT_FOUND') {
      return {
        status: 'interrupted',
        error: { code: 'INTERRUPTED', message: `the gateway relaying the job went away and worker ${error.workerId} no longer holds it` },
      };
    }
    if (at.status === 'queued' && !['UNAVAILABLE', 'CANCELLED', 'DEADLINE_EXCEEDED'].includes(error.grpcCode)) {
      // Refused by the worker before it accepted the job (bad input it caught).
      return { status: 'failed', error: { code: error.grpcCode, message: error.detail } };
    }
    if (error.grpcCode === 'DEADLINE_EXCEEDED') {
      return { status: 'failed', error: { code: 'DEADLINE_EXCEEDED', message: `worker ${error.workerId} did not finish the job within its deadline` } };
    }
    return lostTerminal(error.detail, error.grpcCode, at);
  }
  const gatewayError = error as { status?: number; type?: string; detail?: string; message?: string };
  if (gatewayError.status !== undefined) {
    // The gateway refused to place it (no such model any more, no serving worker).
    return { status: 'failed', error: { code: (gatewayError.type ?? 'FAILED').toUpperCase().replace(/-/g, '_'), message: gatewayError.detail ?? gatewayError.message ?? '' } };
  }
  return { status: 'failed', error: { code: 'INTERNAL', message: 'The gateway failed while relaying the job.' } };
}

/** The worker went away with the job. */
export function lostTerminal(reason: string, code: string, at: RelaySituation): Terminal {
  if (at.interrupted) return interruption(at.interrupted);
  const when = at.status === 'running' ? 'while running the job' : 'before starting the job';
  return { status: 'failed', error: { code, message: `worker ${at.workerId ?? 'unknown'} was lost ${when}: ${reason}` } };
}

function interruption(reason: string): Terminal {
  return { status: 'interrupted', error: { code: 'INTERRUPTED', message: `the gateway stopped the job: ${reason}` } };
}
