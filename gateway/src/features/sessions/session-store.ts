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
import type { StoredJob } from './job-request.js';
import { InstanceDbStore } from './instance-store.js';
import { SessionEventDbStore } from './session-event-store.js';
import type { BatchStore, ClaimedSession, Dispatched, InstanceStore, SessionEventStore, SessionStore } from './session-store-type.js';
import {
  TERMINAL_SESSION_STATUSES,
  type NewSession,
  type Session,
  type SessionEnd,
  type SessionQuery,
  type SessionStatus,
  type SessionUpdate,
} from './session-types.js';

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

/** What a claim also reads: the job and how to dispatch it. */
const CLAIM_COLUMNS = [...COLUMNS, 'request', 'correlation_id', 'deadline_at', 'cancel_requested_at', 'dispatch_count', 'dispatch_sequence'] as const;

const UNENDED: SessionStatus[] = ['queued', 'running'];

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

interface ClaimRow extends SessionRow {
  request: unknown;
  correlation_id: string | null;
  deadline_at: DbTimestamp | null;
  cancel_requested_at: DbTimestamp | null;
  dispatch_count: number | string;
  dispatch_sequence: number | string;
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

function mapClaim(row: ClaimRow): ClaimedSession {
  return {
    session: mapRow(row),
    job: fromDbJson<StoredJob>(row.request),
    correlationId: row.correlation_id,
    deadlineAt: fromDbTimestampOrNull(row.deadline_at),
    cancelRequested: row.cancel_requested_at !== null,
    dispatchCount: Number(row.dispatch_count),
    dispatchSequence: Number(row.dispatch_sequence),
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
  private readonly postgres: boolean;

  constructor(private readonly db: Knex) {
    this.postgres = db.client.dialect === 'postgresql';
  }

  async create(session: NewSession): Promise<Session> {
    const row = {
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
      owner_instance: session.ownerInstance,
      request: toDbJson(session.job),
      correlation_id: session.correlationId,
      queue_deadline_at: toDbTimestampOrNull(session.queueDeadlineAt ?? null),
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

  async finish(id: string, end: SessionEnd, owner: string | null): Promise<Session | undefined> {
    const patch = {
      ...toPatch({ status: end.status, finishedAt: end.finishedAt, result: end.result, error: end.error, ...(end.workerId !== undefined ? { workerId: end.workerId } : {}) }),
      // The owner stays recorded: its events (the terminal one included) are fenced by it.
      request: null,
    };
    const query = this.db(TABLE).update(patch).where({ id }).whereNotIn('status', [...TERMINAL_SESSION_STATUSES]);
    if (owner === null) query.whereNull('owner_instance');
    else query.where('owner_instance', owner);
    const [row] = (await query.returning(COLUMNS)) as SessionRow[];
    return row ? mapRow(row) : undefined;
  }

  async dispatch(id: string, owner: string, target: { workerId: string; deadlineAt: Date; afterSequence: number }): Promise<Dispatched | null> {
    const [row] = (await this.db(TABLE)
      .update({
        worker_id: target.workerId,
        deadline_at: toDbTimestamp(target.deadlineAt),
        dispatch_sequence: target.afterSequence,
        dispatch_count: this.db.raw('dispatch_count + 1'),
      })
      .where({ id, owner_instance: owner })
      .whereIn('status', UNENDED)
      .returning(['cancel_requested_at'])) as { cancel_requested_at: unknown }[];
    return row ? { cancelRequested: row.cancel_requested_at !== null } : null;
  }

  async hasQueued(): Promise<boolean> {
    return (await this.db(TABLE).select('id').where('status', 'queued').whereNull('owner_instance').first()) !== undefined;
  }

  async claimNext(owner: string): Promise<ClaimedSession | undefined> {
    return this.db.transaction(async (trx) => {
      const candidate = trx(`${TABLE} as s`)
        .select('s.id')
        .where('s.status', 'queued')
        .whereNull('s.owner_instance')
        // A batch's items: no more relayed at once than its concurrency, counted over every instance.
        .where((q) =>
          q
            .whereNull('s.batch_id')
            .orWhereRaw(
              `(select count(*) from sessions d where d.batch_id = s.batch_id and d.owner_instance is not null and d.status in ('queued', 'running'))
                < coalesce((select b.concurrency from batches b where b.id = s.batch_id), 1000000)`,
            ),
        )
        .orderBy([
          { column: 's.created_at', order: 'asc' },
          { column: 's.id', order: 'asc' },
        ])
        .first();
      // PostgreSQL: replicas claiming at once each skip what another has locked.
      if (this.postgres) candidate.forUpdate('s').skipLocked();
      const found = (await candidate) as { id: string } | undefined;
      if (!found) return undefined;
      const [row] = (await trx(TABLE)
        .update({ owner_instance: owner })
        .where({ id: found.id, status: 'queued' })
        .whereNull('owner_instance')
        .returning(CLAIM_COLUMNS)) as ClaimRow[];
      return row ? mapClaim(row) : undefined;
    });
  }

  async takeOver(owner: string, liveSince: Date, limit: number): Promise<ClaimedSession[]> {
    return this.db.transaction(async (trx) => {
      const orphans = trx(`${TABLE} as s`)
        .select('s.id')
        .whereIn('s.status', UNENDED)
        .whereNotNull('s.owner_instance')
        .whereNot('s.owner_instance', owner)
        .whereNotExists(
          trx('gateway_instances as g')
            .select(trx.raw('1'))
            .whereRaw('g.id = s.owner_instance')
            .where('g.heartbeat_at', '>=', toDbTimestamp(liveSince))
            .whereNull('g.stopped_at'),
        )
        .orderBy('s.created_at', 'asc')
        .limit(limit);
      if (this.postgres) orphans.forUpdate('s').skipLocked();
      const ids = ((await orphans) as { id: string }[]).map((r) => r.id);
      if (ids.length === 0) return [];
      const rows = (await trx(TABLE)
        .update({ owner_instance: owner })
        .whereIn('id', ids)
        .whereIn('status', UNENDED)
        .whereNotNull('owner_instance')
        .returning(CLAIM_COLUMNS)) as ClaimRow[];
      return rows.map(mapClaim);
    });
  }

  async release(id: string, owner: string): Promise<boolean> {
    const count = await this.db(TABLE).update({ owner_instance: null, worker_id: null }).where({ id, owner_instance: owner, status: 'queued' });
    return count > 0;
  }

  async expireQueued(now: Date): Promise<Session[]> {
    const rows = (await this.db(TABLE)
      .update({
        status: 'failed',
        finished_at: toDbTimestamp(now),
        error_code: 'QUEUE_TIMEOUT',
        error_message: 'no worker had room for the job before its queue deadline (QUEUE_TIMEOUT_SECONDS)',
        request: null,
      })
      .where('status', 'queued')
      .whereNull('owner_instance')
      .whereNotNull('queue_deadline_at')
      .where('queue_deadline_at', '<', toDbTimestamp(now))
      .returning(COLUMNS)) as SessionRow[];
    return rows.map(mapRow);
  }

  async cancelQueued(id: string, at: Date): Promise<Session | undefined> {
    const [row] = (await this.db(TABLE)
      .update({ status: 'cancelled', finished_at: toDbTimestamp(at), result: toDbJson({ reason: 'cancel-requested' }), request: null })
      .where({ id, status: 'queued' })
      .whereNull('owner_instance')
      .returning(COLUMNS)) as SessionRow[];
    return row ? mapRow(row) : undefined;
  }

  async requestCancel(id: string, at: Date): Promise<void> {
    await this.db(TABLE).update({ cancel_requested_at: toDbTimestamp(at) }).where({ id }).whereIn('status', UNENDED).whereNull('cancel_requested_at');
  }

  async isCancelRequested(id: string): Promise<boolean> {
    const row = (await this.db(TABLE).select('cancel_requested_at').where({ id }).first()) as { cancel_requested_at: unknown } | undefined;
    return row !== undefined && row.cancel_requested_at !== null;
  }

  async queuePosition(id: string, held = false): Promise<number | null> {
    const row = (await this.db(TABLE).select('status', 'owner_instance', 'created_at').where({ id }).first()) as
      | { status: string; owner_instance: string | null; created_at: DbTimestamp }
      | undefined;
    if (!row || row.status !== 'queued' || (row.owner_instance !== null && !held)) return null;
    const createdAt = toDbTimestamp(fromDbTimestamp(row.created_at));
    const ahead = await this.db(TABLE)
      .count({ total: '*' })
      .where('status', 'queued')
      .whereNull('owner_instance')
      .where((q) => q.where('created_at', '<', createdAt).orWhere((q2) => q2.where('created_at', createdAt).where('id', '<', id)));
    return fromDbCount(ahead);
  }

  async ownedBy(owner: string): Promise<string[]> {
    const rows = (await this.db(TABLE).select('id').where('owner_instance', owner).whereIn('status', UNENDED)) as { id: string }[];
    return rows.map((r) => r.id);
  }

  private matching(query: SessionQuery): Knex.QueryBuilder {
    const builder = this.db(TABLE);
    if (query.owner !== undefined) builder.where('owner', query.owner);
    if (query.status !== undefined) builder.where('status', query.status);
    if (query.batchId !== undefined) builder.where('batch_id', query.batchId);
    return builder;
  }
}

/** The stores of the sessions feature, as services receive them. */
export interface SessionStores {
  sessions: SessionStore;
  events: SessionEventStore;
  batches: BatchStore;
  instances: InstanceStore;
}

/** The real wiring, over the gateway's database; createFakeSessionStores is its in-memory twin. */
export function createSessionStores(db: Knex): SessionStores {
  return { sessions: new SessionDbStore(db), events: new SessionEventDbStore(db), batches: new BatchDbStore(db), instances: new InstanceDbStore(db) };
}
