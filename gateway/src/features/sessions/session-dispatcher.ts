import type { SessionBus } from '../../infra/bus/session-bus.js';
import type { Logger } from '../../infra/logger.js';
import type { WorkerScheduler } from '../scheduling/worker-scheduler.js';
import type { InstanceLease } from './instance-lease.js';
import type { SessionService } from './session-service.js';
import type { SessionStore } from './session-store-type.js';

/** How often the queue is looked at without a notification (one lost to a reconnect costs this). */
const POLL_MS = 500;
/** After a job went back to the queue for want of room, this long before the next claim. */
const CAPACITY_BACKOFF_MS = 250;

/**
 * This instance's part in running the deployment's sessions, on timers:
 * - renews its lease, and stops relaying what it no longer holds (a lease
 *   that ran out while it could not reach the database);
 * - takes over the sessions of instances whose lease ran out (they died):
 *   one sent to a worker is followed there (AttachJob), one never sent is
 *   dispatched;
 * - dispatches queued sessions, oldest first, while it has room and the
 *   workers do (row locks keep replicas from claiming the same one);
 * - ends queued sessions that waited past their queue deadline.
 * No protocol of its own between replicas: the database's rows and locks,
 * and the bus's notifications, are all they share.
 */
export class SessionDispatcher {
  private pollTimer: NodeJS.Timeout | null = null;
  private leaseTimer: NodeJS.Timeout | null = null;
  private pumping: Promise<void> | null = null;
  private again = false;
  private paused = false;
  private backoffUntil = 0;
  private readonly unsubscribe: (() => void)[] = [];

  constructor(
    private readonly deps: {
      sessions: SessionStore;
      service: SessionService;
      scheduler: WorkerScheduler;
      lease: InstanceLease;
      bus: SessionBus;
      logger: Logger;
    },
  ) {}

  async start(): Promise<void> {
    const { bus, service } = this.deps;
    this.unsubscribe.push(bus.onQueued(() => this.kick()));
    this.unsubscribe.push(bus.onCancel((id) => service.cancelIfRelayed(id)));
    service.onRelayDone((outcome) => {
      if (outcome.kind === 'requeued') this.backoffUntil = Date.now() + CAPACITY_BACKOFF_MS;
      this.kick();
    });
    this.pollTimer = setInterval(() => this.kick(), POLL_MS);
    this.pollTimer.unref();
    this.leaseTimer = setInterval(() => void this.renew(), Math.max(200, Math.floor(this.deps.lease.leaseMs / 3)));
    this.leaseTimer.unref();
    await this.renew();
    this.kick();
  }

  /** Claim nothing more (drain); what runs goes on. */
  pause(): void {
    this.paused = true;
  }

  async stop(): Promise<void> {
    this.paused = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.leaseTimer) clearInterval(this.leaseTimer);
    for (const off of this.unsubscribe.splice(0)) off();
    await this.pumping;
  }

  /** Look at the queue now (or right after the look under way). */
  kick(): void {
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = this.pump()
      .catch((error: unknown) => this.deps.logger.warn('could not look at the session queue', { err: error }))
      .finally(() => {
        this.pumping = null;
        if (this.again && !this.paused) {
          this.again = false;
          this.kick();
        }
      });
  }

  private async pump(): Promise<void> {
    const { sessions, service } = this.deps;
    for (const expired of await sessions.expireQueued(new Date())) {
      await service.endUnowned(expired, 'error', { ...expired.error! });
      this.deps.logger.info('queued session expired', { sessionId: expired.id });
    }
    if (this.paused || service.room <= 0 || Date.now() < this.backoffUntil || !(await sessions.hasQueued())) return;
    // What every worker runs and holds queued now (its own counts, every replica's jobs), at most a second old.
    await this.deps.scheduler.collectViews('session-dispatcher');
    while (!this.paused && service.room > 0 && Date.now() >= this.backoffUntil && this.workersHaveRoom()) {
      const claimed = await sessions.claimNext(service.instanceId);
      if (!claimed) return;
      if (claimed.cancelRequested) {
        const ended = await sessions.finish(claimed.session.id, { status: 'cancelled', finishedAt: new Date(), result: { reason: 'cancel-requested' }, error: null }, service.instanceId);
        if (ended) await service.endUnowned(ended, 'cancelled', { reason: 'cancel-requested' }, true);
        continue;
      }
      await service.adopt(claimed, { kind: 'dispatch' });
    }
  }

  /** Whether some serving worker reports room (the worker's own queue has the last word: a refusal requeues). */
  private workersHaveRoom(): boolean {
    return this.deps.scheduler.hasRoom();
  }

  private async renew(): Promise<void> {
    const { lease, sessions, service } = this.deps;
    if (!(await lease.renew())) return;
    try {
      // What the database says is ours; anything relayed here beyond it was taken over elsewhere.
      // (Relays are listed first: one started after the query would look lost.)
      const relayed = service.relayedIds();
      const held = new Set(await sessions.ownedBy(lease.id));
      const lost = relayed.filter((id) => !held.has(id));
      if (lost.length > 0) {
        this.deps.logger.warn('lost the lease on sessions: another instance relays them now', { count: lost.length });
        service.leave(lost, 'the lease ran out');
      }
      if (this.paused) return;
      const room = Math.min(service.room, 100);
      if (room <= 0) return;
      for (const claimed of await sessions.takeOver(lease.id, lease.liveSince(), room)) {
        const workerId = claimed.session.workerId;
        this.deps.logger.info('took over a session from an instance that went away', { sessionId: claimed.session.id, workerId });
        await service.adopt(claimed, workerId ? { kind: 'attach', workerId } : { kind: 'dispatch' });
      }
    } catch (error) {
      this.deps.logger.warn('could not check the sessions this instance holds', { err: error });
    }
  }
}
