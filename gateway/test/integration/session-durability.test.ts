import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, inject, it } from 'vitest';
import { SessionSchema } from '../../src/features/sessions/session-schemas.js';
import { repoRoot } from '../../src/infra/paths.js';
import { testEnv } from '../helpers/env.js';
import { bearer, getJson } from '../helpers/http.js';
import { startRealGateway } from '../helpers/real-gateway.js';
import { readSse, type SseEvent } from '../helpers/sse.js';
import { signToken } from '../helpers/tokens.js';
import { processExists, waitFor, MACHINE_MARGIN_MS } from '../helpers/wait.js';
import { quietLogger } from '../helpers/databases.js';
import { createDatabase } from '../../src/infra/database/database.js';

const alice = bearer(signToken({ sub: 'alice', scope: 'inference' }));
const longJob = {
  task: 'text-to-image',
  model: 'tiny-sd',
  parameters: { prompt: 'a slow painting', steps: 80, width: 256, height: 256, seed: 1 },
};

async function createSession(url: string) {
  const response = await fetch(`${url}/api/inference/sessions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...alice },
    body: JSON.stringify(longJob),
  });
  expect(response.status).toBe(202);
  return SessionSchema.parse(await response.json());
}

/** A short lease, so the dead gateway's sessions are taken over quickly. */
const LEASE_SECONDS = 2;

describe('nothing is silently lost', () => {
  it('ends a session failed, with the cause, when its worker dies mid-job', async () => {
    const real = await startRealGateway({
      MODEL_DIRECTORY: inject('demoModels'),
      OUTPUT_DIRECTORY: mkdtempSync(join(tmpdir(), 'device-ops-out-')),
      DATA_DIRECTORY: mkdtempSync(join(tmpdir(), 'device-ops-data-')),
      LOG_LEVEL: 'warn',
    });
    try {
      const session = await createSession(real.url);
      const seen: SseEvent[] = [];
      const stream = fetch(`${real.url}/api/inference/sessions/${session.id}/events`, { headers: alice }).then((r) =>
        readSse(r, (event) => (seen.push(event), false)),
      );
      await waitFor(async () => (seen.some((e) => e.event === 'progress') ? true : undefined), { what: 'progress' });
      const pid = real.gateway.workers.workers()[0]!.snapshot().pid!;
      const killedAt = Date.now();
      process.kill(pid, 'SIGKILL');

      const events = await stream;
      // The client gets a terminal event naming the cause as the worker's stream breaks, not at a timeout.
      expect(Date.now() - killedAt).toBeLessThan(MACHINE_MARGIN_MS);
      const last = events.at(-1)!;
      expect(last.event).toBe('error');
      expect((last.data as { message: string }).message).toMatch(/worker worker-0 was lost while running the job/);
      const failed = SessionSchema.parse((await getJson(`${real.url}/api/inference/sessions/${session.id}`, alice)).body);
      expect(failed.status).toBe('failed');
      expect(failed.error!.message).toContain('worker-0');
    } finally {
      await real.gateway.close();
    }
  });

  it('ends the running session of a gateway that died with its local worker interrupted once its lease ran out, its events still readable', async () => {
    const dataDirectory = mkdtempSync(join(tmpdir(), 'device-ops-data-'));
    const env = testEnv({
      MODEL_DIRECTORY: inject('demoModels'),
      OUTPUT_DIRECTORY: mkdtempSync(join(tmpdir(), 'device-ops-out-')),
      DATA_DIRECTORY: dataDirectory,
      SESSION_LEASE_SECONDS: String(LEASE_SECONDS),
    });
    const gateway = spawn(process.execPath, [join(repoRoot, 'gateway', 'dist', 'server.js')], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    const lines: Record<string, unknown>[] = [];
    createInterface({ input: gateway.stdout }).on('line', (line) => {
      if (line.startsWith('{')) lines.push(JSON.parse(line) as Record<string, unknown>);
    });
    const listening = await waitFor(async () => lines.find((l) => l.message === 'gateway listening'), { timeoutMs: 120_000 });
    const url = String(listening.url).replace('localhost', '127.0.0.1');
    const session = await createSession(url);
    const abort = new AbortController();
    const before = await readSse(
      await fetch(`${url}/api/inference/sessions/${session.id}/events`, { headers: alice, signal: abort.signal }),
      (_e, all) => all.filter((e) => e.event === 'progress').length === 3,
      abort,
    );
    const workerPid = Number(lines.find((l) => l.message === 'worker ready')!.pid);
    // Events are stored within 50 ms of their delivery (docs/adr/0007): a
    // crash loses at most that window, so kill once the events seen so far are stored.
    const reader = createDatabase({ dataDirectory }, quietLogger());
    try {
      await waitFor(
        async () => {
          const [row] = (await reader.knex('session_events').where('session_id', session.id).count({ n: '*' })) as { n: unknown }[];
          return Number(row!.n) >= before.length ? true : undefined;
        },
        { what: 'the events seen so far to be stored' },
      );
    } finally {
      await reader.close();
    }
    gateway.kill('SIGKILL');
    await new Promise((resolve) => gateway.once('exit', resolve));
    // Its worker notices its supervisor is gone and stops too.
    await waitFor(async () => (processExists(workerPid) ? undefined : true), { timeoutMs: 15_000, what: 'the orphaned worker to exit' });

    const next = await startRealGateway({ ...(env as Record<string, string>), LOG_LEVEL: 'warn' });
    try {
      // The dead instance's lease runs out; the new one takes the session over, finds its worker
      // (restarted with the gateway) no longer holds the job, and ends it interrupted, saying why.
      const interrupted = await waitFor(
        async () => {
          const current = SessionSchema.parse((await getJson(`${next.url}/api/inference/sessions/${session.id}`, alice)).body);
          return current.status === 'running' ? undefined : current;
        },
        { timeoutMs: LEASE_SECONDS * 1000 + 5000 + MACHINE_MARGIN_MS, what: 'the session to be taken over' },
      );
      expect(interrupted.status).toBe('interrupted');
      expect(interrupted.error).toMatchObject({ code: 'INTERRUPTED', message: expect.stringMatching(/no longer holds it/) });
      expect(interrupted.finishedAt).not.toBeNull();
      const replay = await readSse(await fetch(`${next.url}/api/inference/sessions/${session.id}/events`, { headers: alice }));
      // Past events are all there, and the stream still ends with a terminal event.
      expect(replay.slice(0, before.length).map((e) => e.event)).toEqual(before.map((e) => e.event));
      expect(replay.at(-1)).toMatchObject({ event: 'error', data: { code: 'INTERRUPTED' } });
    } finally {
      await next.gateway.close();
    }
    // Two gateway starts with their workers: about 40 s alone on this machine, more beside other suites.
  }, 180_000);
});
