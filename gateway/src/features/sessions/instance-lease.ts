import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from '../../infra/logger.js';
import type { InstanceStore } from './session-store-type.js';

/**
 * This gateway process as the database knows it: an id, and a heartbeat
 * that is its lease on the sessions it relays. An instance whose heartbeat
 * is older than the lease (it died, froze, or lost the database) loses them
 * to a live one; one that stops says so, and loses them at once.
 */
export class InstanceLease {
  readonly id = randomUUID();

  constructor(
    private readonly store: InstanceStore,
    readonly leaseMs: number,
    private readonly logger: Logger,
  ) {}

  async register(): Promise<void> {
    await this.store.register({ id: this.id, hostname: hostname(), pid: process.pid, at: new Date() });
    this.logger.info('gateway instance registered', { instanceId: this.id, leaseSeconds: this.leaseMs / 1000 });
  }

  /** Renew the lease; false when the database could not be reached (the lease runs out meanwhile). */
  async renew(): Promise<boolean> {
    try {
      await this.store.heartbeat(this.id, new Date());
      return true;
    } catch (error) {
      this.logger.warn('could not renew the instance lease', { instanceId: this.id, err: error });
      return false;
    }
  }

  /** Instances with a heartbeat before this have lost their lease. */
  liveSince(): Date {
    return new Date(Date.now() - this.leaseMs);
  }

  /** Give the lease up: every session still held here goes to another instance at its next look. */
  async giveUp(): Promise<void> {
    try {
      await this.store.markStopped(this.id, new Date());
    } catch (error) {
      this.logger.warn('could not record the instance stopped; its lease runs out instead', { instanceId: this.id, err: error });
    }
  }
}
