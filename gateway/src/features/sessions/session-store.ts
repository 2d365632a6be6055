import type { Knex } from 'knex';
import {
  fromDbCount,
  fromDbJson,
  fromDbJsonOrNull,
  fromDbTimestamp,
  fromDbTimestampOrNull,
  toDbJson,
  toDbJsonOrNull,
  toDbTimestamp,
  toDbTimestampOrNull,
  type DbTimestamp,
} from '../../infra/database/columns.js';
import { BatchDbStore } from '../batches/batch-store.js';
import { SessionEventDbStore } from './session-event-store.js';
import type { BatchStore, SessionEventStore, SessionStore } from './session-store-type.js';
import type { NewSession, Session, SessionQuery, SessionStatus, SessionUpdate } from './session-types.js';

const TABLE = 'sessions';

const COLUMNS = [
  'id',
  'owner',
  'task',
  'model',
  'device_id',
  'worker_id',
  'status',
  'parameters',
  'result',
  'error_code',
  'error_message',
  'batch_id',
  'created_at',
  'started_at',
  'finished_at',
] as const;

interface SessionRow {
  id: string;
  owner: string;
  task: string;
  model: string | null;
  device_id: string | null;
  worker_id: string | null;
  status: SessionStatus;
  /** jsonb on PostgreSQL (parsed), text on SQLite. */
  parameters: unknown;
  result: unknown;
  error_code: string | null;
  error_message: string | null;
  batch_id: string | null;
  created_at: DbTimestamp;
  started_at: DbTimestamp | null;
  finished_at: DbTimestamp | null;
}

function mapRow(row: SessionRow): Session {
  return {
    id: row.id,
    owner: row.owner,
    task: row.task,
    model: row.model,
    deviceId: row.device_id,
    workerId: row.worker_id,
    status: row.status,
    parameters: fromDbJson<Record<string, unknown>>(row.parameters),
    result: fromDbJsonOrNull<Record<string, unknown>>(row.result),
    error: row.error_code === null ? null : { code: row.error_code, message: row.error_message ?? '' },
    batchId: row.batch_id,
    createdAt: fromDbTimestamp(row.created_at),
    startedAt: fromDbTimestampOrNull(row.started_at),
    finishedAt: fromDbTimestampOrNull(row.finished_at),
  };
}

/** Only the fields the update names; undefined leaves a column as it is, null clears it. */
function toPatch(update: SessionUpdate): Partial<Record<(typeof COLUMNS)[number], unknown>> {
  const patch: Partial<Record<(typeof COLUMNS)[number], unknown>> = {};
  if (update.status !== undefined) patch.status = update.status;
  if (update.deviceId !== undefined) patch.device_id = update.deviceId;
  if (update.workerId !== undefined) patch.worker_id = update.workerId;
  if (update.result !== undefined) patch.result = toDbJsonOrNull(update.result);
  if (update.error !== undefined) {
    patch.error_code = update.error?.code ?? null;
    patch.error_message = update.error?.message ?? null;
  }
  if (update.startedAt !== undefined) patch.started_at = toDbTimestampOrNull(update.startedAt);
  if (update.finishedAt !== undefined) patch.finished_at = toDbTimestampOrNull(update.finishedAt);
  return patch;
}

export class SessionDbStore implements SessionStore {
  constructor(private readonly db: Knex) {}

  async create(session: NewSession): Promise<Session> {
    const row: SessionRow = {
      id: session.id,
      owner: session.owner,
      task: session.task,
      model: session.model,
      device_id: null,
      worker_id: null,
      status: 'queued',
      parameters: toDbJson(session.parameters),
      result: null,
      error_code: null,
      error_message: null,
      batch_id: session.batchId ?? null,
      created_at: toDbTimestamp(new Date()),
      started_at: null,
      finished_at: null,
    };
    const [created] = await this.db(TABLE).insert(row).returning(COLUMNS);
    return mapRow(created as SessionRow);
  }

  async get(id: string): Promise<Session | undefined> {
    const row = await this.db(TABLE).select(COLUMNS).where({ id }).first();
    return row ? mapRow(row as SessionRow) : undefined;
  }

  async list(query: SessionQuery): Promise<{ items: Session[]; total: number }> {
    const rows = await this.matching(query)
      .select(COLUMNS)
      .orderBy([
        { column: 'created_at', order: 'desc' },
        { column: 'id', order: 'desc' },
      ])
      .limit(query.limit)
      .offset(query.offset);
    const counted = await this.matching(query).count({ total: '*' });
    return { items: (rows as SessionRow[]).map(mapRow), total: fromDbCount(counted) };
  }

  async update(id: string, update: SessionUpdate): Promise<Session> {
    const patch = toPatch(update);
    const rows =
      Object.keys(patch).length === 0
        ? await this.db(TABLE).select(COLUMNS).where({ id })
        : await this.db(TABLE).update(patch).where({ id }).returning(COLUMNS);
    const [row] = rows as SessionRow[];
    if (!row) throw new Error(`session ${id} does not exist`);
    return mapRow(row);
  }

  async interruptAll(statuses: readonly SessionStatus[], finishedAt: Date): Promise<number> {
    if (statuses.length === 0) return 0;
    return this.db(TABLE)
      .update({ status: 'interrupted', finished_at: toDbTimestamp(finishedAt) })
      .whereIn('status', [...statuses]);
  }

  private matching(query: SessionQuery): Knex.QueryBuilder {
    const builder = this.db(TABLE);
    if (query.owner !== undefined) builder.where('owner', query.owner);
    if (query.status !== undefined) builder.where('status', query.status);
    if (query.batchId !== undefined) builder.where('batch_id', query.batchId);
    return builder;
  }
}

/** The three stores of the sessions feature, as services receive them. */
export interface SessionStores {
  sessions: SessionStore;
  events: SessionEventStore;
  batches: BatchStore;
}

/** The real wiring, over the gateway's database; createFakeSessionStores is its in-memory twin. */
export function createSessionStores(db: Knex): SessionStores {
  return { sessions: new SessionDbStore(db), events: new SessionEventDbStore(db), batches: new BatchDbStore(db) };
}
