import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { appendFileSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { abandonedServerFolders, freePort } from './servers.js';
import { requirement } from './tools.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import knexFactory, { type Knex } from 'knex';

/**
 * A throwaway PostgreSQL server for one vitest run (started by
 * test/global-setup.ts), and databases cloned from its migrated template for
 * each test file (test/helpers/databases.ts).
 */

/** What test files receive through vitest's inject('postgres'). */
export interface PostgresServerInfo {
  host: string;
  port: number;
  user: string;
  /** Migrated once per run; each test file clones it. */
  templateDatabase: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    /** null when no PostgreSQL binaries were found (outside CI only). */
    postgres: PostgresServerInfo | null;
  }
}

export const POSTGRES_MISSING_MESSAGE =
  'PostgreSQL binaries not found: PostgreSQL tests skipped; install the postgresql package';

/** The PostgreSQL binaries for a test run or file, or null to skip; a failure under CI (see requirement()). */
export const postgresBinariesForTests = (): string | null =>
  requirement(findPostgresBinaries(), 'PostgreSQL binaries (initdb, pg_ctl, postgres)', 'install the postgresql package');

/**
 * The folder holding initdb, pg_ctl and postgres: PG_BIN, else the newest
 * /usr/lib/postgresql/<version>/bin (Debian), else `pg_config --bindir`.
 * null when none has them; a PG_BIN without them is an error.
 */
