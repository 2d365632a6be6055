import type { Logger } from '../../infra/logger.js';
import type { WorkerPool, WorkerState } from './worker-handle.js';

/**
 * Checks every worker's gRPC health at a fixed interval with a deadline, so
 * a worker that stops answering (frozen, partitioned) is marked unreachable
 * within seconds and taken out of scheduling, and one that answers again is
 * taken back. Polling rather than a Watch stream: a frozen peer keeps a Watch
 * open silently until keepalive gives up; a Check with a deadline does not.
 */
export class HealthMonitor {
  private timer: NodeJS.Timeout | null = null;
  private running = false;

  constructor(
    private readonly pool: WorkerPool,
    private readonly intervalMs: number,
    private readonly deadlineMs: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.checkAll(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async checkAll(): Promise<void> {
    if (this.running) return; // the previous round is still waiting on a deadline
    this.running = true;
    try {
      await Promise.all(
        this.pool.workers().map(async (worker) => {
          const client = worker.client;
          if (!client) return;
          const before: WorkerState = worker.snapshot().state;
          let backstop: NodeJS.Timeout | undefined;
          try {
            // The client enforces the deadline; the race is a backstop so a call that never settles cannot stall every later round.
            const status = await Promise.race([
              client.checkHealth({ deadlineMs: this.deadlineMs }),
              new Promise<never>((_, reject) => {
                backstop = setTimeout(() => reject(new Error('health check did not settle')), this.deadlineMs + 1000);
              }),
            ]);
            worker.observeHealth(status === 'SERVING');
          } catch {
            worker.observeHealth('unreachable');
          } finally {
            clearTimeout(backstop);
          }
          const after = worker.snapshot().state;
          if (after === before) return;
          if (after === 'unreachable') this.logger.warn('worker stopped answering its health checks', { workerId: worker.id, was: before });
          else if (before === 'unreachable') this.logger.info('worker answers again', { workerId: worker.id, state: after });
        }),
      );
    } finally {
      this.running = false;
    }
  }
}
