import type { Config } from '../../config/config.js';
import type { Logger } from '../../infra/logger.js';
import { WorkerClient, type CallObserver } from '../../infra/grpc/worker-client.js';
import { loadProtos } from '../../infra/grpc/protos.js';
import { remoteWorkerChannel } from '../../infra/grpc/worker-credentials.js';
import type { WorkerHandle, WorkerPool, WorkerSnapshot, WorkerState } from './worker-handle.js';

/** A worker the gateway did not launch (docker-compose, Kubernetes): known by address only. */
class RemoteWorker implements WorkerHandle {
  private state: WorkerState = 'starting';

  constructor(readonly client: WorkerClient) {}

  get id(): string {
    return this.client.workerId;
  }

  observeHealth(serving: boolean | 'unreachable'): void {
    this.state = serving === 'unreachable' ? 'unreachable' : serving ? 'serving' : 'not-serving';
  }

  snapshot(): WorkerSnapshot {
    return {
      id: this.id,
      address: this.client.address,
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
}

export class RemoteWorkerPool implements WorkerPool {
  readonly mode = 'remote';
  private readonly handles: RemoteWorker[];

  constructor(
    private readonly config: Config,
    private readonly logger: Logger,
    addresses: readonly string[],
    observe?: CallObserver,
  ) {
    const channel = remoteWorkerChannel(config);
    // Named by address: stable for as long as the deployment keeps it.
    this.handles = addresses.map(
      (address) => new RemoteWorker(new WorkerClient(address, address, config.grpcDeadlineMs, loadProtos(), channel, observe)),
    );
    this.logger.info('remote worker channel', {
      tls: config.workerTlsCa === undefined ? 'off' : config.workerTlsCert === undefined ? 'server' : 'mutual',
      token: config.workerToken !== undefined,
    });
  }

  workers(): readonly WorkerHandle[] {
    return this.handles;
  }

  /** One health check each so the first /health/detailed has a state; never blocks on a dead worker. */
  async start(): Promise<void> {
    await Promise.all(
      this.handles.map(async (worker) => {
        try {
          const status = await worker.client.checkHealth({ deadlineMs: this.config.healthCheckDeadlineMs });
          worker.observeHealth(status === 'SERVING');
        } catch (error) {
          worker.observeHealth('unreachable');
          this.logger.warn('remote worker did not answer its first health check', { workerId: worker.id, err: error });
        }
      }),
    );
  }

  async stop(): Promise<void> {
    for (const worker of this.handles) worker.client.close();
  }
}