export function findPostgresBinaries(env: NodeJS.ProcessEnv = process.env, debianRoot = '/usr/lib/postgresql'): string | null {
  if (env.PG_BIN) {
    if (!hasServerBinaries(env.PG_BIN)) throw new Error(`PG_BIN=${env.PG_BIN} has no initdb, pg_ctl and postgres`);
    return env.PG_BIN;
  }
  const versions = existsSync(debianRoot)
    ? readdirSync(debianRoot)
        .filter((name) => /^\d+(\.\d+)?$/.test(name))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  for (const version of versions) {
    const bin = join(debianRoot, version, 'bin');
    if (hasServerBinaries(bin)) return bin;
  }
  try {
    const bin = execFileSync('pg_config', ['--bindir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (hasServerBinaries(bin)) return bin;
  } catch {
    // no pg_config on PATH
  }
  return null;
}

const hasServerBinaries = (bin: string) => ['initdb', 'pg_ctl', 'postgres'].every((name) => existsSync(join(bin, name)));

export interface RunningPostgres {
  info: PostgresServerInfo;
  /** Immediate shutdown and removal of the data folder; safe to call twice. */
  stop(): void;
  /** Stop the server, keeping its data and port: the start of an outage. */
  down(): Promise<void>;
  /** Start it again on the same port: the end of an outage. */
  up(): Promise<void>;
}

const SUPERUSER = 'postgres';
const TEMPLATE_DATABASE = 'gateway_template';
const ROOT_PREFIX = 'device-ops-pg-';
const OWNER_FILE = 'owner.pid';

/** initdb into a fresh temp folder and start the server on a free loopback port. */
export async function startPostgres(bin: string): Promise<RunningPostgres> {
  stopAbandonedServers(bin);
  const root = mkdtempSync(join(tmpdir(), ROOT_PREFIX));
  writeFileSync(join(root, OWNER_FILE), String(process.pid));
  const dataDir = join(root, 'data');
  const logFile = join(root, 'postgres.log');
  // initdb refuses to run as root; the server then runs as the postgres user.
  if (runsAsRoot()) chownSync(root, userId('-u'), userId('-g'));

  let started = false;
  const stop = () => {
    if (started) {
      started = false;
      stopServer(bin, dataDir);
    }
    rmSync(root, { recursive: true, force: true });
  };

  try {
    // No fsync anywhere: the cluster lives for one test run.
    runTool(bin, 'initdb', ['-D', dataDir, '-U', SUPERUSER, '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync'], logFile);
    for (let attempt = 1; ; attempt += 1) {
      const port = await freePort();
      appendFileSync(join(dataDir, 'postgresql.conf'), serverSettings(root, port));
      try {
        runTool(bin, 'pg_ctl', ['start', '-D', dataDir, '-l', logFile, '-w', '-t', '30'], logFile);
        started = true;
        const info = { host: '127.0.0.1', port, user: SUPERUSER, templateDatabase: TEMPLATE_DATABASE };
        // Asynchronous: the gateway under test shares this process and keeps serving meanwhile.
        const down = async () => {
          if (!started) return;
          started = false;
          await runToolAsync(bin, 'pg_ctl', ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '30']);
        };
        const up = async () => {
          if (started) return;
          await runToolAsync(bin, 'pg_ctl', ['start', '-D', dataDir, '-l', logFile, '-w', '-t', '30']);
          started = true;
        };
        return { info, stop, down, up };
      } catch (error) {
        // Another process may have taken the port between probe and start.
        if (attempt >= 3) throw error;
      }
    }
  } catch (error) {
    stop();
    throw error;
  }
}

const runsAsRoot = () => process.getuid?.() === 0;

function runTool(bin: string, tool: string, args: string[], logFile?: string): void {
  const [command, fullArgs] = runsAsRoot()
    ? ['runuser', ['-u', SUPERUSER, '--', join(bin, tool), ...args]]
    : [join(bin, tool), args];
  const result = spawnSync(command, fullArgs, { encoding: 'utf8', timeout: 60_000 });
  if (result.status !== 0) {
    const log = logFile && existsSync(logFile) ? readFileSync(logFile, 'utf8').slice(-2000) : '';
    throw new Error(`${tool} failed (${result.status ?? result.signal}): ${result.stderr || result.stdout}\n${log}`);
  }
}

async function runToolAsync(bin: string, tool: string, args: string[]): Promise<void> {
  const [command, fullArgs] = runsAsRoot()
    ? ['runuser', ['-u', SUPERUSER, '--', join(bin, tool), ...args]]
    : [join(bin, tool), args];
  await promisify(execFile)(command, fullArgs, { encoding: 'utf8', timeout: 60_000 });
}

function stopServer(bin: string, dataDir: string): void {
  try {
    runTool(bin, 'pg_ctl', ['stop', '-D', dataDir, '-m', 'immediate', '-w', '-t', '10']);
  } catch {
    // not running any more
  }
}

/**
 * Servers of runs that were killed outright (SIGKILL, OOM) had no teardown:
 * stop them and delete their folders, once their owning process is gone.
 */
function stopAbandonedServers(bin: string): void {
  for (const root of abandonedServerFolders(ROOT_PREFIX, OWNER_FILE)) {
    if (existsSync(join(root, 'data', 'postmaster.pid'))) stopServer(bin, join(root, 'data'));
    rmSync(root, { recursive: true, force: true });
  }
}

function userId(flag: '-u' | '-g'): number {
  return Number(execFileSync('id', [flag, SUPERUSER], { encoding: 'utf8' }).trim());
}

// Later lines win in postgresql.conf, so a retry simply appends a new port.
const serverSettings = (socketDir: string, port: number) =>
  [
    '',
    `port = ${port}`,
    `listen_addresses = '127.0.0.1'`,
    `unix_socket_directories = '${socketDir.replace(/'/g, "''")}'`,
    'fsync = off',
    'synchronous_commit = off',
    'full_page_writes = off',
    'max_connections = 200',
    '',
  ].join('\n');

/** A postgres:// URL for one database of the test server (trust auth: no password). */
export function postgresUrl(info: PostgresServerInfo, database: string): string {
  return `postgres://${info.user}@${info.host}:${info.port}/${encodeURIComponent(database)}`;
}

/** Run `work` with a short-lived connection to the maintenance database. */
export async function withAdminConnection<T>(info: PostgresServerInfo, work: (knex: Knex) => Promise<T>): Promise<T> {
  const knex = knexFactory({ client: 'pg', connection: postgresUrl(info, 'postgres'), pool: { min: 0, max: 1 } });
  try {
    return await work(knex);
  } finally {
    await knex.destroy();
  }
}
