import type { Knex } from 'knex';
import {
  fromDbTimestamp,
  fromDbTimestampOrNull,
  toDbTimestamp,
  toDbTimestampOrNull,
  type DbTimestamp,
} from '../../infra/database/columns.js';
import type { BatchStore } from '../sessions/session-store-type.js';
import type { Batch, BatchStatus } from '../sessions/session-types.js';

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

  async create(batch: { id: string; owner: string; itemCount: number }): Promise<Batch> {
    const row: BatchRow = {
      id: batch.id,
      owner: batch.owner,
      status: 'running',
      item_count: batch.itemCount,
      created_at: toDbTimestamp(new Date()),
      finished_at: null,
    };
    const [created] = await this.db(TABLE).insert(row).returning(COLUMNS);
    return mapRow(created as BatchRow);
  }

  async get(id: string): Promise<Batch | undefined> {
    const row = await this.db(TABLE).select(COLUMNS).where({ id }).first();
    return row ? mapRow(row as BatchRow) : undefined;
  }

  /** finishedAt undefined leaves the column as it is. Throws when the id is unknown. */
  async update(id: string, update: { status: BatchStatus; finishedAt?: Date | null }): Promise<Batch> {
    const patch: Partial<BatchRow> = { status: update.status };
    if (update.finishedAt !== undefined) patch.finished_at = toDbTimestampOrNull(update.finishedAt);
    const [row] = await this.db(TABLE).update(patch).where({ id }).returning(COLUMNS);
    if (!row) throw new Error(`batch ${id} does not exist`);
    return mapRow(row as BatchRow);
  }

  /** Running batches become interrupted (gateway restart); returns how many. */
  async interruptAll(finishedAt: Date): Promise<number> {
    return this.db(TABLE)
      .update({ status: 'interrupted', finished_at: toDbTimestamp(finishedAt) })
      .where('status', 'running');
  }
}
