import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';
import { createDatabase, type Database, type Dialect } from '../../src/infra/database/database.js';
import { createLogger, type Logger } from '../../src/infra/logger.js';
import { POSTGRES_MISSING_MESSAGE, postgresUrl, withAdminConnection, type PostgresServerInfo } from './postgres.js';

/**
 * Fresh, migrated databases for integration tests: one per call, deleted by
 * its close(). PostgreSQL ones are cloned from the run's migrated template
 * (test/global-setup.ts), which takes a few milliseconds.
 */

/** Warnings and errors only, to stderr: knex's own complaints stay visible. */
export const quietLogger = (): Logger => createLogger({ level: 'warn', stream: process.stderr });

/** The run's PostgreSQL server, or null when its binaries are missing (tests then skip). */
export const postgresServer = (): PostgresServerInfo | null => inject('postgres');

/** Whether tests of this dialect can run here; use with describe.skipIf. */
export const dialectAvailable = (dialect: Dialect): boolean => dialect === 'sqlite' || postgresServer() !== null;

export function openTestDatabase(dialect: Dialect, logger: Logger = quietLogger()): Promise<Database> {
  return dialect === 'postgres' ? openPostgresTestDatabase(logger) : openSqliteTestDatabase(logger);
}

/** A new database `CREATE DATABASE … TEMPLATE gateway_template`; close() drops it. */
export async function openPostgresTestDatabase(logger: Logger = quietLogger()): Promise<Database> {
  const server = postgresServer();
  if (!server) throw new Error(POSTGRES_MISSING_MESSAGE);
  const name = `test_${process.pid}_${randomBytes(6).toString('hex')}`;
  await withAdminConnection(server, (admin) => admin.raw('create database ?? template ??', [name, server.templateDatabase]));
  const database = createDatabase({ databaseUrl: postgresUrl(server, name), dataDirectory: tmpdir() }, logger);
  return withCleanup(database, () =>
    withAdminConnection(server, async (admin) => {
      await admin.raw('drop database if exists ?? with (force)', [name]);
    }),
  );
}

/** A new SQLite file in its own temp folder, migrated; close() deletes the folder. */
export async function openSqliteTestDatabase(logger: Logger = quietLogger()): Promise<Database> {
  const dataDirectory = mkdtempSync(join(tmpdir(), 'device-ops-sqlite-'));
  const database = createDatabase({ dataDirectory }, logger);
  try {
    await database.migrate();
  } catch (error) {
    await database.close();
    rmSync(dataDirectory, { recursive: true, force: true });
    throw error;
  }
  return withCleanup(database, async () => rmSync(dataDirectory, { recursive: true, force: true }));
}

function withCleanup(database: Database, cleanup: () => Promise<void>): Database {
  let closing: Promise<void> | undefined;
  return {
    knex: database.knex,
    dialect: database.dialect,
    migrate: () => database.migrate(),
    ping: () => database.ping(),
    close: () => {
      closing ??= database.close().finally(cleanup);
      return closing;
    },
  };
}

/** A fresh PostgreSQL database (cloned from the template) as a DATABASE_URL, for a whole gateway under test. */
export async function createPostgresTestUrl(): Promise<{ url: string; drop: () => Promise<void> }> {
  const server = postgresServer();
  if (!server) throw new Error(POSTGRES_MISSING_MESSAGE);
  const name = `api_${process.pid}_${randomBytes(6).toString('hex')}`;
  await withAdminConnection(server, (admin) => admin.raw('create database ?? template ??', [name, server.templateDatabase]));
  return {
    url: postgresUrl(server, name),
    drop: () =>
      withAdminConnection(server, async (admin) => {
        await admin.raw('drop database if exists ?? with (force)', [name]);
      }),
  };
}
