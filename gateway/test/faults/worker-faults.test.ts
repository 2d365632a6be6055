import { afterEach, describe, expect, it } from 'vitest';
import { SessionPageSchema } from '../../src/features/sessions/session-schemas.js';
import { getJson } from '../helpers/http.js';
import type { RealGateway } from '../helpers/real-gateway.js';
import { waitFor, MACHINE_MARGIN_MS } from '../helpers/wait.js';
import {
  alice,
  crashingPython,
  health,
  longJob,
  openExecuteStream,
  post,
  quickJob,
  session,
  startFaultGateway,
  waitForWorker,
  worker,
} from './fault-support.js';

/**
 * Fault injection against real worker processes: each case breaks a worker
 * the way production does (kill -9, a frozen process, a worker that cannot
 * start) and asserts what clients and operators see.
 */
describe('worker faults', () => {
  let real: RealGateway | undefined;
  afterEach(async () => {
    await real?.gateway.close();
    real = undefined;
  });

  it('kill -9 with 10 streams on the worker: every client gets a terminal error within 2 s, sessions fail with the cause, the worker comes back', async () => {
    real = await startFaultGateway({ WORKER_COUNT: '1', WORKER_RESTART_BACKOFF_MS: '500' });
    const { url } = real;
    const streams = Array.from({ length: 10 }, () => openExecuteStream(url, longJob));
    await waitFor(
      async () => (streams.every((s) => s.seen.some((e) => e.event === 'accepted')) && streams.some((s) => s.seen.some((e) => e.event === 'progress')) ? true : undefined),
      { timeoutMs: 60_000, what: 'ten accepted streams, one of them running' },
    );
    const before = await worker(url, 'worker-0');
    const killedAt = performance.now();
    process.kill(before.pid!, 'SIGKILL');

    const all = await Promise.all(streams.map((s) => s.done));
    for (const [index, events] of all.entries()) {
      const last = events.at(-1)!;
      expect(last.event, `stream ${index}`).toBe('error');
      expect((last.data as { message: string }).message).toMatch(/worker worker-0 was lost (while running|before starting) the job/);
      // The streams break as the process dies; nothing waits on a timeout.
      expect(streams[index]!.terminalAt! - killedAt, `stream ${index}: time to its terminal event`).toBeLessThan(MACHINE_MARGIN_MS);
    }
    // The sessions say so too, with the cause.
    for (const events of all) {
      const id = (events.find((e) => e.event === 'accepted')!.data as { sessionId: string }).sessionId;
      const recorded = await session(url, id);
      expect(recorded.status).toBe('failed');
      expect(recorded.error!.message).toContain('worker-0');
    }

    const down = await worker(url, 'worker-0');
    expect(down.lastExit).toMatchObject({ signal: 'SIGKILL' });
    expect(down.lastExit!.cause).toMatch(/SIGKILL/);
    const back = await waitForWorker(url, 'worker-0', (w) => w.state === 'serving', 'worker-0 to serve again');
    expect(back.restarts).toBe(1);
    expect(back.pid).not.toBe(before.pid);
    const retried = await post(url, '/api/inference/execute', quickJob);
    expect(retried.status).toBe(200);
  // Starting the gateway and its worker, then ten streams, can take a minute on a loaded CI machine (its own wait allows 60 s).
  }, 180_000);

  it('a job queued on a worker that dies is sent once to another serving worker; a started one is not', async () => {
    real = await startFaultGateway({ WORKER_COUNT: '2', WORKER_RESTART_BACKOFF_MS: '2000' });
    const { url } = real;
    // Two jobs on each worker: the scheduler spreads them; one runs, one waits.
    const job = { ...longJob, parameters: { ...longJob.parameters, steps: 16, width: 128, height: 128 } };
    const streams = Array.from({ length: 4 }, () => openExecuteStream(url, job));
    await waitFor(
      async () => (streams.every((s) => s.seen.some((e) => e.event === 'queued')) ? true : undefined),
      { timeoutMs: 60_000, what: 'four queued jobs' },
    );
    const onWorker = (id: string) => streams.filter((s) => (s.seen.find((e) => e.event === 'accepted')!.data as { workerId: string }).workerId === id);
    const victims = onWorker('worker-0');
    expect(victims).toHaveLength(2);
    await waitFor(async () => (victims.some((s) => s.seen.some((e) => e.event === 'started')) ? true : undefined), {
      timeoutMs: 60_000,
      what: 'a job running on worker-0',
    });
    process.kill((await worker(url, 'worker-0')).pid!, 'SIGKILL');

    const ended = await Promise.all(victims.map((s) => s.done));
    let moved = 0;
    for (const events of ended) {
      const types = events.map((e) => e.event);
      if (!types.includes('requeued')) {
        // Started before the kill: never re-run silently.
        expect(types).toContain('started');
        expect(types.at(-1)).toBe('error');
        expect((events.at(-1)!.data as { message: string }).message).toMatch(/worker worker-0 was lost while running the job/);
        continue;
      }
      expect(types.indexOf('started')).toBeGreaterThan(types.indexOf('requeued'));
      // Still queued at the kill: moved to worker-1, where it succeeds.
      const requeued = events.find((e) => e.event === 'requeued')!;
      expect(requeued.data).toMatchObject({ fromWorker: 'worker-0', toWorker: 'worker-1' });
      expect(types.at(-1)).toBe('result');
      expect((events.at(-1)!.data as { workerId: string }).workerId).toBe('worker-1');
      moved += 1;
    }
    expect(moved).toBeGreaterThan(0);
    expect(moved).toBeLessThan(victims.length); // the running one was not moved
    for (const s of onWorker('worker-1')) expect((await s.done).at(-1)!.event).toBe('result');
  }, 180_000);

  it('SIGSTOP: the call ends with 504 at its deadline, the worker is unreachable, SIGCONT brings it back', async () => {
    const deadlineMs = 3000;
    real = await startFaultGateway({
      WORKER_COUNT: '1',
      INFERENCE_DEADLINE_MS: String(deadlineMs),
      WORKER_HEALTH_INTERVAL_MS: '500',
      HEALTH_CHECK_DEADLINE_MS: '1000',
    });
    const { url } = real;
    const pid = (await worker(url, 'worker-0')).pid!;
    process.kill(pid, 'SIGSTOP');
    try {
      // Sent before the health check can notice: the frozen worker takes the call.
      const started = performance.now();
      const response = await post(url, '/api/inference/execute', quickJob);
      const elapsed = performance.now() - started;
      expect(response.status).toBe(504);
      expect(response.headers.get('content-type')).toMatch(/application\/problem\+json/);
      const problem = (await response.json()) as { type: string; detail: string };
      expect(problem.type).toBe('/problems/worker-timeout');
      expect(problem.detail).toMatch(/within its deadline/);
      expect(elapsed).toBeGreaterThanOrEqual(deadlineMs - 100);
      expect(elapsed).toBeLessThan(deadlineMs + MACHINE_MARGIN_MS);

      const frozen = await waitForWorker(url, 'worker-0', (w) => w.state === 'unreachable', 'worker-0 unreachable', 10_000);
      expect(frozen.healthy).toBe(false);
      expect((await getJson(`${url}/health`)).status).toBe(200);
      const ready = await getJson(`${url}/health/ready`);
      expect(ready.status).toBe(503);
      expect(JSON.stringify(ready.body)).toMatch(/no worker is serving/);
      // Nothing waits on it meanwhile: refused at once.
      const refused = await post(url, '/api/inference/execute', quickJob);
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).not.toBeNull();
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await waitForWorker(url, 'worker-0', (w) => w.state === 'serving', 'worker-0 serving after SIGCONT', 10_000);
    expect((await getJson(`${url}/health/ready`)).status).toBe(200);
    const after = await post(url, '/api/inference/execute', quickJob);
    expect(after.status).toBe(200);
    expect((await worker(url, 'worker-0')).pid).toBe(pid); // the same process, not a restart
  });

  it('a worker that crashes at every start is shown crash-loop; the gateway stays live, and ready while another worker serves', async () => {
    real = await startFaultGateway({
      WORKER_COUNT: '2',
      WORKER_PYTHON: crashingPython('worker-1'),
      WORKER_RESTART_BACKOFF_MS: '100',
      WORKER_RESTART_BACKOFF_MAX_MS: '3000',
      WORKER_CRASH_LOOP_FAILURES: '3',
      WORKER_CRASH_LOOP_WINDOW_SECONDS: '60',
    });
    const { url } = real;
    const looping = await waitForWorker(url, 'worker-1', (w) => w.state === 'crash-loop', 'worker-1 in crash-loop', 30_000);
    expect(looping.healthy).toBe(false);
    expect(looping.restarts).toBeGreaterThanOrEqual(2);
    expect(looping.lastExit).toMatchObject({ code: 1, cause: 'exit code 1' });
    expect(looping.lastExit!.lastError).toMatch(/fault injection: worker-1 cannot start/);
    // Retried slowly, not spun: the next try is the maximum backoff away.
    expect(Date.parse(looping.nextRestartAt!) - Date.parse(looping.lastExit!.at)).toBeGreaterThanOrEqual(2900);

    const report = await health(url);
    expect(report.status).toBe('degraded');
    expect(report.workers.find((w) => w.id === 'worker-0')!.state).toBe('serving');
    expect((await getJson(`${url}/health`)).status).toBe(200);
    expect((await getJson(`${url}/health/ready`)).status).toBe(200);
    const served = await post(url, '/api/inference/execute', quickJob);
    expect(served.status).toBe(200);
    expect(((await served.json()) as { workerId: string }).workerId).toBe('worker-0');
  });

  it('a gateway whose only worker crash-loops stays live but is not ready, and says why', async () => {
    real = await startFaultGateway({
      WORKER_COUNT: '1',
      WORKER_PYTHON: crashingPython('worker-0'),
      WORKER_RESTART_BACKOFF_MS: '100',
      WORKER_RESTART_BACKOFF_MAX_MS: '3000',
      WORKER_CRASH_LOOP_FAILURES: '3',
    });
    const { url } = real;
    await waitForWorker(url, 'worker-0', (w) => w.state === 'crash-loop', 'worker-0 in crash-loop', 30_000);
    expect((await getJson(`${url}/health`)).status).toBe(200);
    const ready = await getJson(`${url}/health/ready`);
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({ ready: false, reasons: ['no worker is serving'] });
    const detailed = await getJson(`${url}/health/detailed`);
    expect(detailed.status).toBe(503);
    const refused = await post(url, '/api/inference/execute', quickJob);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('5');
    const sessions = SessionPageSchema.parse((await getJson(`${url}/api/inference/sessions`, alice)).body);
    expect(sessions.total).toBe(0); // nothing half-recorded
  });
});
