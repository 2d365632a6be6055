import type { Knex } from 'knex';
import { fromDbJson, fromDbTimestamp, toDbJson, toDbTimestamp, type DbTimestamp } from '../../infra/database/columns.js';
import type { SessionEventStore } from './session-store-type.js';
import type { SessionEvent } from './session-types.js';

const TABLE = 'session_events';

/**
 * Rows per INSERT: SQLite allows 500 terms in the compound SELECT that knex
 * builds for a multi-row insert, PostgreSQL 65,535 parameters (5 per row).
 */
const ROWS_PER_INSERT = 200;

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

function toRow(event: SessionEvent): SessionEventRow {
  return {
    session_id: event.sessionId,
    sequence: event.sequence,
    type: event.type,
    data: toDbJson(event.data),
    created_at: toDbTimestamp(event.createdAt),
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
    if (events.length <= ROWS_PER_INSERT) {
      await this.db(TABLE).insert(events.map(toRow));
      return;
    }
    // All or nothing, so a retry after a failure never writes an event twice.
    await this.db.transaction(async (trx) => {
      for (let i = 0; i < events.length; i += ROWS_PER_INSERT) {
        await trx(TABLE).insert(events.slice(i, i + ROWS_PER_INSERT).map(toRow));
      }
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
