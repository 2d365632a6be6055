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
  sqlite3: `insert into session_events (session_id, sequence, type, data, created_at)
    select json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
           json_extract(value, '$[3]'), json_extract(value, '$[4]')
    from json_each(?)`,
  postgresql: `insert into session_events (session_id, sequence, type, data, created_at)
    select e->>0, (e->>1)::integer, e->>2, (e->>3)::jsonb, (e->>4)::timestamptz
    from jsonb_array_elements(?::jsonb) as e`,
} as const;

const COLUMNS = ['session_id', 'sequence', 'type', 'data', 'created_at'] as const;

interface SessionEventRow {
  session_id: string;
  sequence: number;
  type: string;
  /** jsonb on PostgreSQL (parsed), text on SQLite. */
  data: unknown;
  created_at: DbTimestamp;
}

function mapRow(row: SessionEventRow): SessionEvent {
  return {
    sessionId: row.session_id,
    sequence: Number(row.sequence),
    type: row.type,
    data: fromDbJson<Record<string, unknown>>(row.data),
    createdAt: fromDbTimestamp(row.created_at),
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
      db.raw(sql, [JSON.stringify(chunk.map((e) => [e.sessionId, e.sequence, e.type, toDbJson(e.data), toDbTimestamp(e.createdAt)]))]);
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
}
