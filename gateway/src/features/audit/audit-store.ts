import type { Knex } from 'knex';
import {
  fromDbCount,
  fromDbJsonOrNull,
  fromDbTimestamp,
  toDbJsonOrNull,
  toDbTimestamp,
  type DbTimestamp,
} from '../../infra/database/columns.js';
import type { AuditEntry, AuditOutcome, AuditQuery, AuditStore, NewAuditEntry } from './audit-types.js';

const TABLE = 'audit_log';
const COLUMNS = ['id', 'at', 'actor', 'action', 'target', 'client_address', 'outcome', 'details'] as const;

interface AuditRow {
  id: string | number;
  at: DbTimestamp;
  actor: string;
  action: string;
  target: string | null;
  client_address: string | null;
  outcome: string;
  details: unknown;
}

function mapRow(row: AuditRow): AuditEntry {
  return {
    id: String(row.id),
    at: fromDbTimestamp(row.at),
    actor: row.actor,
    action: row.action,
    target: row.target,
    clientAddress: row.client_address,
    outcome: row.outcome as AuditOutcome,
    details: fromDbJsonOrNull<Record<string, unknown>>(row.details),
  };
}

export class AuditDbStore implements AuditStore {
  constructor(private readonly db: Knex) {}

  async append(entry: NewAuditEntry & { at: Date }): Promise<void> {
    await this.db(TABLE).insert({
      at: toDbTimestamp(entry.at),
      actor: entry.actor,
      action: entry.action,
      target: entry.target,
      client_address: entry.clientAddress,
      outcome: entry.outcome,
      details: toDbJsonOrNull(entry.details),
    });
  }

  async list(query: AuditQuery): Promise<{ items: AuditEntry[]; total: number }> {
    const filtered = () => {
      const q = this.db(TABLE);
      if (query.actor) q.where('actor', query.actor);
      if (query.action) q.where('action', query.action);
      if (query.from) q.where('at', '>=', toDbTimestamp(query.from));
      if (query.to) q.where('at', '<=', toDbTimestamp(query.to));
      return q;
    };
    const rows = (await filtered().select(COLUMNS).orderBy('at', 'desc').orderBy('id', 'desc').limit(query.limit).offset(query.offset)) as AuditRow[];
    const total = fromDbCount((await filtered().count({ total: '*' })) as Record<string, unknown>[]);
    return { items: rows.map(mapRow), total };
  }
}

export class FakeAuditStore implements AuditStore {
  readonly entries: AuditEntry[] = [];

  async append(entry: NewAuditEntry & { at: Date }): Promise<void> {
    this.entries.push({ ...entry, id: String(this.entries.length + 1), details: entry.details ?? null });
  }

  async list(query: AuditQuery): Promise<{ items: AuditEntry[]; total: number }> {
    const matching = this.entries
      .filter((e) => (!query.actor || e.actor === query.actor) && (!query.action || e.action === query.action))
      .filter((e) => (!query.from || e.at >= query.from) && (!query.to || e.at <= query.to))
      .sort((a, b) => b.at.getTime() - a.at.getTime());
    return { items: matching.slice(query.offset, query.offset + query.limit), total: matching.length };
  }
}
