import type { Knex } from 'knex';
import { fromDbJson, fromDbTimestamp, toDbJson, toDbTimestamp, type DbTimestamp } from '../../infra/database/columns.js';
import type { SessionEventStore } from './session-store-type.js';
import type { SessionEvent } from './session-types.js';

const TABLE = 'session_events';

/**
 * Events per INSERT. One statement of constant text takes every row as one
 * JSON array parameter (json_each on SQLite, jsonb_array_elements on
 * PostgreSQL): no per-row placeholders to build and prepare, and no limit on
 * terms (SQLite refuses a compound insert of more than 500 rows).
 */
const ROWS_PER_INSERT = 1000;

const INSERT_SQL = {
  // Rows whose element 7 is 1 are fenced: stored only while the session's owner is element 6.
  sqlite3: `insert into session_events (session_id, sequence, type, data, created_at, worker_sequence)
    select json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
           json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]')
    from json_each(?)
    where json_extract(value, '$[7]') = 0
       or exists (select 1 from sessions s where s.id = json_extract(value, '$[0]') and s.owner_instance is json_extract(value, '$[6]'))`,
  postgresql: `insert into session_events (session_id, sequence, type, data, created_at, worker_sequence)
    select e->>0, (e->>1)::integer, e->>2, (e->>3)::jsonb, (e->>4)::timestamptz, (e->>5)::integer
    from jsonb_array_elements(?::jsonb) as e
    where (e->>7)::integer = 0
       or exists (select 1 from sessions s where s.id = e->>0 and s.owner_instance is not distinct from e->>6)`,
} as const;

const COLUMNS = ['session_id', 'sequence', 'type', 'data', 'created_at', 'worker_sequence'] as const;

interface SessionEventRow {
  session_id: string;
  sequence: number;
  type: string;
  /** jsonb on PostgreSQL (parsed), text on SQLite. */
  data: unknown;
  created_at: DbTimestamp;
  worker_sequence: number | null;
}

function mapRow(row: SessionEventRow): SessionEvent {
  return {
    sessionId: row.session_id,
    sequence: Number(row.sequence),
    type: row.type,
    data: fromDbJson<Record<string, unknown>>(row.data),
    createdAt: fromDbTimestamp(row.created_at),
    ...(row.worker_sequence !== null ? { workerSequence: Number(row.worker_sequence) } : {}),
  };
}

export class SessionEventDbStore implements SessionEventStore {
  constructor(private readonly db: Knex) {}

  /** Rejects when (sessionId, sequence) exists already or the session does not. */
  async append(event: SessionEvent): Promise<void> {
    await this.appendMany([event]);
  }

  async appendMany(events: readonly SessionEvent[]): Promise<void> {
    if (events.length === 0) return;
    const sql = INSERT_SQL[this.db.client.dialect as keyof typeof INSERT_SQL];
    if (!sql) throw new Error(`session events: no insert statement for the ${String(this.db.client.dialect)} dialect`);
    const insert = (db: Knex, chunk: readonly SessionEvent[]) =>
      db.raw(sql, [
        JSON.stringify(
          chunk.map((e) => [
            e.sessionId,
            e.sequence,
            e.type,
            toDbJson(e.data),
            toDbTimestamp(e.createdAt),
            e.workerSequence ?? null,
            e.writer ?? null,
            e.writer === undefined ? 0 : 1,
          ]),
        ),
      ]);
    if (events.length <= ROWS_PER_INSERT) {
      await insert(this.db, events);
      return;
    }
    // All or nothing, so a retry after a failure never writes an event twice.
    await this.db.transaction(async (trx) => {
      for (let i = 0; i < events.length; i += ROWS_PER_INSERT) await insert(trx, events.slice(i, i + ROWS_PER_INSERT));
    });
  }

  async listAfter(sessionId: string, afterSequence: number): Promise<SessionEvent[]> {
    const rows = await this.db(TABLE)
      .select(COLUMNS)
      .where('session_id', sessionId)
      .andWhere('sequence', '>', afterSequence)
      .orderBy('sequence', 'asc');
    return (rows as SessionEventRow[]).map(mapRow);
  }

  async lastSequences(sessionId: string, since = 0): Promise<{ sequence: number; workerSequence: number }> {
    const row = (await this.db(TABLE)
      .select(this.db.raw('max(sequence) as last_sequence, max(case when sequence > ? then worker_sequence end) as last_worker_sequence', [since]))
      .where('session_id', sessionId)
      .first()) as { last_sequence: unknown; last_worker_sequence: unknown } | undefined;
    return { sequence: Number(row?.last_sequence ?? 0), workerSequence: Number(row?.last_worker_sequence ?? 0) };
  }
}
