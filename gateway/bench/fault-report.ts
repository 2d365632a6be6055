/**
 * Fault report (issue 6): the resilience figures, measured against real
 * processes — the gateway as its own process (gateway/dist/server.js) with
 * real local Python workers and embedded SQLite — and printed with the
 * settings and the machine. A report, not a test: it prints, and exits 1
 * only when jobs were lost or stuck.
 *
 *   npm run faults:report     (from the repository root; builds first)
 *
 * 1. Recovery after kill -9 of a local worker: from SIGKILL to the worker
 *    serving again, polling /health/detailed every 20 ms. Each repetition
 *    runs on a fresh gateway, so every kill is the worker's first failure
 *    (backoff = WORKER_RESTART_BACKOFF_MS ± 20 % jitter, far from crash-loop).
 * 2. 10 SSE streams of long text-to-image jobs on one worker; kill -9 the
 *    worker once every stream saw `accepted` and one saw `progress`; time from
 *    the kill to each stream's terminal event.
 * 3. Overload: MAX_ACTIVE_SESSIONS and MAX_INFLIGHT_PER_WORKER small, a flood
 *    of POST /api/inference/execute (a tensor job on tiny-mlp, a few ms of
 *    worker time each) with 64 requests in flight; 200 vs 503,
 *    Retry-After and problem type on each 503, 503s per second, their
 *    latency, gateway memory; then every accepted session must end.
 * 4. Lost or stuck jobs, (2) and (3) together: must be 0.
 * 5. Replicas (fault-report-replicas.ts): several gateway processes on one
 *    PostgreSQL, killed, restarted and added under load; takeover time and
 *    cancels through a replica that does not own the session. Counts toward (4).
 *
 * FAULTS_REPEAT (default 3) sets the repetitions of (1); FAULTS_FLOOD_SECONDS
 * (default 5) the flood's length; FAULTS_ONLY=recovery|streams|overload|replicas runs
 * one part.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, release, totalmem, type } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../src/infra/paths.js';
import {
  BASE_SETTINGS,
  DEFAULTS,
  TERMINAL_EVENTS,
  bearer,
  cpuMicros,
  demoModels,
  mb,
  median,
  ms,
  percentile,
  processGone,
  readSse,
  sleep,
  startGateway,
  type Gateway,
  type SseFrame,
} from './fault-report-lib.js';
import { replicaLost, replicaRows, replicas } from './fault-report-replicas.js';

const REPEAT = Number(process.env.FAULTS_REPEAT ?? 3);
const FLOOD_SECONDS = Number(process.env.FAULTS_FLOOD_SECONDS ?? 5);
/** "recovery", "streams" or "overload": run one part and print its raw figures. */
const ONLY = process.env.FAULTS_ONLY;
const FLOOD_IN_FLIGHT = 64;
const OVERLOAD_LIMIT = 8;
const STREAMS = 10;
const POLL_MS = 20;
const TERMINAL_STATUSES = new Set(['succeeded', 'failed', 'cancelled', 'interrupted']);

const LONG_JOB = { task: 'text-to-image', model: 'tiny-sd', parameters: { prompt: 'x', steps: 80, width: 256, height: 256, seed: 1 } };
const SHORT_JOB = { task: 'text-to-image', model: 'tiny-sd', parameters: { prompt: 'again', steps: 2, width: 64, height: 64, seed: 1 } };
/** The flood's job: a real worker call that holds its slot a few milliseconds, so slots churn and many jobs are accepted. */
const FLOOD_JOB = {
  task: 'tensor',
  model: 'tiny-mlp',
  parameters: { inputs: { x: { dtype: 'float32', shape: [1, 4], data: Buffer.from(new Float32Array([0.1, 0.2, 0.3, 0.4]).buffer).toString('base64') } } },
};

const json = { 'content-type': 'application/json' };
const post = (gateway: Gateway, path: string, body: unknown, headers: Record<string, string>, signal?: AbortSignal) =>
  fetch(`${gateway.url}${path}`, { method: 'POST', headers: { ...json, ...headers }, body: JSON.stringify(body), ...(signal ? { signal } : {}) });

async function withGateway<T>(name: string, models: string, settings: Record<string, string>, body: (g: Gateway) => Promise<T>): Promise<T> {
  const gateway = await startGateway(name, models, settings);
  try {
    return await body(gateway);
  } catch (error) {
    console.error(`${name}: failed; gateway log at ${gateway.logFile}`);
    throw error;
  } finally {
    await gateway.stop();
  }
}

