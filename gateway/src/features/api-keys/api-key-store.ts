import type { Knex } from 'knex';
import {
  fromDbJson,
  fromDbTimestamp,
  fromDbTimestampOrNull,
  toDbJson,
  toDbTimestamp,
  toDbTimestampOrNull,
  type DbTimestamp,
} from '../../infra/database/columns.js';
import type { ApiKey, ApiKeyScope, ApiKeyStore, StoredApiKey } from './api-key-types.js';

const TABLE = 'api_keys';
const COLUMNS = ['id', 'name', 'prefix', 'key_hash', 'scopes', 'created_by', 'created_at', 'expires_at', 'last_used_at', 'revoked_at'] as const;

interface ApiKeyRow {
  id: string;
  name: string;
  prefix: string;
  key_hash: string;
  scopes: unknown;
  created_by: string;
  created_at: DbTimestamp;
  expires_at: DbTimestamp | null;
  last_used_at: DbTimestamp | null;
  revoked_at: DbTimestamp | null;
}

function mapRow(row: ApiKeyRow): StoredApiKey {
  return {
    id: row.id,
    name: row.name,
    prefix: row.prefix,
    keyHash: row.key_hash,
    scopes: fromDbJson<ApiKeyScope[]>(row.scopes),
    createdBy: row.created_by,
    createdAt: fromDbTimestamp(row.created_at),
    expiresAt: fromDbTimestampOrNull(row.expires_at),
    lastUsedAt: fromDbTimestampOrNull(row.last_used_at),
    revokedAt: fromDbTimestampOrNull(row.revoked_at),
  };
}

const withoutHash = ({ keyHash: _hash, ...key }: StoredApiKey): ApiKey => key;

export class ApiKeyDbStore implements ApiKeyStore {
  constructor(private readonly db: Knex) {}

  async create(key: StoredApiKey): Promise<void> {
    const row: ApiKeyRow = {
      id: key.id,
      name: key.name,
      prefix: key.prefix,
      key_hash: key.keyHash,
      scopes: toDbJson(key.scopes),
      created_by: key.createdBy,
      created_at: toDbTimestamp(key.createdAt),
      expires_at: toDbTimestampOrNull(key.expiresAt),
      last_used_at: null,
      revoked_at: null,
    };
    await this.db(TABLE).insert(row);
  }

  async findByPrefix(prefix: string): Promise<StoredApiKey | undefined> {
    const row = (await this.db(TABLE).select(COLUMNS).where('prefix', prefix).first()) as ApiKeyRow | undefined;
    return row ? mapRow(row) : undefined;
  }

  async get(id: string): Promise<ApiKey | undefined> {
    const row = (await this.db(TABLE).select(COLUMNS).where('id', id).first()) as ApiKeyRow | undefined;
    return row ? withoutHash(mapRow(row)) : undefined;
  }

  async list(): Promise<ApiKey[]> {
    const rows = (await this.db(TABLE).select(COLUMNS).orderBy('created_at', 'desc')) as ApiKeyRow[];
    return rows.map((row) => withoutHash(mapRow(row)));
  }

  async revoke(id: string, at: Date): Promise<ApiKey | undefined> {
    await this.db(TABLE).where('id', id).whereNull('revoked_at').update({ revoked_at: toDbTimestamp(at) });
    return this.get(id);
  }

  async touch(id: string, at: Date, minIntervalMs: number): Promise<void> {
    // Conditional, so many replicas write the row at most once per interval between them.
    const due = toDbTimestamp(new Date(at.getTime() - minIntervalMs));
    await this.db(TABLE)
      .where('id', id)
      .andWhere((q) => q.whereNull('last_used_at').orWhere('last_used_at', '<', due))
      .update({ last_used_at: toDbTimestamp(at) });
  }
}

/** In-memory twin for unit tests of logic. */
export class FakeApiKeyStore implements ApiKeyStore {
  readonly rows = new Map<string, StoredApiKey>();

  async create(key: StoredApiKey): Promise<void> {
    if ([...this.rows.values()].some((k) => k.prefix === key.prefix)) throw new Error('duplicate prefix');
    this.rows.set(key.id, { ...key });
  }

  async findByPrefix(prefix: string): Promise<StoredApiKey | undefined> {
    const key = [...this.rows.values()].find((k) => k.prefix === prefix);
    return key ? { ...key } : undefined;
  }

  async get(id: string): Promise<ApiKey | undefined> {
    const key = this.rows.get(id);
    return key ? withoutHash({ ...key }) : undefined;
  }

  async list(): Promise<ApiKey[]> {
    return [...this.rows.values()].sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime()).map((k) => withoutHash({ ...k }));
  }

  async revoke(id: string, at: Date): Promise<ApiKey | undefined> {
    const key = this.rows.get(id);
    if (key && !key.revokedAt) key.revokedAt = at;
    return this.get(id);
  }

  async touch(id: string, at: Date, minIntervalMs: number): Promise<void> {
    const key = this.rows.get(id);
    if (key && (!key.lastUsedAt || key.lastUsedAt.getTime() < at.getTime() - minIntervalMs)) key.lastUsedAt = at;
  }
}
