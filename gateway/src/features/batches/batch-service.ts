import { randomUUID } from 'node:crypto';
import { NotFoundError, UnprocessableContentError } from '../../errors/gateway-error.js';
import type { Logger } from '../../infra/logger.js';
import { isAdmin, type Principal } from '../auth/principal.js';
import type { InferenceRequest } from '../inference/inference-schemas.js';
import type { InferenceService } from '../inference/inference-service.js';
import type { WorkerScheduler } from '../scheduling/worker-scheduler.js';
import type { SessionService } from '../sessions/session-service.js';
import type { BatchStore, SessionStore } from '../sessions/session-store-type.js';
import { TERMINAL_SESSION_STATUSES, type Batch, type BatchStatus, type SessionStatus } from '../sessions/session-types.js';

/**
 * Many inference items as one batch: every item is stored at once as a
 * queued session of the batch, dispatched like any background session by
 * whichever instance has room — at most `concurrency` of them relayed at
 * once, counted over every instance — and the batch ends when its last item
 * has, recorded by the instance that ended it (a compare-and-set).
 */
export class BatchService {
  constructor(
    private readonly deps: {
      batches: BatchStore;
      sessions: SessionStore;
      sessionService: SessionService;
      inference: InferenceService;
      scheduler: WorkerScheduler;
      logger: Logger;
    },
  ) {
    deps.sessionService.onEnded((session) => {
      if (session.batchId) void this.finishIfDone(session.batchId);
    });
  }

  async create(items: InferenceRequest[], concurrency: number, principal: Principal, correlationId: string): Promise<Batch> {
    await this.preflight(items, correlationId);
    const batch = await this.deps.batches.create({ id: randomUUID(), owner: principal.id, itemCount: items.length, concurrency });
    for (const item of items) {
      await this.deps.sessionService.enqueue(this.deps.inference.spec(item), principal, { correlationId, batchId: batch.id });
    }
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
    // Never sent to a worker: waiting in the queue, or ended there (cancelled, expired).
    const notStarted = items.filter((s) => s.workerId === null && s.startedAt === null).length;
    return { batch, sessions: items, counts, progress: { finished, total: batch.itemCount, notStarted } };
  }

  /** Items still waiting never start; running ones are stopped on their workers, wherever they are relayed. */
  async cancel(id: string, principal: Principal, correlationId: string) {
    const view = await this.get(id, principal);
    if (view.batch.status === 'running') {
      await this.deps.batches.requestCancel(id, new Date());
      for (const session of view.sessions) {
        if (!TERMINAL_SESSION_STATUSES.includes(session.status)) await this.deps.sessionService.cancel(session.id, principal, correlationId);
      }
      await this.finishIfDone(id);
    }
    return this.get(id, principal);
  }

  /** Every item must name a model its task can run on, before the batch is accepted. */
  private async preflight(items: InferenceRequest[], correlationId: string): Promise<void> {
    const problems = [];
    for (const [index, item] of items.entries()) {
      try {
        const target = await this.deps.scheduler.choose({ model: item.model, deviceId: item.deviceId }, correlationId, [], { ignoreCapacity: true });
        await this.deps.inference.preflight(item, target, correlationId);
      } catch (error) {
        if (error instanceof NotFoundError || (error as { status?: number }).status === 409) {
          problems.push({ field: `body.items.${index}`, message: (error as Error).message });
        } else throw error;
      }
    }
    if (problems.length > 0) throw new UnprocessableContentError(problems);
  }

  private async finishIfDone(batchId: string): Promise<void> {
    try {
      const batch = await this.deps.batches.finishIfDone(batchId, summarize, new Date());
      if (batch) this.deps.logger.info('batch finished', { batchId, status: batch.status, items: batch.itemCount });
    } catch (error) {
      this.deps.logger.error('batch could not be finished', { batchId, err: error });
    }
  }
}

function summarize(statuses: SessionStatus[], cancelled: boolean): BatchStatus {
  if (cancelled) return 'cancelled';
  if (statuses.every((s) => s === 'succeeded')) return 'succeeded';
  if (statuses.every((s) => s !== 'succeeded')) return 'failed';
  return 'partial';
}
