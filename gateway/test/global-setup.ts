import { tmpdir } from 'node:os';
import type { TestProject } from 'vitest/node';
import { createDatabase } from '../src/infra/database/database.js';
import { createLogger } from '../src/infra/logger.js';
import { postgresBinariesForTests, postgresUrl, startPostgres, withAdminConnection } from './helpers/postgres.js';

/**
 * One throwaway PostgreSQL server for the whole run, with a migrated template
 * database that each test file clones. Without PostgreSQL binaries the
 * PostgreSQL tests are skipped, except under CI, where that is a failure.
 */
export default async function setup(project: TestProject): Promise<(() => void) | undefined> {
  const bin = postgresBinariesForTests();
  if (!bin) {
    project.provide('postgres', null);
    return undefined;
  }

  const server = await startPostgres(bin);
  // A run killed before teardown still stops its server.
  process.once('exit', server.stop);
  try {
    const { info } = server;
    await withAdminConnection(info, (admin) => admin.raw('create database ??', [info.templateDatabase]));
    const template = createDatabase(
      { databaseUrl: postgresUrl(info, info.templateDatabase), dataDirectory: tmpdir() },
      createLogger({ level: 'warn', stream: process.stderr }),
    );
    try {
      await template.migrate();
    } finally {
      // A template cannot be cloned while anyone is connected to it.
      await template.close();
    }
  } catch (error) {
    server.stop();
    throw error;
  }
  project.provide('postgres', server.info);

  return () => {
    process.off('exit', server.stop);
    server.stop();
  };
}