// ------------------------------------------------------------ 1. recovery

interface Recovery {
  recoveryMs: number;
  goneMs: number;
  detectedMs: number;
  backoffMs: number;
  afterBackoffMs: number;
  exitCause: string;
}

async function recoverOnce(models: string): Promise<Recovery> {
  return withGateway('recovery', models, { WORKER_COUNT: '1' }, async (gateway) => {
    const before = (await gateway.detailed()).workers[0]!;
    if (!before.healthy || before.pid === null) throw new Error(`worker-0 is not serving: ${before.state}`);
    await sleep(300);
    const killedAt = performance.now();
    process.kill(before.pid, 'SIGKILL');
    const gone = processGone(before.pid, killedAt);
    let detectedMs = Number.NaN;
    let backoffMs = Number.NaN;
    let exitCause = '';
    for (;;) {
      const tick = performance.now();
      const worker = (await gateway.detailed()).workers[0]!;
      const now = performance.now();
      if (Number.isNaN(detectedMs) && worker.state !== 'serving') detectedMs = now - killedAt;
      if (Number.isNaN(backoffMs) && worker.nextRestartAt && worker.lastExit) {
        backoffMs = Date.parse(worker.nextRestartAt) - Date.parse(worker.lastExit.at);
        exitCause = worker.lastExit.cause;
      }
      if (worker.healthy && worker.state === 'serving' && worker.pid !== before.pid) {
        const recoveryMs = now - killedAt;
        return { recoveryMs, goneMs: await gone, detectedMs, backoffMs, afterBackoffMs: recoveryMs - backoffMs, exitCause };
      }
      if (now - killedAt > 120_000) throw new Error(`worker-0 not serving 120 s after kill -9 (state ${worker.state})`);
      await sleep(Math.max(0, POLL_MS - (performance.now() - tick)));
    }
  });
}

// ------------------------------------------------------------ 2. streams

interface Stream {
  sessionId: string | null;
  frames: SseFrame[];
  terminal: SseFrame | null;
  failure: string | null;
}

async function killUnderStreams(models: string) {
  return withGateway('streams', models, { WORKER_COUNT: '1' }, async (gateway) => {
    const auth = bearer('streams');
    const worker = (await gateway.detailed()).workers[0]!;
    const abort = new AbortController();
    const streams: Stream[] = Array.from({ length: STREAMS }, () => ({ sessionId: null, frames: [], terminal: null, failure: null }));
    const readers = streams.map(async (stream) => {
      try {
        const response = await post(gateway, '/api/inference/execute', LONG_JOB, { ...auth, accept: 'text/event-stream' }, abort.signal);
        if (response.status !== 200) throw new Error(`answered ${response.status}: ${await response.text()}`);
        await readSse(response, (frame) => {
          stream.frames.push(frame);
          if (frame.event === 'accepted') stream.sessionId = String(frame.data.sessionId);
          if (TERMINAL_EVENTS.has(frame.event) && !stream.terminal) stream.terminal = frame;
        });
      } catch (error) {
        if (!abort.signal.aborted) stream.failure = (error as Error).message;
      }
    });
    const seen = (event: string) => (stream: Stream) => stream.frames.some((f) => f.event === event);
    const readyBy = Date.now() + 180_000;
    while (!(streams.every(seen('accepted')) && streams.some(seen('progress')))) {
      if (Date.now() > readyBy || streams.some((s) => s.failure || s.terminal)) {
        throw new Error(`streams not all running: ${streams.map((s) => s.failure ?? s.terminal?.event ?? s.frames.at(-1)?.event ?? 'nothing').join(', ')}`);
      }
      await sleep(10);
    }
    const runningAtKill = streams.filter(seen('started')).length;
    const progressAtKill = streams.filter(seen('progress')).length;
    const killedAt = performance.now();
    process.kill(worker.pid!, 'SIGKILL');
    const gone = processGone(worker.pid!, killedAt);
    // Every stream should end by itself; 30 s is the give-up point, not a target.
    await Promise.race([Promise.all(readers), sleep(30_000)]);
    abort.abort();
    await Promise.all(readers);
    const times = streams.filter((s) => s.terminal).map((s) => s.terminal!.at - killedAt);
    const noTerminal = streams.filter((s) => !s.terminal).length;
    const terminalEvents = [...new Set(streams.map((s) => s.terminal?.event ?? 'none'))];
    const sampleError = streams.find((s) => s.terminal?.event === 'error')?.terminal?.data ?? null;

    // Their sessions as recorded.
    const rows = await Promise.all(
      streams.map(async (s) => {
        if (!s.sessionId) return 'no session id';
        const response = await fetch(`${gateway.url}/api/inference/sessions/${s.sessionId}`, { headers: auth });
        return response.ok ? String(((await response.json()) as { status: string }).status) : `HTTP ${response.status}`;
      }),
    );
    const statusCounts = countBy(rows);
    const notTerminalRows = rows.filter((status) => !TERMINAL_STATUSES.has(status)).length;

    // The worker comes back, and new requests succeed.
    let backMs = Number.NaN;
    for (;;) {
      const w = (await gateway.detailed()).workers[0]!;
      if (w.healthy && w.pid !== worker.pid) {
        backMs = performance.now() - killedAt;
        break;
      }
      if (performance.now() - killedAt > 120_000) break;
      await sleep(100);
    }
    const after = await post(gateway, '/api/inference/execute', SHORT_JOB, auth);
    await after.arrayBuffer();
    return {
      streams: STREAMS,
      runningAtKill,
      progressAtKill,
      workerGoneMs: await gone,
      maxMs: Math.max(...times),
      medianMs: median(times),
      noTerminal,
      terminalEvents,
      sampleError,
      statusCounts,
      lost: Math.max(noTerminal, notTerminalRows),
      workerBackMs: backMs,
      newRequestStatus: after.status,
    };
  });
}

