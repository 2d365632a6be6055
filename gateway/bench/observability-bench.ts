/**
 * Observability benchmark (issue 7): what metrics and logging cost.
 *
 *   npm run bench:observability     (from the repository root; builds first)
 *
 * 1. CPU per request of the gateway's observability work, in this process,
 *    side by side in alternating rounds: exactly what requestContext and the
 *    gRPC client do for one REST request that makes one worker call — a child
 *    logger with the correlation id, the in-flight gauge, the HTTP duration
 *    histogram and request counter, the gRPC duration histogram, and the
 *    JSON access-log line written by winston (to /dev/null, so the write is
 *    paid). The same loop without them is the baseline subtracted; a last
 *    variant also ships every line to Seq (seq-logging batches, posted to a
 *    raw-events receiver in a child process, so only the gateway's side is
 *    counted). Budget: 50 µs per request.
 * 2. GET /metrics of a real gateway (its own process, gateway/dist/server.js)
 *    supervising 8 real Python workers, and GET /metrics/workers/{id} (one
 *    worker's metrics relayed), after each worker served a request: median and
 *    p95 of sequential scrapes, and the body size. Budget: /metrics < 50 ms.
 *
 * OBS_ROUNDS (default 9) and OBS_REQUESTS (default 20000 per round) size (1);
 * OBS_WORKERS (default 8) and OBS_SCRAPES (default 50) size (2); OBS_ONLY=cpu|scrape runs one part.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { randomUUID } from 'node:crypto';
import { createLogger, type Logger } from '../src/infra/logger.js';
import { GatewayMetrics, statusClass } from '../src/infra/metrics.js';
import { bearer, demoModels, median, percentile, sleep, startGateway } from './fault-report-lib.js';

const ROUNDS = Number(process.env.OBS_ROUNDS ?? 9);
const REQUESTS = Number(process.env.OBS_REQUESTS ?? 20_000);
const WORKERS = Number(process.env.OBS_WORKERS ?? 8);
const SCRAPES = Number(process.env.OBS_SCRAPES ?? 50);
const ONLY = process.env.OBS_ONLY;
const BUDGET_CPU_US = 50;
const SEQ_SETTLE_MS = 1500;
const BUDGET_SCRAPE_MS = 50;

type Variant = 'baseline' | 'metrics' | 'logging' | 'metrics + logging' | 'metrics + logging + Seq';

interface Instruments {
  metrics: GatewayMetrics | null;
  logger: Logger | null;
}

/** One request's observability work, as requestContext (and the gRPC client's interceptor) does it. */
function oneRequest({ metrics, logger }: Instruments, i: number): number {
  const correlationId = randomUUID();
  const log = logger?.child({ correlationId });
  const started = process.hrtime.bigint();
  metrics?.inFlight.inc();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const status = i % 50 === 0 ? 404 : 200;
  const route = i % 2 === 0 ? '/api/device/list' : '/api/model/status';
  if (metrics) {
    metrics.grpcDuration.observe({ worker: `worker-${i % 8}`, rpc: 'ListDevices', code: 'OK' }, seconds);
    metrics.inFlight.dec();
    const labels = { method: 'GET', route, status_class: statusClass(status) };
    metrics.httpDuration.observe(labels, seconds);
    metrics.httpRequests.inc(labels);
  }
  log?.info('request', { method: 'GET', route, status, durationMs: seconds * 1000, principal: 'alice' });
  return correlationId.length;
}

async function drained(stream: NodeJS.WritableStream & { writableLength: number }): Promise<void> {
  while (stream.writableLength > 0) await new Promise((resolve) => setImmediate(resolve));
}

