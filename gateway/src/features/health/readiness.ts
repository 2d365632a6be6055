import type { WorkerPool } from '../workers/worker-handle.js';

export interface ReadinessReport {
  ready: boolean;
  /** Why not, one sentence each; empty when ready. */
  reasons: string[];
  servingWorkers: number;
}

/**
 * Readiness: at least one worker serving, the database answering, and the
 * gateway not draining. Cheap enough for an orchestrator's probe every few
 * seconds (one `select 1`, no worker call: worker state comes from the
 * supervisor and health checks).
 */
export class Readiness {
  private draining = false;
  private last = false;

  constructor(
    private readonly pool: WorkerPool,
    private readonly pingDatabase: () => Promise<number>,
    private readonly dbDeadlineMs = 2000,
  ) {}

  /** SIGTERM: readiness turns false at once so load balancers stop sending. */
  startDraining(): void {
    this.draining = true;
    this.last = false;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /** The last verdict, for metrics scraped without I/O. */
  get lastReady(): boolean {
    return this.last;
  }

  async check(): Promise<ReadinessReport> {
    const reasons: string[] = [];
    if (this.draining) reasons.push('the gateway is draining for shutdown');
    const servingWorkers = this.pool.workers().filter((w) => w.client !== null && w.snapshot().state === 'serving').length;
    if (servingWorkers === 0) reasons.push('no worker is serving');
    try {
      await Promise.race([
        this.pingDatabase(),
        new Promise((_, reject) => setTimeout(() => reject(new Error(`no answer within ${this.dbDeadlineMs} ms`)), this.dbDeadlineMs).unref()),
      ]);
    } catch (error) {
      reasons.push(`the database does not answer (${(error as Error).message})`);
    }
    this.last = reasons.length === 0;
    return { ready: this.last, reasons, servingWorkers };
  }
}
