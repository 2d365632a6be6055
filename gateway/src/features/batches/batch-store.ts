import type { Knex } from 'knex';
import {
  fromDbTimestamp,
  fromDbTimestampOrNull,
  toDbTimestamp,
  toDbTimestampOrNull,
  type DbTimestamp,
} from '../../infra/database/columns.js';
import type { BatchStore } from '../sessions/session-store-type.js';
import { TERMINAL_SESSION_STATUSES, type Batch, type BatchStatus, type SessionStatus } from '../sessions/session-types.js';

const TABLE = 'batches';

const COLUMNS = ['id', 'owner', 'status', 'item_count', 'created_at', 'finished_at'] as const;

interface BatchRow {
  id: string;
  owner: string;
  status: BatchStatus;
  item_count: number;
  created_at: DbTimestamp;
  finished_at: DbTimestamp | null;
}

function mapRow(row: BatchRow): Batch {
  return {
    id: row.id,
    owner: row.owner,
    status: row.status,
    itemCount: Number(row.item_count),
    createdAt: fromDbTimestamp(row.created_at),
    finishedAt: fromDbTimestampOrNull(row.finished_at),
  };
}

export class BatchDbStore implements BatchStore {
  constructor(private readonly db: Knex) {}

  async create(batch: { id: string; owner: string; itemCount: number; concurrency: number }): Promise<Batch> {
    const row = {
      id: batch.id,
      owner: batch.owner,
      status: 'running',
      item_count: batch.itemCount,
      created_at: toDbTimestamp(new Date()),
      finished_at: null,
      concurrency: batch.concurrency,
    };
    const [created] = await this.db(TABLE).insert(row).returning(COLUMNS);
    return mapRow(created as BatchRow);
  }

  async get(id: string): Promise<Batch | undefined> {
    const row = await this.db(TABLE).select(COLUMNS).where({ id }).first();
    return row ? mapRow(row as BatchRow) : undefined;
  }

  async requestCancel(id: string, at: Date): Promise<void> {
    await this.db(TABLE).update({ cancel_requested_at: toDbTimestamp(at) }).where({ id, status: 'running' }).whereNull('cancel_requested_at');
  }

  async finishIfDone(id: string, decide: (statuses: SessionStatus[], cancelled: boolean) => BatchStatus, at: Date): Promise<Batch | undefined> {
    const batch = (await this.db(TABLE).select('status', 'cancel_requested_at').where({ id }).first()) as
      | { status: string; cancel_requested_at: unknown }
      | undefined;
    if (!batch || batch.status !== 'running') return undefined;
    const statuses = ((await this.db('sessions').select('status').where('batch_id', id)) as { status: SessionStatus }[]).map((r) => r.status);
    if (statuses.length === 0 || statuses.some((s) => !TERMINAL_SESSION_STATUSES.includes(s))) return undefined;
    const status = decide(statuses, batch.cancel_requested_at !== null);
    const [row] = await this.db(TABLE)
      .update({ status, finished_at: toDbTimestampOrNull(at) })
      .where({ id, status: 'running' })
      .returning(COLUMNS);
    return row ? mapRow(row as BatchRow) : undefined;
  }
}