// ------------------------------------------------------------ 3. overload

const countBy = (values: string[]) => values.reduce<Record<string, number>>((acc, v) => ({ ...acc, [v]: (acc[v] ?? 0) + 1 }), {});

async function listAll(gateway: Gateway, auth: Record<string, string>): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  for (let offset = 0; ; offset += 200) {
    const response = await fetch(`${gateway.url}/api/inference/sessions?limit=200&offset=${offset}`, { headers: auth });
    if (!response.ok) throw new Error(`GET /api/inference/sessions answered ${response.status}`);
    const page = (await response.json()) as { items: { id: string; status: string }[]; total: number };
    for (const item of page.items) found.set(item.id, item.status);
    if (page.items.length === 0 || offset + 200 >= page.total) return found;
  }
}

async function overload(models: string) {
  const settings = { WORKER_COUNT: '1', MAX_ACTIVE_SESSIONS: String(OVERLOAD_LIMIT), MAX_INFLIGHT_PER_WORKER: String(OVERLOAD_LIMIT) };
  return withGateway('overload', models, settings, async (gateway) => {
    const auth = bearer('flood');
    // The model loaded once before, so the flood meets a warm worker.
    const warm = await post(gateway, '/api/inference/execute', FLOOD_JOB, auth);
    if (warm.status !== 200) throw new Error(`warm-up answered ${warm.status}: ${await warm.text()}`);
    await warm.arrayBuffer();
    await sleep(1000);
    const memoryBefore = (await gateway.detailed()).gateway.memory;

    const accepted: string[] = [];
    const statuses: string[] = [];
    const refusedLatencies: number[] = [];
    /** 503 latencies of requests sent after the first second (64 new connections opened then). */
    const steadyLatencies: number[] = [];
    const acceptedLatencies: number[] = [];
    const problemTypes: string[] = [];
    let missingRetryAfter = 0;
    const cpuBefore = cpuMicros(gateway.pid);
    const started = performance.now();
    const end = started + FLOOD_SECONDS * 1000;
    await Promise.all(
      Array.from({ length: FLOOD_IN_FLIGHT }, async () => {
        while (performance.now() < end) {
          const sent = performance.now();
          try {
            // Execute: refused at once beyond the bounds (background sessions would wait in the queue instead).
            const response = await post(gateway, '/api/inference/execute', FLOOD_JOB, auth);
            const body = (await response.json()) as { id?: string; type?: string };
            const took = performance.now() - sent;
            statuses.push(String(response.status));
            if (response.status === 200) {
              accepted.push(body.id!);
              acceptedLatencies.push(took);
            } else if (response.status === 503) {
              refusedLatencies.push(took);
              if (sent - started >= 1000) steadyLatencies.push(took);
              problemTypes.push(`${response.headers.get('content-type')?.split(';')[0]} ${body.type}`);
              if (!/^\d+$/.test(response.headers.get('retry-after') ?? '')) missingRetryAfter += 1;
            }
          } catch (error) {
            statuses.push(`network error: ${(error as Error).message}`);
          }
        }
      }),
    );
    const floodSeconds = (performance.now() - started) / 1000;
    const gatewayCpuMicros = cpuMicros(gateway.pid) - cpuBefore;
    const memoryAtEnd = (await gateway.detailed()).gateway.memory;

    // Every accepted session must end, and be listed with a terminal status.
    let found = new Map<string, string>();
    const drainStart = performance.now();
    for (;;) {
      found = await listAll(gateway, auth);
      if (accepted.every((id) => TERMINAL_STATUSES.has(found.get(id) ?? ''))) break;
      if (performance.now() - drainStart > 120_000) break;
      await sleep(250);
    }
    const drainMs = performance.now() - drainStart;
    const missing = accepted.filter((id) => !found.has(id)).length;
    const stuck = accepted.filter((id) => found.has(id) && !TERMINAL_STATUSES.has(found.get(id)!)).length;
    const memoryAfterDrain = (await gateway.detailed()).gateway.memory;
    return {
      settings,
      floodSeconds,
      requests: statuses.length,
      statusCounts: countBy(statuses),
      accepted: accepted.length,
      refused: refusedLatencies.length,
      refusedPerSecond: refusedLatencies.length / floodSeconds,
      gatewayCpuMicrosPerRequest: gatewayCpuMicros / statuses.length,
      gatewayCoreShare: gatewayCpuMicros / 1e6 / floodSeconds,
      refusedP50Ms: percentile(steadyLatencies, 50),
      refusedP99Ms: percentile(steadyLatencies, 99),
      refusedP99AllMs: percentile(refusedLatencies, 99),
      acceptedP50Ms: percentile(acceptedLatencies, 50),
      missingRetryAfter,
      problemTypes: countBy(problemTypes),
      memoryBefore,
      memoryAtEnd,
      memoryAfterDrain,
      acceptedFinal: countBy(accepted.map((id) => found.get(id) ?? 'missing')),
      drainMs,
      missing,
      stuck,
      lost: missing + stuck,
    };
  });
}

