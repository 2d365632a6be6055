import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import { DetailedHealthSchema } from '../../src/features/health/health-schemas.js';
import { repoRoot } from '../../src/infra/paths.js';
import { testEnv } from '../helpers/env.js';
import { getJson } from '../helpers/http.js';
import { processExists, waitFor } from '../helpers/wait.js';

// The compiled entry point, as `npm start` and the container run it; `npm test` builds it first.
const SERVER = join(repoRoot, 'gateway', 'dist', 'server.js');

function runServer(env: NodeJS.ProcessEnv) {
  if (!existsSync(SERVER)) throw new Error(`${SERVER} is missing: run the build (npm test does) first`);
  const child = spawn(process.execPath, [SERVER], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  const stdout: Record<string, unknown>[] = [];
  child.stderr.on('data', (chunk) => (stderr += chunk));
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (line.startsWith('{')) stdout.push(JSON.parse(line) as Record<string, unknown>);
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, exited, stdout, stderr: () => stderr };
}

describe('the gateway process', () => {
  it('stops at startup with one line naming a missing JWT_SECRET', async () => {
    const run = runServer(testEnv({ JWT_SECRET: undefined }));
    expect(await run.exited).toBe(1);
    const lines = run.stderr().trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/JWT_SECRET is required/);
  });

  it('stops at startup with one line naming a short JWT_SECRET, without echoing it', async () => {
    const run = runServer(testEnv({ JWT_SECRET: 'too-short-but-secret' }));
    expect(await run.exited).toBe(1);
    expect(run.stderr().trim().split('\n')).toEqual([
      'gateway: invalid configuration: JWT_SECRET must be at least 32 characters',
    ]);
  });

  it('says in one line that it has no usable Python environment', async () => {
    const run = runServer(testEnv({ WORKER_PYTHON: '/nonexistent/bin/python3' }));
    expect(await run.exited).toBe(1);
    const lines = run.stderr().trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^gateway: no usable Python environment for local workers at \/nonexistent\/bin\/python3: the interpreter does not exist/);
  });

  it('drains and exits 0 on SIGTERM, stopping its workers', async () => {
    const run = runServer(testEnv());
    const listening = await waitFor(async () => run.stdout.find((l) => l.message === 'gateway listening'), {
      timeoutMs: 120_000,
      what: 'the gateway to listen',
    });
    const url = String(listening.url).replace('localhost', '127.0.0.1');
    const report = DetailedHealthSchema.parse((await getJson(`${url}/health/detailed`)).body);
    const workerPid = report.workers[0]!.pid!;
    expect(processExists(workerPid)).toBe(true);

    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
    expect(processExists(workerPid)).toBe(false);
    const messages = run.stdout.map((l) => l.message);
    expect(messages).toEqual(expect.arrayContaining(['gateway draining', 'worker stopped', 'gateway stopped']));
    expect(messages.indexOf('gateway stopped')).toBeGreaterThan(messages.indexOf('worker stopped'));
  });
});
