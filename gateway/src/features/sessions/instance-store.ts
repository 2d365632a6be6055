import type { Knex } from 'knex';
import { toDbTimestamp } from '../../infra/database/columns.js';
import type { InstanceStore } from './session-store-type.js';

const TABLE = 'gateway_instances';

export class InstanceDbStore implements InstanceStore {
  constructor(private readonly db: Knex) {}

  async register(instance: { id: string; hostname: string; pid: number; at: Date }): Promise<void> {
    const at = toDbTimestamp(instance.at);
    await this.db(TABLE).insert({ id: instance.id, hostname: instance.hostname, pid: instance.pid, started_at: at, heartbeat_at: at, stopped_at: null });
  }

  async heartbeat(id: string, at: Date): Promise<void> {
    await this.db(TABLE).update({ heartbeat_at: toDbTimestamp(at) }).where({ id }).whereNull('stopped_at');
  }

  async markStopped(id: string, at: Date): Promise<void> {
    await this.db(TABLE).update({ stopped_at: toDbTimestamp(at) }).where({ id });
  }
}

/** In-memory twin, for unit tests of logic. */
export class FakeInstanceStore implements InstanceStore {
  readonly rows = new Map<string, { heartbeatAt: Date; stoppedAt: Date | null }>();

  async register(instance: { id: string; at: Date }): Promise<void> {
    this.rows.set(instance.id, { heartbeatAt: instance.at, stoppedAt: null });
  }

  async heartbeat(id: string, at: Date): Promise<void> {
    const row = this.rows.get(id);
    if (row && !row.stoppedAt) row.heartbeatAt = at;
  }

  async markStopped(id: string, at: Date): Promise<void> {
    const row = this.rows.get(id);
    if (row) row.stoppedAt = at;
  }

  /** Whether an instance holds a live lease at `liveSince`. */
  isLive(id: string, liveSince: Date): boolean {
    const row = this.rows.get(id);
    return row !== undefined && row.stoppedAt === null && row.heartbeatAt >= liveSince;
  }
}