// ------------------------------------------------------------ report

async function main(): Promise<void> {
  const began = performance.now();
  const models = await demoModels();
  const cpu = cpus();
  console.log(`fault report — ${cpu.length} × ${cpu[0]?.model}, ${mb(totalmem())} RAM, ${type()} ${release()}, node ${process.version}`);
  console.log(
    `settings: WORKER_RESTART_BACKOFF_MS=${DEFAULTS.workerRestartBackoffMs} (default), ` +
      `WORKER_RESTART_BACKOFF_MAX_MS=${DEFAULTS.workerRestartBackoffMaxMs}, ` +
      `WORKER_CRASH_LOOP_FAILURES=${DEFAULTS.workerCrashLoopFailures} in ${DEFAULTS.workerCrashLoopWindowSeconds} s (defaults), ` +
      Object.entries(BASE_SETTINGS).map(([k, v]) => `${k}=${v}`).join(', ') +
      `, WORKER_COUNT=1, embedded SQLite, worker python ${DEFAULTS.workerPython}`,
  );

  if (ONLY) {
    const parts: Record<string, () => Promise<unknown>> = {
      recovery: () => recoverOnce(models),
      streams: () => killUnderStreams(models),
      overload: () => overload(models),
      replicas: () => replicas(models),
    };
    console.log(JSON.stringify(await parts[ONLY]!(), null, 2));
    return;
  }
  const recoveries: Recovery[] = [];
  for (let i = 0; i < REPEAT; i += 1) recoveries.push(await recoverOnce(models));
  const streams = await killUnderStreams(models);
  const flood = await overload(models);
  const shared = await replicas(models);
  const lost = streams.lost + flood.lost + replicaLost(shared);

  const rows: [string, string][] = [
    [`1. recovery after kill -9, median of ${REPEAT} (one per fresh gateway)`, ms(median(recoveries.map((r) => r.recoveryMs)))],
    ['   each run: recovery / backoff applied / start after backoff', recoveries.map((r) => `${ms(r.recoveryMs)} / ${ms(r.backoffMs)} / ${ms(r.afterBackoffMs)}`).join('; ')],
    ['   worker process gone (zombie) / exit seen in /health/detailed, medians', `${ms(median(recoveries.map((r) => r.goneMs)))} / ${ms(median(recoveries.map((r) => r.detectedMs)))}`],
    ['   recorded cause', recoveries[0]?.exitCause ?? ''],
    [`2. ${STREAMS} SSE streams, kill -9: last terminal event after`, ms(streams.maxMs)],
    ['   per client, median; worker process gone (zombie) after', `${ms(streams.medianMs)}; ${ms(streams.workerGoneMs)}`],
    ['   streams with no terminal event', String(streams.noTerminal)],
    ['   at the kill: streams started / with progress', `${streams.runningAtKill} / ${streams.progressAtKill}`],
    ['   terminal events; sessions recorded', `${streams.terminalEvents.join(', ')}; ${JSON.stringify(streams.statusCounts)}`],
    ['   cause given to clients', streams.sampleError ? `${String(streams.sampleError.code)}: ${String(streams.sampleError.message)}` : 'none'],
    ['   worker serving again after; then a new request', `${ms(streams.workerBackMs)}; HTTP ${streams.newRequestStatus}`],
    [
      `3. overload, ${FLOOD_IN_FLIGHT} in flight for ${flood.floodSeconds.toFixed(1)} s (MAX_ACTIVE_SESSIONS=MAX_INFLIGHT_PER_WORKER=${OVERLOAD_LIMIT})`,
      `${flood.requests} tiny-mlp tensor jobs: ${JSON.stringify(flood.statusCounts)}`,
    ],
    ['   503s served per second', flood.refusedPerSecond.toFixed(0)],
    ['   gateway CPU per request; share of one core', `${flood.gatewayCpuMicrosPerRequest.toFixed(0)} µs; ${(flood.gatewayCoreShare * 100).toFixed(0)} %`],
    ['   503 latency p50 / p99 after the first 1 s (p99 all; 202 p50)', `${flood.refusedP50Ms.toFixed(1)} / ${flood.refusedP99Ms.toFixed(1)} ms (${flood.refusedP99AllMs.toFixed(1)}; ${flood.acceptedP50Ms.toFixed(1)} ms)`],
    ['   503s without Retry-After; problem types', `${flood.missingRetryAfter}; ${JSON.stringify(flood.problemTypes)}`],
    ['   gateway RSS before / end of flood / after drain', `${mb(flood.memoryBefore.rssBytes)} / ${mb(flood.memoryAtEnd.rssBytes)} / ${mb(flood.memoryAfterDrain.rssBytes)}`],
    ['   gateway heapUsed before / end of flood / after drain', `${mb(flood.memoryBefore.heapUsedBytes)} / ${mb(flood.memoryAtEnd.heapUsedBytes)} / ${mb(flood.memoryAfterDrain.heapUsedBytes)}`],
    ['   accepted sessions ended as (drained in)', `${JSON.stringify(flood.acceptedFinal)} (${ms(flood.drainMs)})`],
    ['   accepted but missing from the list / not terminal', `${flood.missing} / ${flood.stuck}`],
    ...replicaRows(shared),
    ['4. lost or stuck jobs', `${lost}  (streams ${streams.lost} + overload ${flood.lost} + replicas ${replicaLost(shared)})  ${lost === 0 ? 'PASS' : 'FAIL'}`],
  ];
  const width = Math.max(...rows.map(([name]) => name.length)) + 2;
  for (const [name, value] of rows) console.log(`${name.padEnd(width)}${value}`);
  console.log(`lost or stuck jobs: ${lost}`);

  const out = join(repoRoot, 'var', 'bench');
  mkdirSync(out, { recursive: true });
  const machine = { cpu: cpu[0]?.model, cores: cpu.length, node: process.version, os: `${type()} ${release()}` };
  writeFileSync(join(out, 'fault-report.json'), JSON.stringify({ machine, recoveries, streams, flood, replicas: shared, lost }, null, 2));
  console.log(`figures written to ${join('var', 'bench', 'fault-report.json')} in ${((performance.now() - began) / 1000).toFixed(0)} s`);
  process.exitCode = lost === 0 ? 0 : 1;
}

await main();
process.exit(process.exitCode ?? 0);
