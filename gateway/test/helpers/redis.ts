import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'redis';
import { freePort, killAbandonedServers, spawnServer } from './servers.js';
import { findTool, requirement } from './tools.js';

/**
 * A throwaway redis-server on a free loopback port, for tests of what the
 * gateway keeps in Redis: no persistence, stopped (or stopped and restarted
 * on the same port, for outage tests) by the test.
 */

/**
 * The redis-server binary for a test file, or null to skip its Redis tests
 * (a failure under CI; see requirement()).
 */
export const redisServerForTests = (): string | null =>
  requirement(findTool('redis-server'), 'redis-server', 'install the redis-server package');

export interface RunningRedis {
  port: number;
  /** redis://127.0.0.1:<port> */
  url: string;
  /** Stop the server (SIGTERM, then SIGKILL); safe to call twice. */
  stop(): Promise<void>;
  /** Stop the server but keep its port for up(): the start of an outage. */
  down(): Promise<void>;
  /** Start a fresh (empty) server on the same port: the end of an outage. */
  up(): Promise<void>;
  /** down() then up(). */
  restart(): Promise<void>;
  /** SIGSTOP / SIGCONT: the server keeps its connections but stops answering. */
  pause(): void;
  resume(): void;
}

const ROOT_PREFIX = 'device-ops-redis-';
const OWNER_FILE = 'owner.pid';
const SERVER_FILE = 'server.pid';

export async function startRedis(binary: string): Promise<RunningRedis> {
  killAbandonedServers(ROOT_PREFIX, OWNER_FILE, SERVER_FILE, 'redis-server');
  const dir = mkdtempSync(join(tmpdir(), ROOT_PREFIX));
  writeFileSync(join(dir, OWNER_FILE), String(process.pid));
  let child: ChildProcess | null = null;
  let port = 0;

  const kill = () => child?.kill('SIGKILL');
  // A run that exits without its teardown still stops the server.
  process.once('exit', kill);

  const launch = async () => {
    child = null;
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no'];
    try {
      child = await spawnServer(binary, args, join(dir, SERVER_FILE), (server) => waitForPing(port, server));
    } catch (error) {
      throw new Error(`redis-server did not start on port ${port}: ${(error as Error).message}`);
    }
  };

  const stopServer = async () => {
    const running = child;
    child = null;
    if (!running || running.exitCode !== null || running.signalCode !== null) return;
    const exited = once(running, 'exit');
    running.kill('SIGCONT');
    running.kill('SIGTERM');
    const forced = setTimeout(() => running.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(forced);
  };

  for (let attempt = 1; ; attempt += 1) {
    port = await freePort();
    try {
      await launch();
      break;
    } catch (error) {
      // Another process may have taken the port between probe and start.
      if (attempt >= 3) {
        rmSync(dir, { recursive: true, force: true });
        process.off('exit', kill);
        throw error;
      }
    }
  }

  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop: async () => {
      await stopServer();
      process.off('exit', kill);
      rmSync(dir, { recursive: true, force: true });
    },
    down: stopServer,
    up: launch,
    restart: async () => {
      await stopServer();
      await launch();
    },
    pause: () => {
      child?.kill('SIGSTOP');
    },
    resume: () => {
      child?.kill('SIGCONT');
    },
  };
}

/** Poll with PING until the server answers, or fail once it exits or 10 s pass. */
async function waitForPing(port: number, server: ChildProcess): Promise<void> {
  const deadline = Date.now() + 10_000;
  let last: unknown;
  while (Date.now() < deadline) {
    if (server.exitCode !== null || server.signalCode !== null) throw new Error(`exited (${server.exitCode ?? server.signalCode})`);
    const client = createClient({ url: `redis://127.0.0.1:${port}`, socket: { connectTimeout: 500, reconnectStrategy: false } });
    client.on('error', () => undefined);
    try {
      await client.connect();
      if ((await client.ping()) === 'PONG') return;
    } catch (error) {
      last = error;
    } finally {
      client.destroy();
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`no PONG within 10 s${last ? `: ${String(last)}` : ''}`);
}