/** A Seq raw-events endpoint in its own process that accepts everything; resolves with its URL. */
async function startSeqReceiver(): Promise<{ url: string; stop: () => void }> {
  const source = `
    const server = require('node:http').createServer((req, res) => {
      req.resume();
      req.on('end', () => { res.writeHead(201, { 'content-type': 'application/json' }); res.end('{}'); });
    });
    server.listen(0, '127.0.0.1', () => console.log(server.address().port));`;
  const child = spawn(process.execPath, ['-e', source], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [chunk] = (await once(child.stdout!, 'data')) as [Buffer];
  return { url: `http://127.0.0.1:${chunk.toString().trim()}`, stop: () => child.kill() };
}

async function cpuPerRequest(): Promise<Record<Variant, number[]>> {
  const sink = createWriteStream('/dev/null');
  const seq = await startSeqReceiver();
  let dropped = 0;
  const instruments: Record<Variant, Instruments> = {
    baseline: { metrics: null, logger: null },
    metrics: { metrics: new GatewayMetrics(), logger: null },
    logging: { metrics: null, logger: createLogger({ level: 'info', stream: sink, defaultFields: { service: 'gateway' } }) },
    'metrics + logging': { metrics: new GatewayMetrics(), logger: createLogger({ level: 'info', stream: sink, defaultFields: { service: 'gateway' } }) },
    'metrics + logging + Seq': {
      metrics: new GatewayMetrics(),
      logger: createLogger({
        level: 'info',
        stream: sink,
        defaultFields: { service: 'gateway' },
        // A buffer for a whole round: the tight loop outpaces the 1 s batches, real traffic does not.
        seq: { serverUrl: seq.url, maxQueued: REQUESTS * 2, onDropped: (count) => (dropped += count) },
      }),
    },
  };
  const variants = Object.keys(instruments) as Variant[];
  const samples = Object.fromEntries(variants.map((v) => [v, [] as number[]])) as Record<Variant, number[]>;
  // Warm-up: JIT, histogram label sets, winston's formats.
  for (const variant of variants) for (let i = 0; i < 5000; i += 1) oneRequest(instruments[variant], i);
  await drained(sink);
  for (let round = 0; round < ROUNDS; round += 1) {
    // Alternate the order so drift on this noisy machine spreads over every variant.
    const order = round % 2 === 0 ? variants : [...variants].reverse();
    for (const variant of order) {
      const before = process.cpuUsage();
      let sum = 0;
      for (let i = 0; i < REQUESTS; i += 1) sum += oneRequest(instruments[variant], i);
      await drained(sink);
      // Seq ships in the background: its batches' CPU lands in this window for every variant alike.
      await sleep(SEQ_SETTLE_MS);
      const used = process.cpuUsage(before);
      if (sum === 0) throw new Error('unreachable');
      samples[variant].push((used.user + used.system) / REQUESTS);
    }
  }
  sink.end();
  await instruments['metrics + logging + Seq'].logger!.close();
  seq.stop();
  if (dropped > 0) console.log(`   (Seq dropped ${dropped} events: its buffer was full)`);
  return samples;
}

async function scrapeTimes(url: string, path: string, headers: Record<string, string>): Promise<{ times: number[]; bytes: number }> {
  const times: number[] = [];
  let bytes = 0;
  for (let i = 0; i < SCRAPES + 3; i += 1) {
    const started = performance.now();
    const response = await fetch(`${url}${path}`, { headers });
    const body = await response.text();
    const elapsed = performance.now() - started;
    if (response.status !== 200) throw new Error(`${path} answered ${response.status}: ${body.slice(0, 200)}`);
    bytes = body.length;
    if (i >= 3) times.push(elapsed); // the first three warm the path up
    await sleep(20);
  }
  return { times, bytes };
}

async function main(): Promise<void> {
  console.log('Observability benchmark (issue 7)');
  console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, Node ${process.version}`);
  let failed = false;

  if (ONLY !== 'scrape') {
    console.log(`\n1. CPU per request of metrics and logging (${ROUNDS} rounds × ${REQUESTS} requests, alternating; median per variant)`);
    const samples = await cpuPerRequest();
    const base = median(samples.baseline);
    for (const [variant, values] of Object.entries(samples)) {
      const m = median(values);
      const extra = variant === 'baseline' ? '' : `  → +${(m - base).toFixed(1)} µs over the baseline`;
      console.log(`   ${variant.padEnd(24)} ${m.toFixed(1)} µs/request (min ${Math.min(...values).toFixed(1)}, max ${Math.max(...values).toFixed(1)})${extra}`);
    }
    for (const variant of ['metrics + logging', 'metrics + logging + Seq'] as const) {
      const cost = median(samples[variant]) - base;
      const pass = cost <= BUDGET_CPU_US;
      failed ||= !pass;
      console.log(`   ${variant}: ${cost.toFixed(1)} µs of CPU per request; budget ${BUDGET_CPU_US} µs → ${pass ? 'PASS' : 'FAIL'}`);
    }
  }

  if (ONLY !== 'cpu') {
    console.log(`\n2. /metrics of a gateway with ${WORKERS} real Python workers (${SCRAPES} sequential scrapes after 3 warm-up ones)`);
    const gateway = await startGateway('observability', await demoModels(), { WORKER_COUNT: String(WORKERS) });
    try {
      const alice = bearer('alice');
      // Every worker serves once, so its series exist; wait until all serve.
      for (let i = 0; ; i += 1) {
        const health = await gateway.detailed();
        const serving = health.workers.filter((w) => w.state === 'serving').length;
        if (serving === WORKERS) break;
        if (i > 600) throw new Error(`only ${serving} of ${WORKERS} workers serving after 60 s`);
        await sleep(100);
      }
      for (let i = 0; i < WORKERS * 2; i += 1) {
        const response = await fetch(`${gateway.url}/api/device/list`, { headers: alice });
        await response.arrayBuffer();
      }
      const own = await scrapeTimes(gateway.url, '/metrics', {});
      const relayed = await scrapeTimes(gateway.url, '/metrics/workers/worker-0', {});
      const line = (what: string, r: { times: number[]; bytes: number }) =>
        `   ${what.padEnd(28)} median ${median(r.times).toFixed(1)} ms, p95 ${percentile(r.times, 95).toFixed(1)} ms, max ${Math.max(...r.times).toFixed(1)} ms, ${(r.bytes / 1024).toFixed(1)} KiB`;
      console.log(line('/metrics (gateway)', own));
      console.log(line('/metrics/workers/worker-0', relayed));
      const pass = median(own.times) < BUDGET_SCRAPE_MS;
      failed ||= !pass;
      console.log(`   /metrics with ${WORKERS} workers: median ${median(own.times).toFixed(1)} ms; budget < ${BUDGET_SCRAPE_MS} ms → ${pass ? 'PASS' : 'FAIL'}`);
    } finally {
      await gateway.stop();
    }
  }
  process.exitCode = failed ? 1 : 0;
}

await main();
