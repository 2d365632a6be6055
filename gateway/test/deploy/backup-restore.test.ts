import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, appendFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresTestUrl, postgresServer } from '../helpers/databases.js';
import { findPostgresBinaries } from '../helpers/postgres.js';
import { runScript } from './helpers/scripts.js';

/**
 * backup.sh then restore.sh against a real PostgreSQL (the run's throwaway
 * server) and a real outputs folder, without Docker: what is restored is what
 * was backed up, row for row and byte for byte.
 */
describe.skipIf(!postgresServer())('backup.sh and restore.sh', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'device-ops-backup-'));
  const outputs = join(scratch, 'outputs');
  const backups = join(scratch, 'backups');
  let url: string;
  let drop: () => Promise<void>;
  let knex: Knex;
  // pg_dump from the server's own version, ahead of any other on PATH.
  const env = (): NodeJS.ProcessEnv => ({ PATH: `${findPostgresBinaries()}:${process.env.PATH}`, HOME: scratch, LANG: 'C.UTF-8' });
  // A password in the URL (the test server trusts loopback and ignores it) that must never be printed.
  const withPassword = () => url.replace('postgres://postgres@', 'postgres://postgres:never-printed@');
  const direct = () => ['--database-url', withPassword(), '--outputs-dir', outputs, '--backup-dir', backups];

  const tableState = async () => {
    const [row] = (await knex.raw(
      `select count(*)::int as rows, md5(coalesce(string_agg(id || ':' || name || ':' || encode(payload, 'hex'), ',' order by id), '')) as checksum from inventory`,
    )).rows as { rows: number; checksum: string }[];
    return row!;
  };
  const folderState = (dir: string) =>
    Object.fromEntries(
      filesUnderAbsolute(dir).map((file) => [file, createHash('sha256').update(readFileSync(join(dir, file))).digest('hex')]),
    );

  beforeAll(async () => {
    ({ url, drop } = await createPostgresTestUrl());
    knex = knexFactory({ client: 'pg', connection: url, pool: { min: 0, max: 2 } });
    await knex.schema.createTable('inventory', (table) => {
      table.integer('id').primary();
      table.text('name').notNullable();
      table.binary('payload');
    });
    await knex('inventory').insert(
      Array.from({ length: 500 }, (_, i) => ({ id: i + 1, name: `item ${i + 1} — ünïcode`, payload: Buffer.from([i % 256, 0, 255]) })),
    );
    mkdirSync(join(outputs, 'job-1'), { recursive: true });
    mkdirSync(join(outputs, 'job-2', 'nested'), { recursive: true });
    writeFileSync(join(outputs, 'job-1', 'image-0.png'), Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7) % 256)));
    writeFileSync(join(outputs, 'job-2', 'nested', 'result.json'), '{"ok":true}\n');
    writeFileSync(join(outputs, 'job-2', 'with space.txt'), 'spaces in names\n');
  });

  afterAll(async () => {
    await knex?.destroy();
    await drop?.();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('restores exactly what was backed up: rows, checksums and every output file', async () => {
    const tableBefore = await tableState();
    const filesBefore = folderState(outputs);
    expect(tableBefore.rows).toBe(500);

    const backup = runScript('deploy/backup.sh', direct(), env());
    expect(backup.status, backup.output).toBe(0);
    const folder = backup.stdout.trim().split('\n').at(-1)!;
    expect(folder).toMatch(new RegExp(`^${backups}/\\d{8}T\\d{6}Z(-\\d{2})?$`));
    expect(readdirSync(folder).sort()).toEqual(['SHA256SUMS', 'backup.info', 'device_outputs.tar.gz', 'postgres.dump']);
    expect(readFileSync(join(folder, 'postgres.dump')).subarray(0, 5).toString()).toBe('PGDMP'); // pg_dump's custom format
    // The password of the URL never shows.
    expect(backup.output).not.toContain('never-printed');
    expect(backup.output).toContain('postgres://postgres:***@');

    // Damage everything after the backup.
    await knex.schema.dropTable('inventory');
    rmSync(join(outputs, 'job-1'), { recursive: true });
    appendFileSync(join(outputs, 'job-2', 'nested', 'result.json'), 'changed\n');
    writeFileSync(join(outputs, 'new-after-backup.txt'), 'not in the backup\n');

    const restore = runScript('deploy/restore.sh', ['--yes', ...direct(), folder], env());
    expect(restore.status, restore.output).toBe(0);
    expect(restore.output).not.toContain('never-printed');
    expect(await tableState()).toEqual(tableBefore);
    expect(folderState(outputs)).toEqual(filesBefore);
  });

  it('restores rows changed after the backup to their backed-up values', async () => {
    const before = await tableState();
    const backup = runScript('deploy/backup.sh', direct(), env());
    const folder = backup.stdout.trim().split('\n').at(-1)!;
    await knex('inventory').where('id', '<=', 10).del();
    await knex('inventory').insert({ id: 9999, name: 'late', payload: null });
    await knex('inventory').where('id', 20).update({ name: 'renamed' });
    expect(await tableState()).not.toEqual(before);
    const restore = runScript('deploy/restore.sh', ['--yes', ...direct(), 'latest'], env());
    expect(restore.status, restore.output).toBe(0);
    expect(restore.stdout).toContain(`restored ${folder}`);
    expect(await tableState()).toEqual(before);
  });

  it('asks before replacing anything, and refuses a damaged backup', () => {
    const unconfirmed = runScript('deploy/restore.sh', [...direct(), 'latest'], env());
    expect(unconfirmed.status).toBe(1);
    expect(unconfirmed.stderr).toContain('pass --yes to confirm');

    const backup = runScript('deploy/backup.sh', direct(), env());
    const folder = backup.stdout.trim().split('\n').at(-1)!;
    appendFileSync(join(folder, 'postgres.dump'), 'tampered');
    const damaged = runScript('deploy/restore.sh', ['--yes', ...direct(), folder], env());
    expect(damaged.status).toBe(1);
    expect(damaged.stderr).toContain('fails its checksums (SHA256SUMS): not restoring from it');
  });

  it('keeps only the newest --keep backups, and leaves no half backup behind a failure', () => {
    for (let i = 0; i < 3; i += 1) {
      const result = runScript('deploy/backup.sh', [...direct(), '--keep', '2'], env());
      expect(result.status, result.output).toBe(0);
    }
    const names = readdirSync(backups).sort();
    expect(names).toHaveLength(2);
    expect(names.every((name) => /^\d{8}T\d{6}Z(-\d{2})?$/.test(name))).toBe(true);

    const failed = runScript('deploy/backup.sh', ['--database-url', `${url}_missing`, '--outputs-dir', outputs, '--backup-dir', backups], env());
    expect(failed.status).not.toBe(0);
    expect(readdirSync(backups).sort()).toEqual(names);
  });

  it('--dry-run shows the commands and writes nothing', () => {
    const dryBackups = join(scratch, 'dry');
    const result = runScript('deploy/backup.sh', ['--dry-run', '--database-url', url, '--outputs-dir', outputs, '--backup-dir', dryBackups], env());
    expect(result.status, result.output).toBe(0);
    expect(result.stdout).toContain('[dry-run] would run: pg_dump --format=custom');
    expect(result.stdout).toContain('[dry-run] would run: tar -C');
    expect(existsSync(dryBackups)).toBe(false);
  });

  it('takes --database-url and --outputs-dir together or not at all', () => {
    const usage = runScript('deploy/backup.sh', ['--database-url', url], env());
    expect(usage.status).toBe(1);
    expect(usage.stderr).toContain('--database-url and --outputs-dir go together');
  });
});

function filesUnderAbsolute(dir: string, prefix = ''): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((entry) => (entry.isDirectory() ? filesUnderAbsolute(join(dir, entry.name), `${prefix}${entry.name}/`) : [`${prefix}${entry.name}`]))
    .sort();
}
