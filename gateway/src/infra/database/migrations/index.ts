import type { Knex } from 'knex';
import * as sessions from './0001_sessions.js';
import * as apiKeysAndAuditLog from './0002_api_keys_and_audit_log.js';
import * as sessionOwnership from './0003_session_ownership.js';

/**
 * Every migration, in order, listed in code so that the TypeScript sources
 * (tests) and the compiled JavaScript (dist) run exactly the same list; knex
 * never scans a directory.
 *
 * A migration is never edited once merged: deployed databases have already
 * run it and record it by name. Change the schema by appending a new file
 * (`NNNN_what.ts`) here. Migrations use the knex schema builder only, so the
 * same file runs on PostgreSQL and SQLite.
 */
interface NamedMigration {
  name: string;
  migration: Knex.Migration;
}

const migrations: readonly NamedMigration[] = [
  { name: '0001_sessions', migration: sessions },
  { name: '0002_api_keys_and_audit_log', migration: apiKeysAndAuditLog },
  { name: '0003_session_ownership', migration: sessionOwnership },
];

export const migrationSource: Knex.MigrationSource<NamedMigration> = {
  getMigrations: async () => [...migrations],
  getMigrationName: (entry) => entry.name,
  getMigration: async (entry) => entry.migration,
};
