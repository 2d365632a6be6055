import type { WorkerApi } from '../../infra/grpc/worker-client.js';

/**
 * What the gateway knows about a worker without asking it.
 * starting — launched, not yet SERVING; serving — answered SERVING;
 * not-serving — reachable but not SERVING; restarting — exited, waiting for
 * its backoff; crash-loop — exited again and again in a short window,
 * retried slowly; unreachable — did not answer its health check in time;
 * draining — finishing its work before it stops; stopped — stopped by the
 * gateway.
 */
export type WorkerState =
  | 'starting'
  | 'serving'
  | 'not-serving'
  | 'restarting'
  | 'crash-loop'
  | 'unreachable'
  | 'draining'
  | 'stopped';

export interface WorkerExit {
  code: number | null;
  signal: string | null;
  at: Date;
  /** Why, in words: "exit code 1", "killed by the out-of-memory killer", "device failure reported by the worker"… */
  cause: string;
  /** Last line the worker wrote to stderr before exiting, if any. */
  lastError: string | null;
}

export interface WorkerSnapshot {
  id: string;
  /** host:port the gateway calls; null while a local worker has no port. */
  address: string | null;
  /** host:port of the worker's Prometheus endpoint, when known. */
  metricsAddress: string | null;
  /** Whether the gateway launched it (local) or was given its address (remote). */
  mode: 'local' | 'remote';
  state: WorkerState;
  pid: number | null;
  restarts: number;
  startedAt: Date | null;
  lastExit: WorkerExit | null;
  nextRestartAt: Date | null;
}

/** What the gateway knows of a worker it did not start: where it is, and what its health checks found. */
export function remoteSnapshot(id: string, address: string, state: WorkerState): WorkerSnapshot {
  return {
    id,
    address,
    metricsAddress: null,
    mode: 'remote',
    state,
    pid: null,
    restarts: 0,
    startedAt: null,
    lastExit: null,
    nextRestartAt: null,
  };
}

export interface WorkerHandle {
  readonly id: string;
  /** The worker's client; null while there is nothing to call (restarting). */
  readonly client: WorkerApi | null;
  snapshot(): WorkerSnapshot;
  /** Record what a live health check or a failed call found. */
  observeHealth(serving: boolean | 'unreachable'): void;
}

export interface WorkerPool {
  readonly mode: 'local' | 'remote';
  /** Launch or connect; resolves when each worker served or failed its first start. */
  start(): Promise<void>;
  /** Stop local workers (SIGTERM, then SIGKILL after the grace) and close channels. */
  stop(): Promise<void>;
  workers(): readonly WorkerHandle[];
}
