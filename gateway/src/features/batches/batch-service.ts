import { randomUUID } from 'node:crypto';
import { NotFoundError, ServiceUnavailableError, ValidationError } from '../../errors/gateway-error.js';

/** How long a batch item refused for capacity waits before it asks again. */
const CAPACITY_RETRY_MS = 500;
import type { Logger } from '../../infra/logger.js';
import { isAdmin, type Principal } from '../auth/principal.js';
import type { InferenceRequest } from '../inference/inference-schemas.js';
import type { InferenceService } from '../inference/inference-service.js';
import type { WorkerScheduler } from '../scheduling/worker-scheduler.js';
import type { SessionService } from '../sessions/session-service.js';
import type { BatchStore, SessionStore } from '../sessions/session-store-type.js';
import type { Batch, BatchStatus, Session } from '../sessions/session-types.js';

interface RunningBatch {
  owner: string;
  pending: InferenceRequest[];
  cancelled: boolean;
  sessionIds: string[];
}

/**
 * Many inference items run as one batch: each item becomes a session of the
 * batch, at most `concurrency` running at once; the batch ends when every
 * item has, with a status summarising theirs.
 */
export class BatchService {
  private readonly running = new Map<string, RunningBatch>();
  private readonly finishing = new Set<Promise<void>>();
  /** Set on shutdown: no item starts any more. */
  private stopping = false;

  constructor(
    private readonly deps: {
      batches: BatchStore;
      sessions: SessionStore;
      sessionService: SessionService;
      inference: InferenceService;
      scheduler: WorkerScheduler;
      logger: Logger;
    },
  ) {}

  async interruptLeftovers(): Promise<number> {
    return this.deps.batches.interruptAll(new Date());
  }

  async create(items: InferenceRequest[], concurrency: number, principal: Principal, correlationId: string): Promise<Batch> {
    await this.preflight(items, correlationId);
    const batch = await this.deps.batches.create({ id: randomUUID(), owner: principal.id, itemCount: items.length });
    const state: RunningBatch = { owner: principal.id, pending: [...items], cancelled: false, sessionIds: [] };
    this.running.set(batch.id, state);
    const lanes = Array.from({ length: Math.min(concurrency, items.length) }, () => this.lane(batch.id, state, principal, correlationId));
    const finished = Promise.all(lanes)
      .then(() => this.finish(batch.id, state))
      .catch((error) => this.deps.logger.error('batch could not be finished', { batchId: batch.id, err: error }))
      .finally(() => this.finishing.delete(finished));
    this.finishing.add(finished);
    return batch;
  }

  async get(id: string, principal: Principal) {
    const batch = await this.deps.batches.get(id);
    if (!batch || (batch.owner !== principal.id && !isAdmin(principal))) {
      throw new NotFoundError(`No batch '${id}'.`);
    }
    const { items } = await this.deps.sessions.list({ batchId: id, limit: 1000, offset: 0 });
    const counts: Record<string, number> = {};
    for (const session of items) counts[session.status] = (counts[session.status] ?? 0) + 1;
    const finished = items.filter((s) => s.finishedAt !== null).length;
    return {
      batch,
      sessions: items,
      counts,
      progress: { finished, total: batch.itemCount, notStarted: batch.itemCount - items.length },
    };
  }

  async cancel(id: string, principal: Principal, correlationId: string) {
    const view = await this.get(id, principal);
    const state = this.running.get(id);
    if (state) {
      state.cancelled = true;
      state.pending.length = 0;
      await Promise.all(
        view.sessions.filter((s) => s.finishedAt === null).map((s) => this.deps.sessionService.cancel(s.id, principal, correlationId)),
      );
    }
    return this.get(id, principal);
  }

  /** Every item must name a model its task can run on, before the batch is accepted. */
  private async preflight(items: InferenceRequest[], correlationId: string): Promise<void> {
    const problems = [];
    for (const [index, item] of items.entries()) {
      try {
        const target = await this.deps.scheduler.choose({ model: item.model, deviceId: item.deviceId }, correlationId);
        await this.deps.inference.preflight(item, target, correlationId);
      } catch (error) {
        if (error instanceof NotFoundError || (error as { status?: number }).status === 409) {
          problems.push({ field: `body.items.${index}`, message: (error as Error).message });
        } else throw error;
      }
    }
    if (problems.length > 0) throw new ValidationError(problems);
  }

  /** Shutdown: start no further item; resolves when every batch has recorded how it ended (or after `timeoutMs`). */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    await Promise.race([
      Promise.allSettled([...this.finishing]),
      new Promise((resolve) => setTimeout(resolve, timeoutMs).unref()),
    ]);
  }

  private async lane(batchId: string, state: RunningBatch, principal: Principal, correlationId: string): Promise<void> {
    while (!state.cancelled && !this.stopping) {
      const item = state.pending.shift();
      if (!item) return;
      try {
        const running = await this.deps.inference.start(item, principal, correlationId, batchId);
        state.sessionIds.push(running.session.id);
        await running.done;
      } catch (error) {
        if (error instanceof ServiceUnavailableError && !this.stopping) {
          // No capacity right now: an accepted item waits its turn, it is not dropped.
          state.pending.unshift(item);
          await new Promise((resolve) => setTimeout(resolve, CAPACITY_RETRY_MS));
          continue;
        }
        this.deps.logger.warn('batch item could not start', { batchId, err: error });
      }
    }
  }

  private async finish(batchId: string, state: RunningBatch): Promise<void> {
    this.running.delete(batchId);
    const { items } = await this.deps.sessions.list({ batchId, limit: 1000, offset: 0 });
    const interrupted = this.stopping && !state.cancelled && (state.pending.length > 0 || items.some((s) => s.status === 'interrupted'));
    const status: BatchStatus = state.cancelled ? 'cancelled' : interrupted ? 'interrupted' : summarize(items);
    await this.deps.batches.update(batchId, { status, finishedAt: new Date() });
    this.deps.logger.info('batch finished', { batchId, status, sessions: items.length });
  }
}

function summarize(sessions: Session[]): BatchStatus {
  if (sessions.length > 0 && sessions.every((s) => s.status === 'succeeded')) return 'succeeded';
  if (sessions.every((s) => s.status !== 'succeeded')) return 'failed';
  return 'partial';
}
