import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { repoRoot } from '../../src/infra/paths.js';
import { testEnv } from './env.js';
import { waitFor } from './wait.js';

const SERVER = join(repoRoot, 'gateway', 'dist', 'server.js');

export interface GatewayProcess {
  child: ChildProcess;
  url: string;
  /** Its JSON log lines so far. */
  lines: Record<string, unknown>[];
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
  /** SIGKILL, or SIGTERM and wait for the drain; resolves once it exited. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** The gateway as production runs it: `node gateway/dist/server.js`, its own process, settings in the environment. */
export async function spawnGatewayProcess(env: Record<string, string>): Promise<GatewayProcess> {
  if (!existsSync(SERVER)) throw new Error(`${SERVER} is missing: run the build (npm test does) first`);
  const child = spawn(process.execPath, [SERVER], { env: testEnv(env), stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: Record<string, unknown>[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    if (line.startsWith('{')) lines.push(JSON.parse(line) as Record<string, unknown>);
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const kill = () => child.kill('SIGKILL');
  process.once('exit', kill);
  void exited.then(() => process.off('exit', kill));
  const listening = await waitFor(async () => lines.find((l) => l.message === 'gateway listening'), { timeoutMs: 120_000, what: 'the gateway to listen' });
  return {
    child,
    lines,
    exited,
    url: String(listening.url).replace('localhost', '127.0.0.1'),
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}
