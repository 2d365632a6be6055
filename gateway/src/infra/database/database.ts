import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import knexFactory, { type Knex } from 'knex';
import type { Logger } from '../logger.js';
import { migrationSource } from './migrations/index.js';

export type Dialect = 'postgres' | 'sqlite';

/** The gateway's database: PostgreSQL when DATABASE_URL is set, else an embedded SQLite file. */
export interface Database {
  readonly knex: Knex;
  readonly dialect: Dialect;
  /** Apply every pending migration (a no-op when there is none). */
  migrate(): Promise<void>;
  /** Round trip of a real `select 1`, in milliseconds. */
  ping(): Promise<number>;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  /** postgres:// or postgresql:// URL; undefined selects SQLite. */
  databaseUrl?: string | undefined;
  /** Where the SQLite file lives (created if missing). */
  dataDirectory: string;
  /** How long connecting to PostgreSQL, or waiting for a pooled connection, may take (default 5 s). */
  connectTimeoutMs?: number;
}

export const SQLITE_FILE_NAME = 'gateway.sqlite3';

// An outage must fail requests within seconds, not queue them behind a hung connect.
const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
// better-sqlite3 is synchronous; a writer waits this long for another process's lock.
const SQLITE_BUSY_TIMEOUT_MS = 5_000;

export function createDatabase(options: DatabaseOptions, logger: Logger): Database {
  return options.databaseUrl
    ? openPostgres(options.databaseUrl, options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, logger)
    : openSqlite(join(options.dataDirectory, SQLITE_FILE_NAME), logger);
}

class KnexDatabase implements Database {
  constructor(
    readonly knex: Knex,
    readonly dialect: Dialect,
    private readonly logger: Logger,
  ) {}

  async migrate(): Promise<void> {
    const [, applied] = (await this.knex.migrate.latest({ migrationSource })) as [number, string[]];
    if (applied.length > 0) this.logger.info('database migrated', { dialect: this.dialect, applied });
    else this.logger.debug('database schema up to date', { dialect: this.dialect });
  }

  async ping(): Promise<number> {
    const started = performance.now();
    await this.knex.raw('select 1');
    return performance.now() - started;
  }

  async close(): Promise<void> {
    await this.knex.destroy();
  }
}

function openPostgres(databaseUrl: string, connectTimeoutMs: number, logger: Logger): Database {
  logger.info('database: postgres', describePostgresUrl(databaseUrl));
  const knex = knexFactory({
    client: 'pg',
    // Passed to pg.Client as is; pg parses the URL (sslmode and all).
    connection: {
      connectionString: databaseUrl,
      connectionTimeoutMillis: connectTimeoutMs,
      application_name: 'device-operations-gateway',
    },
    pool: { min: 0, max: 10 },
    acquireConnectionTimeout: connectTimeoutMs,
    // A failed query's error names the SQL with placeholders, never the values (prompts, results).
    compileSqlOnError: false,
    log: knexLog(logger),
  });
  return new KnexDatabase(knex, 'postgres', logger);
}

/** Host and database name only: the URL may carry a password. */
function describePostgresUrl(databaseUrl: string): { host: string; database: string } {
  try {
    const url = new URL(databaseUrl);
    return {
      host: url.port ? `${url.hostname}:${url.port}` : url.hostname || 'local socket',
      database: decodeURIComponent(url.pathname.replace(/^\//, '')) || '(default)',
    };
  } catch {
    return { host: 'unparsed', database: 'unparsed' };
  }
}

interface SqliteConnection {
  pragma(source: string): unknown;
}

function openSqlite(filename: string, logger: Logger): Database {
  mkdirSync(join(filename, '..'), { recursive: true });
  logger.info('database: sqlite', { file: filename });
  const knex = knexFactory({
    client: 'better-sqlite3',
    connection: { filename },
    useNullAsDefault: true,
    compileSqlOnError: false,
    pool: {
      // Pragmas are per connection, so they are set on each one the pool opens.
      afterCreate: (connection: SqliteConnection, done: (error: Error | null, connection: SqliteConnection) => void) => {
        try {
          connection.pragma('journal_mode = WAL');
          // With WAL, NORMAL syncs at checkpoints instead of on every commit:
          // a commit cannot corrupt the file, and a crash of the process loses
          // nothing; only a power cut may lose the last commits. Syncing each
          // commit blocked the event loop for milliseconds per session event.
          connection.pragma('synchronous = NORMAL');
          connection.pragma('foreign_keys = ON');
          connection.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`);
          done(null, connection);
        } catch (error) {
          done(error as Error, connection);
        }
      },
    },
    log: knexLog(logger),
  });
  return new KnexDatabase(knex, 'sqlite', logger);
}

// knex's own warnings go through our logger rather than console.
function knexLog(logger: Logger): Knex.Config['log'] {
  return {
    warn: (message: unknown) => logger.warn('knex', { detail: String(message) }),
    error: (message: unknown) => logger.error('knex', { detail: String(message) }),
    deprecate: (method: string, alternative: string) => logger.warn('knex deprecation', { method, alternative }),
    debug: (message: unknown) => logger.debug('knex', { detail: String(message) }),
  };
}
