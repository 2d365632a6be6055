/**
 * Gateway benchmark: the costs the gateway adds, measured side by side in one
 * run on this machine, each printed next to its target.
 *
 *   npm run bench            (from the repository root; builds first)
 *
 * 1. CPU per relayed request: authenticated GET /api/device/list (JWT,
 *    validation, logging, one ListDevices call to a worker), gateway process
 *    CPU time ÷ requests. Target ≤ 300 µs, and ≤ 1.3× the floor of section 9.
 * 2. SSE relay at 50 streams × 100 events/s: each event's delivery latency
 *    through the gateway (worker → gRPC → gateway → SSE → client) minus the
 *    same read directly from the worker's gRPC stream, p50 and p99; and gateway
 *    CPU per relayed event. Targets ≤ 0.3 ms p50 added, ≤ 50 µs CPU per event.
 * 3. 1,000 concurrent SSE streams held open: gateway resident memory, and
 *    again after they closed. Targets < 250 MB, back within 10 % of idle.
 * 4. Authentication + rate limiting: CPU per request of GET /api/auth/whoami
 *    (per-client limit, authentication, per-principal limit, a tiny JSON
 *    answer) with a JWT and with an API key, minus GET /health (per-client
 *    limit only, same size of work otherwise). Target ≤ 100 µs; an API key
 *    ≤ 20 µs dearer than a JWT; public /health itself ≤ 100 µs.
 * 5. Gateway against direct gRPC: the same rpc (ListDevices) called directly
 *    with a grpc-js client and through GET /api/device/list, in alternating
 *    blocks: latency at 1 connection (p50/p99 added; target ≤ 0.4 ms p50) and
 *    throughput at 50 connections (target: gateway ≥ 45 % of direct).
 * 6. SSE relay again at 200 streams × 100 events/s.
 * 7. Resident memory before and after 100,000 requests (growth < 10 %).
 * 8. The gateway's own gRPC API against direct gRPC: ListDevices directly on
 *    the worker and through the gateway's DeviceOperations/ListDevices (the
 *    same authentication, limits and validation as REST), side by side:
 *    gateway CPU per call at 50 concurrent calls (target ≤ 150 µs), added p50
 *    at 1 connection (≤ 0.25 ms), throughput at 50 concurrent calls (≥ 60 % of
 *    direct); and ExecuteStream relaying 50 streams × 100 events/s: gateway
 *    CPU per event (≤ 20 µs).
 * 9. Layer ablation (ablation.ts): the request of section 1 with each layer
 *    removed in turn (every variant a real gateway, all in one process:
 *    ablation-server.ts), each layer's CPU and what remains; and the floor,
 *    Express 5 + a grpc-js relay with no middleware (floor-server.ts), by
 *    turns in the same rounds. About 4 minutes; BENCH_ABLATION_ROUNDS (5)
 *    trades time for precision. The table goes under the run's table in
 *    RESULTS.md.
 *
 * Every run prepends its table, with the machine and the commit, to
 * gateway/bench/RESULTS.md, and writes var/bench/gateway-bench.json.
 *
 * The worker side is bench/event-source-worker.ts, a gRPC server speaking the
 * real contract that emits events at a set rate and notes when it sent each,
 * so one clock times both paths. The gateway runs as its own process, pinned
 * to core 0 when `taskset` exists; this process (load and event source) to
 * the other cores.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent, get as httpGet } from 'node:http';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import autocannon from 'autocannon';
import * as grpc from '@grpc/grpc-js';
import jwt from 'jsonwebtoken';
import * as protoLoader from '@grpc/proto-loader';
import { protoRoot, repoRoot } from '../src/infra/paths.js';
import { loadProtos } from '../src/infra/grpc/protos.js';
import type { InferEvent__Output } from '../src/generated/device_ops/v1/InferEvent.js';
import { ablationMarkdown, ablationText, floorRatio, layerAblation, type AblationLauncher, type AblationResult } from './ablation.js';
import { EventSourceWorker } from './event-source-worker.js';
import { cpuMicros, sleep } from './fault-report-lib.js';

const SECRET = 'bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz';
const TOKEN = jwt.sign({ scope: 'inference' }, SECRET, { algorithm: 'HS256', subject: 'bench', expiresIn: 3600 });
const AUTH = { authorization: `Bearer ${TOKEN}` };
const ADMIN_KEY = 'bench-admin-key-0123456789abcdefghijklmnop';
const canPin = spawnSync('taskset', ['-V']).status === 0 && cpus().length > 1;

interface Gateway {
  child: ChildProcess;
  url: string;
  /** host:port of its public gRPC API. */
  grpcAddress: string;
  pid: number;
}

function rssBytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'))!;
  return Number(line.split(/\s+/)[1]) * 1024;
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

/** The gateway's environment: every limit and bound out of reach, so its cost is measured and it never refuses. */
function gatewayEnv(workerAddress: string): NodeJS.ProcessEnv {
  const dataDirectory = mkdtempSync(join(tmpdir(), 'gateway-bench-'));
  return {
    PATH: process.env.PATH,
    PORT: '0',
    GRPC_PORT: '0',
    HOST: '127.0.0.1',
    JWT_SECRET: SECRET,
    WORKER_ADDRESSES: workerAddress,
    DATA_DIRECTORY: dataDirectory,
    OUTPUT_DIRECTORY: dataDirectory,
    LOG_LEVEL: 'info',
    ADMIN_API_KEY: ADMIN_KEY,
    // Limits stay in the path (their cost is measured) but never trigger here.
    RATE_LIMIT_PER_IP: '1000000',
    RATE_LIMIT_PER_PRINCIPAL: '1000000',
    RATE_LIMIT_INFERENCE_PER_PRINCIPAL: '1000000',
    // Capacity bounds too: one principal holds every stream here.
    MAX_INFLIGHT_PER_WORKER: '5000',
    MAX_ACTIVE_SESSIONS: '5000',
    MAX_SSE_STREAMS: '5000',
    MAX_SSE_STREAMS_PER_PRINCIPAL: '5000',
  };
}

interface Spawned {
  child: ChildProcess;
  pid: number;
  /** Its "ready" log line. */
  ready: Record<string, unknown>;
}

const local = (value: string) => value.replace('localhost', '127.0.0.1');

/** A Node process on core 0 (when taskset exists), ready once it logs a line with `"<ready>"`. */
async function spawnPinned(nodeArgs: string[], env: NodeJS.ProcessEnv, ready: string): Promise<Spawned> {
  const command = canPin ? 'taskset' : process.execPath;
  const child = spawn(command, canPin ? ['-c', '0', process.execPath, ...nodeArgs] : nodeArgs, { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (text) => {
      if (text.includes(`"${ready}"`)) resolve(JSON.parse(text) as Record<string, unknown>);
    });
    child.once('exit', (code) => reject(new Error(`${nodeArgs.at(-1)} exited with ${code}`)));
  });
  // Keep draining its log so the pipe never blocks it.
  child.stdout!.resume();
  return { child, pid: child.pid!, ready: line };
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

async function startGateway(workerAddress: string): Promise<Gateway> {
  // BENCH_NODE_ARGS, e.g. "--cpu-prof --cpu-prof-dir=var/bench", to profile the gateway.
  const args = [...(process.env.BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? []), join(repoRoot, 'gateway', 'dist', 'server.js')];
  const { child, pid, ready } = await spawnPinned(args, gatewayEnv(workerAddress), 'gateway listening');
  return { child, pid, url: local(ready.url as string), grpcAddress: local(ready.grpcAddress as string) };
}

/**
 * The ablation's processes: every gateway variant (ablation-server.ts) and
 * the floor (floor-server.ts), both through tsx, so that the figures
 * compared with each other are made alike. Each waits idle while others are
 * measured, and V8 cools an idle process down: its memory reducer shrinks
 * the heap, old bytecode is flushed, the young generation shrinks and then
 * grows back over thousands of requests. Measured here: a gateway idle for
 * 40 s spent twice its steady CPU per request over the next 2 s, and two
 * identical gateways, one measured every other second and one every 10 s,
 * differed by 100 µs. So those are off, and the young generation is held at
 * the 16 MB V8 grows it to under load; a gateway with these flags and one
 * without measured the same per request under steady load.
 */
function ablationLauncher(workerAddress: string): AblationLauncher {
  const bench = (file: string) => join(repoRoot, 'gateway', 'bench', file);
  const node = ['--no-memory-reducer', '--no-flush-bytecode', '--min-semi-space-size=16', '--max-semi-space-size=16', '--import', 'tsx'];
  const measured = ({ child, pid }: Spawned, urls: Record<string, string>) => ({ pid, urls, stop: () => stopProcess(child) });
  return {
    gateways: async () => {
      const spawned = await spawnPinned([...node, bench('ablation-server.ts')], gatewayEnv(workerAddress), 'ablation listening');
      const urls = Object.fromEntries(Object.entries(spawned.ready.urls as Record<string, string>).map(([name, url]) => [name, local(url)]));
      return measured(spawned, urls);
    },
    floor: async () => {
      const spawned = await spawnPinned([...node, bench('floor-server.ts')], { PATH: process.env.PATH, WORKER_ADDRESS: workerAddress }, 'floor listening');
      return measured(spawned, { floor: spawned.ready.url as string });
    },
  };
}

const ABLATION_ROUNDS = Number(process.env.BENCH_ABLATION_ROUNDS ?? 5);

/** Gateway CPU per request of one route under load (10 connections, 6 s after a 2 s warm-up). */
async function cpuPerRequest(gateway: Gateway, path: string, headers: Record<string, string>) {
  await autocannon({ url: `${gateway.url}${path}`, headers, connections: 10, duration: 2 });
  const before = cpuMicros(gateway.pid);
  const result = await autocannon({ url: `${gateway.url}${path}`, headers, connections: 10, duration: 6 });
  if (result.non2xx > 0) throw new Error(`${path}: ${result.non2xx} non-2xx responses`);
  return (cpuMicros(gateway.pid) - before) / result['2xx'];
}

async function authCost(gateway: Gateway) {
  const created = await fetch(`${gateway.url}/api/admin/keys`, {
    method: 'POST',
    headers: { 'x-api-key': ADMIN_KEY, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'bench', scopes: ['inference'] }),
  });
  const { key } = (await created.json()) as { key: string };
  const baseline = await cpuPerRequest(gateway, '/health', {});
  const jwtCost = await cpuPerRequest(gateway, '/api/auth/whoami', AUTH);
  const apiKeyCost = await cpuPerRequest(gateway, '/api/auth/whoami', { 'x-api-key': key });
  return { publicMicros: baseline, jwtMicros: jwtCost, apiKeyMicros: apiKeyCost, jwtAddedMicros: jwtCost - baseline, apiKeyAddedMicros: apiKeyCost - baseline };
}

async function requestCost(gateway: Gateway) {
  // Warm up JIT, connections and caches.
  await autocannon({ url: `${gateway.url}/api/device/list`, headers: AUTH, connections: 10, duration: 3 });
  const before = cpuMicros(gateway.pid);
  const result = await autocannon({ url: `${gateway.url}/api/device/list`, headers: AUTH, connections: 10, duration: 10 });
  const cpu = cpuMicros(gateway.pid) - before;
  const ok = result['2xx'];
  if (result.non2xx > 0) throw new Error(`${result.non2xx} non-2xx responses`);
  return { requests: ok, cpuMicrosPerRequest: cpu / ok, requestsPerSecond: result.requests.average, p50Ms: result.latency.p50, p99Ms: result.latency.p99 };
}

/** Latencies (ms) of an SSE run: every progress event's, and those after each stream's first `warmup` events (its opening burst). */
interface Latencies {
  all: number[];
  steady: number[];
}

const latencies = (): Latencies => ({ all: [], steady: [] });
function record(into: Latencies, sequence: number, warmup: number, ms: number): void {
  into.all.push(ms);
  if (sequence > warmup) into.steady.push(ms);
}

/** Latencies (ms) of progress events read directly from the worker over gRPC. */
async function directLatencies(source: EventSourceWorker, address: string, streams: number, warmup: number): Promise<Latencies> {
  const protos = loadProtos();
  const client = new protos.device_ops.v1.WorkerService(address, grpc.credentials.createInsecure());
  const seen = latencies();
  await Promise.all(
    Array.from({ length: streams }, (_, i) =>
      new Promise<void>((resolve, reject) => {
        const jobId = `direct-${i}`;
        const call = client.infer({ jobId, model: 'bench-model', task: 'MODEL_TASK_TEXT_TO_IMAGE' });
        call.on('data', (event: InferEvent__Output) => {
          if (event.event === 'progress') record(seen, event.sequence, warmup, performance.now() - source.sentAt.get(`${jobId}#${event.sequence}`)!);
        });
        call.on('end', resolve);
        call.on('error', reject);
      }),
    ),
  );
  client.close();
  return seen;
}

/** POST /api/inference/execute as an event stream of the event source's job; throws unless it answers 200. */
async function executeStream(gateway: Gateway, prompt: string, signal?: AbortSignal): Promise<Response> {
  const response = await fetch(`${gateway.url}/api/inference/execute`, {
    method: 'POST',
    headers: { ...AUTH, 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify({ task: 'text-to-image', model: 'bench-model', parameters: { prompt } }),
    ...(signal ? { signal } : {}),
  });
  if (response.status !== 200) throw new Error(`execute answered ${response.status}: ${await response.text()}`);
  return response;
}

/** Latencies (ms) of the same events relayed by the gateway as SSE; also how many arrived. */
async function relayedLatencies(source: EventSourceWorker, gateway: Gateway, streams: number, warmup: number): Promise<Latencies> {
  const seen = latencies();
  await Promise.all(
    Array.from({ length: streams }, async () => {
      const response = await executeStream(gateway, 'bench');
      const decoder = new TextDecoder();
      let buffer = '';
      let sessionId = '';
      for await (const chunk of response.body!) {
        buffer += decoder.decode(chunk as Uint8Array, { stream: true });
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const id = /^id: (\d+)$/m.exec(frame)?.[1];
          const type = /^event: (\w+)$/m.exec(frame)?.[1];
          if (type === 'accepted') sessionId = (JSON.parse(/^data: (.*)$/m.exec(frame)![1]!) as { sessionId: string }).sessionId;
          if (type === 'progress' && id) record(seen, Number(id), warmup, performance.now() - source.sentAt.get(`${sessionId}#${id}`)!);
        }
      }
    }),
  );
  return seen;
}

/** p50/p99 of a direct path and the same through the gateway (both sorted, ms), and what the gateway adds. */
function addedLatency<N extends 'relayed' | 'gateway'>(direct: number[], through: number[], name: N) {
  type Figures = Record<'directP50Ms' | 'directP99Ms' | `${N}P50Ms` | `${N}P99Ms` | 'addedP50Ms' | 'addedP99Ms', number>;
  return {
    directP50Ms: percentile(direct, 50),
    directP99Ms: percentile(direct, 99),
    [`${name}P50Ms`]: percentile(through, 50),
    [`${name}P99Ms`]: percentile(through, 99),
    addedP50Ms: percentile(through, 50) - percentile(direct, 50),
    addedP99Ms: percentile(through, 99) - percentile(direct, 99),
  } as Figures;
}

/** The gateway's event-loop delay since the last scrape (prom-client resets it on each), in ms. */
async function eventLoopDelay(gateway: Gateway): Promise<{ p99Ms: number; maxMs: number }> {
  const text = await (await fetch(`${gateway.url}/metrics`, { headers: { 'x-api-key': ADMIN_KEY } })).text();
  const value = (name: string) => Number(new RegExp(`^device_ops_gateway_nodejs_eventloop_lag_${name}_seconds (\\S+)$`, 'm').exec(text)?.[1] ?? NaN) * 1000;
  return { p99Ms: value('p99'), maxMs: value('max') };
}

async function sseRelay(source: EventSourceWorker, gateway: Gateway, address: string, streams: number, perSecond: number, seconds: number) {
  source.options = { events: perSecond * seconds, intervalMs: 1000 / perSecond };
  const warmup = perSecond; // each stream's first second
  const direct = await directLatencies(source, address, streams, warmup);
  await eventLoopDelay(gateway); // from here
  const before = cpuMicros(gateway.pid);
  const relayed = await relayedLatencies(source, gateway, streams, warmup);
  const cpu = cpuMicros(gateway.pid) - before;
  const loop = await eventLoopDelay(gateway);
  for (const list of [direct.all, direct.steady, relayed.all, relayed.steady]) list.sort((a, b) => a - b);
  const expected = streams * perSecond * seconds;
  return {
    streams,
    eventsPerSecondPerStream: perSecond,
    eventsRelayed: relayed.all.length,
    eventsExpected: expected,
    ...addedLatency(direct.all, relayed.all, 'relayed'),
    // The same after each stream's first second: what the opening burst of streams adds to the tail.
    steadyAddedP99Ms: percentile(relayed.steady, 99) - percentile(direct.steady, 99),
    // Where a tail can come from inside the gateway: its event loop held up.
    eventLoopDelayP99Ms: loop.p99Ms,
    eventLoopDelayMaxMs: loop.maxMs,
    gatewayCpuMicrosPerEvent: cpu / relayed.all.length,
  };
}

async function heldStreams(source: EventSourceWorker, gateway: Gateway, count: number) {
  await sleep(2000);
  const idle = rssBytes(gateway.pid);
  source.options = { events: 120, intervalMs: 1000 };
  const controllers = Array.from({ length: count }, () => new AbortController());
  let started = 0;
  const readers = controllers.map(async (controller) => {
    try {
      const response = await executeStream(gateway, 'held', controller.signal);
      let counted = false;
      for await (const chunk of response.body!) {
        if (!counted && new TextDecoder().decode(chunk as Uint8Array).includes('event: started')) {
          counted = true;
          started += 1;
        }
      }
    } catch (error) {
      if (!controller.signal.aborted) throw error; // else aborted by us
    }
  });
  const deadline = Date.now() + 120_000;
  while (started < count && Date.now() < deadline) await sleep(250);
  await sleep(3000);
  const open = rssBytes(gateway.pid);
  for (const controller of controllers) controller.abort();
  await Promise.all(readers);
  await sleep(10_000);
  const after = rssBytes(gateway.pid);
  return { streams: count, opened: started, idleRssBytes: idle, openRssBytes: open, afterRssBytes: after, afterVsIdle: after / idle - 1 };
}

/** Run `call` one at a time `count` times, pushing each latency (ms) into `into`. */
async function timed(call: () => Promise<void>, count: number, into: number[]): Promise<void> {
  for (let i = 0; i < count; i += 1) {
    const started = performance.now();
    await call();
    into.push(performance.now() - started);
  }
}

/** Calls completed in `seconds` with `inFlight` of them in flight at once. */
async function concurrently(call: () => Promise<void>, inFlight: number, seconds: number): Promise<number> {
  let done = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() < end) {
        await call();
        done += 1;
      }
    }),
  );
  return done;
}

/** The same rpc directly (grpc-js) and through the gateway's REST route: latency at 1 connection, throughput at 50. */
async function againstDirect(gateway: Gateway, address: string) {
  const protos = loadProtos();
  const client = new protos.device_ops.v1.WorkerService(address, grpc.credentials.createInsecure());
  const direct = () =>
    new Promise<void>((resolve, reject) => {
      client.listDevices({}, { deadline: Date.now() + 10_000 }, (error: grpc.ServiceError | null) => (error ? reject(error) : resolve()));
    });
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const viaGateway = () =>
    new Promise<void>((resolve, reject) => {
      const request = httpGet(`${gateway.url}/api/device/list`, { agent, headers: AUTH }, (response) => {
        response.resume();
        response.on('end', () => (response.statusCode === 200 ? resolve() : reject(new Error(`gateway answered ${response.statusCode}`))));
      });
      request.on('error', reject);
    });
  await timed(direct, 1000, []);
  await timed(viaGateway, 1000, []);
  const directMs: number[] = [];
  const gatewayMs: number[] = [];
  // Alternating blocks: drift on this machine hits both paths alike.
  for (let block = 0; block < 10; block += 1) {
    await timed(direct, 300, directMs);
    await timed(viaGateway, 300, gatewayMs);
  }
  directMs.sort((a, b) => a - b);
  gatewayMs.sort((a, b) => a - b);
  const directRps: number[] = [];
  const gatewayRps: number[] = [];
  for (let round = 0; round < 2; round += 1) {
    directRps.push((await concurrently(direct, 50, 4)) / 4);
    gatewayRps.push((await concurrently(viaGateway, 50, 4)) / 4);
  }
  client.close();
  agent.destroy();
  const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  return {
    ...addedLatency(directMs, gatewayMs, 'gateway'),
    directRequestsPerSecond: mean(directRps),
    gatewayRequestsPerSecond: mean(gatewayRps),
    throughputRatio: mean(gatewayRps) / mean(directRps),
  };
}

/** A client of the gateway's public gRPC API, with stubs from proto/ as an internal service builds them. */
function gatewayGrpcClient(address: string) {
  const definition = protoLoader.loadSync(join(protoRoot, 'device_ops/gateway/v1/gateway_service.proto'), {
    keepCase: false,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [protoRoot],
  });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as { device_ops: { gateway: { v1: { DeviceOperations: grpc.ServiceClientConstructor } } } };
  return new loaded.device_ops.gateway.v1.DeviceOperations(address, grpc.credentials.createInsecure()) as grpc.Client & Record<string, any>;
}

/** ListDevices directly on the worker and through the gateway's gRPC API: CPU, latency at 1 call in flight, throughput at 50; then the streaming relay. */
async function grpcFront(source: EventSourceWorker, gateway: Gateway, address: string) {
  const protos = loadProtos();
  const worker = new protos.device_ops.v1.WorkerService(address, grpc.credentials.createInsecure());
  const front = gatewayGrpcClient(gateway.grpcAddress);
  const metadata = new grpc.Metadata();
  metadata.set('authorization', AUTH.authorization);
  const direct = () =>
    new Promise<void>((resolve, reject) => {
      worker.listDevices({}, { deadline: Date.now() + 10_000 }, (error: grpc.ServiceError | null) => (error ? reject(error) : resolve()));
    });
  const viaGateway = () =>
    new Promise<void>((resolve, reject) => {
      front.listDevices({}, metadata, { deadline: Date.now() + 10_000 }, (error: grpc.ServiceError | null) => (error ? reject(error) : resolve()));
    });
  await timed(direct, 1000, []);
  await timed(viaGateway, 1000, []);
  const directMs: number[] = [];
  const gatewayMs: number[] = [];
  for (let block = 0; block < 10; block += 1) {
    await timed(direct, 300, directMs);
    await timed(viaGateway, 300, gatewayMs);
  }
  directMs.sort((a, b) => a - b);
  gatewayMs.sort((a, b) => a - b);
  const directRps: number[] = [];
  const gatewayRps: number[] = [];
  let cpu = 0;
  let calls = 0;
  for (let round = 0; round < 2; round += 1) {
    directRps.push((await concurrently(direct, 50, 4)) / 4);
    const before = cpuMicros(gateway.pid);
    const done = await concurrently(viaGateway, 50, 4);
    cpu += cpuMicros(gateway.pid) - before;
    calls += done;
    gatewayRps.push(done / 4);
  }
  // The floor of both legs: a grpc-js server with no logic relaying ListDevices (grpc-floor-server.ts), pinned alike.
  const floor = await spawnPinned(['--import', 'tsx', join(repoRoot, 'gateway', 'bench', 'grpc-floor-server.ts')], { PATH: process.env.PATH, WORKER_ADDRESS: address }, 'grpc floor listening');
  const relay = new protos.device_ops.v1.WorkerService(local(floor.ready.address as string), grpc.credentials.createInsecure());
  const viaFloor = () =>
    new Promise<void>((resolve, reject) => {
      relay.listDevices({}, { deadline: Date.now() + 10_000 }, (error: grpc.ServiceError | null) => (error ? reject(error) : resolve()));
    });
  await concurrently(viaFloor, 50, 2);
  const floorBefore = cpuMicros(floor.pid);
  const floorCalls = await concurrently(viaFloor, 50, 4);
  const floorCpuMicrosPerCall = (cpuMicros(floor.pid) - floorBefore) / floorCalls;
  relay.close();
  await stopProcess(floor.child);
  worker.close();
  // The front alone: WhoAmI runs the same chain (limits, authentication, logging, metrics) with no worker call.
  const whoAmI = () =>
    new Promise<void>((resolve, reject) => {
      front.whoAmI({}, metadata, { deadline: Date.now() + 10_000 }, (error: grpc.ServiceError | null) => (error ? reject(error) : resolve()));
    });
  const whoBefore = cpuMicros(gateway.pid);
  const whoCalls = await concurrently(whoAmI, 50, 4);
  const whoAmICpuMicrosPerCall = (cpuMicros(gateway.pid) - whoBefore) / whoCalls;

  // ExecuteStream: 50 streams × 100 events/s for 5 s, relayed as SessionEvent messages.
  source.options = { events: 500, intervalMs: 10 };
  const before = cpuMicros(gateway.pid);
  const counts = await Promise.all(
    Array.from({ length: 50 }, () =>
      new Promise<number>((resolve, reject) => {
        let events = 0;
        const call = front.executeStream({ model: 'bench-model', textToImage: { prompt: 'bench' } }, metadata);
        call.on('data', (event: { type: string }) => {
          if (event.type === 'progress') events += 1;
        });
        call.on('end', () => resolve(events));
        call.on('error', reject);
      }),
    ),
  );
  const streamCpu = cpuMicros(gateway.pid) - before;
  const events = counts.reduce((a, b) => a + b, 0);
  front.close();
  const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  return {
    ...addedLatency(directMs, gatewayMs, 'gateway'),
    gatewayCpuMicrosPerCall: cpu / calls,
    floorCpuMicrosPerCall,
    whoAmICpuMicrosPerCall,
    directCallsPerSecond: mean(directRps),
    gatewayCallsPerSecond: mean(gatewayRps),
    throughputRatio: mean(gatewayRps) / mean(directRps),
    streamEventsRelayed: events,
    streamEventsExpected: 50 * 500,
    streamCpuMicrosPerEvent: streamCpu / events,
  };
}

/** Resident memory before and after a long run of requests. */
async function growthAfterRequests(gateway: Gateway, count: number) {
  const url = `${gateway.url}/api/device/list`;
  await autocannon({ url, headers: AUTH, connections: 10, amount: 5000 });
  await sleep(3000);
  const before = rssBytes(gateway.pid);
  const result = await autocannon({ url, headers: AUTH, connections: 50, amount: count, timeout: 30 });
  await sleep(10_000);
  const after = rssBytes(gateway.pid);
  return { requests: result['2xx'], failed: result.non2xx + result.errors, beforeRssBytes: before, afterRssBytes: after, growth: after / before - 1 };
}

/** The commit the figures belong to (with "+changes" when the tree differs from it). */
function commitOf(): string {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: repoRoot, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${sha}+changes` : sha;
  } catch {
    return 'unknown';
  }
}

const RESULTS_HEADER = `# Gateway benchmark results

Written by \`npm run bench\` (gateway/bench/gateway-bench.ts): newest run first,
each with its machine and commit. Every figure is measured side by side in
that run; compare runs only on the same machine.
`;

type Row = [name: string, value: string, target: string, pass: boolean];

/** Prepend this run's table, and the ablation's under it, to gateway/bench/RESULTS.md; `part` names a partial run (BENCH_ONLY). */
function recordResults(rows: Row[], machine: string, ablation: AblationResult | null, part?: string): string {
  const file = join(repoRoot, 'gateway', 'bench', 'RESULTS.md');
  const previous = existsSync(file) ? readFileSync(file, 'utf8').replace(RESULTS_HEADER, '').trimStart() : '';
  const table = [
    `## ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC — commit ${commitOf()}${part ? ` — ${part} only (BENCH_ONLY=${part})` : ''}`,
    '',
    machine,
    '',
    '| measure | value | target | verdict |',
    '| --- | --- | --- | --- |',
    ...rows.map(([name, value, target, pass]) => `| ${name.trim()} | ${value} | ${target} | ${target ? (pass ? 'PASS' : 'FAIL') : ''} |`),
    '',
    ...(ablation ? [ablationMarkdown(ablation), ''] : []),
  ].join('\n');
  writeFileSync(file, `${RESULTS_HEADER}\n${table}\n${previous}`);
  return file;
}

const only = process.env.BENCH_ONLY; // "request", "sse", "memory", "auth", "direct", "sse200", "growth", "grpc" or "ablation": run one part
const GROWTH_REQUESTS = Number(process.env.BENCH_GROWTH_REQUESTS ?? 100_000);

const machine = `${cpus()[0]?.model} ×${cpus().length}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, node ${process.version}, gateway pinned to one core: ${canPin}`;

/** The target row the ablation answers for: the gateway against the floor, measured in the same rounds. */
function floorRow(ablation: AblationResult): Row {
  const ratio = floorRatio(ablation);
  return [
    'gateway CPU per relayed request ÷ Express + relay floor',
    `${ratio.toFixed(2)}× (${ablation.allMicros.toFixed(0)} / ${ablation.floorMicros.toFixed(0)} µs)`,
    '≤ 1.3×',
    ratio <= 1.3,
  ];
}

function printRows(rows: Row[]): void {
  for (const [name, value, target, pass] of rows) {
    console.log(`${name.padEnd(48)}${value.padStart(24)}  ${target.padEnd(8)}${target ? (pass ? 'PASS' : 'FAIL') : ''}`);
  }
}

/** BENCH_ONLY=ablation: the ablation alone, printed and recorded. */
async function ablationOnly(address: string): Promise<void> {
  const ablation = await layerAblation(ablationLauncher(address), AUTH, { rounds: ABLATION_ROUNDS });
  console.log(`gateway benchmark, layer ablation — ${machine}`);
  console.log(ablationText(ablation));
  const rows = [floorRow(ablation)];
  printRows(rows);
  const out = join(repoRoot, 'var', 'bench');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'gateway-bench-ablation.json'), JSON.stringify({ machine, commit: commitOf(), ablation }, null, 2));
  const recorded = recordResults(rows, machine, ablation, 'ablation');
  console.log(`figures written to ${join('var', 'bench', 'gateway-bench-ablation.json')} and ${recorded.replace(`${repoRoot}/`, '')}`);
}

async function main(): Promise<void> {
  if (canPin) spawnSync('taskset', ['-apc', cpus().length > 2 ? `1-${cpus().length - 1}` : '1', String(process.pid)]);
  const source = new EventSourceWorker();
  const address = await source.start();
  if (only === 'ablation') {
    try {
      await ablationOnly(address);
    } finally {
      await source.stop();
    }
    return;
  }
  const gateway = await startGateway(address);
  try {
    if (only) {
      const parts: Record<string, () => Promise<unknown>> = {
        request: () => requestCost(gateway),
        sse: () => sseRelay(source, gateway, address, 50, 100, 10),
        memory: () => heldStreams(source, gateway, 1000),
        auth: () => authCost(gateway),
        direct: () => againstDirect(gateway, address),
        sse200: () => sseRelay(source, gateway, address, 200, 100, 10),
        growth: () => growthAfterRequests(gateway, GROWTH_REQUESTS),
        grpc: () => grpcFront(source, gateway, address),
      };
      const part = await parts[only]!();
      console.log(JSON.stringify(part, null, 2));
      return;
    }
    const request = await requestCost(gateway);
    const auth = await authCost(gateway);
    const direct = await againstDirect(gateway, address);
    // Memory before the SSE runs, so "idle" is close to idle.
    const memory = await heldStreams(source, gateway, 1000);
    const sse = await sseRelay(source, gateway, address, 50, 100, 10);
    const sse200 = await sseRelay(source, gateway, address, 200, 100, 10);
    const growth = await growthAfterRequests(gateway, GROWTH_REQUESTS);
    const front = await grpcFront(source, gateway, address);
    const ablation = await layerAblation(ablationLauncher(address), AUTH, { rounds: ABLATION_ROUNDS });
    const mb = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;
    const rows: Row[] = [
      ['gateway CPU per relayed request (µs)', request.cpuMicrosPerRequest.toFixed(0), '≤ 300', request.cpuMicrosPerRequest <= 300],
      floorRow(ablation),
      ['  requests/s at 10 connections, p50 / p99 ms', `${request.requestsPerSecond.toFixed(0)}, ${request.p50Ms} / ${request.p99Ms}`, '', true],
      ['auth + rate limits, JWT (µs CPU per request)', auth.jwtAddedMicros.toFixed(0), '≤ 100', auth.jwtAddedMicros <= 100],
      ['auth + rate limits, API key (µs CPU per request)', auth.apiKeyAddedMicros.toFixed(0), '≤ 100', auth.apiKeyAddedMicros <= 100],
      ['API-key auth over JWT auth (µs CPU per request)', (auth.apiKeyMicros - auth.jwtMicros).toFixed(0), '≤ +20', auth.apiKeyMicros - auth.jwtMicros <= 20],
      ['public /health (µs CPU per request)', auth.publicMicros.toFixed(0), '≤ 100', auth.publicMicros <= 100],
      ['  public /health, whoami JWT, whoami key (µs)', `${auth.publicMicros.toFixed(0)}, ${auth.jwtMicros.toFixed(0)}, ${auth.apiKeyMicros.toFixed(0)}`, '', true],
      ['added latency at 1 connection, p50 (ms)', direct.addedP50Ms.toFixed(3), '≤ 0.4', direct.addedP50Ms <= 0.4],
      ['  p99 added; direct p50 / gateway p50 (ms)', `${direct.addedP99Ms.toFixed(3)}; ${direct.directP50Ms.toFixed(3)} / ${direct.gatewayP50Ms.toFixed(3)}`, '', true],
      ['throughput at 50 connections, gateway / direct', `${(direct.throughputRatio * 100).toFixed(0)} %`, '≥ 45 %', direct.throughputRatio >= 0.45],
      ['  requests/s gateway, direct', `${direct.gatewayRequestsPerSecond.toFixed(0)}, ${direct.directRequestsPerSecond.toFixed(0)}`, '', true],
      ['SSE 50×100/s: events relayed / expected', `${sse.eventsRelayed} / ${sse.eventsExpected}`, 'all', sse.eventsRelayed === sse.eventsExpected],
      ['SSE added latency p50 (ms)', sse.addedP50Ms.toFixed(3), '≤ 0.3', sse.addedP50Ms <= 0.3],
      ['SSE added latency p99 (ms)', sse.addedP99Ms.toFixed(3), '≤ 2', sse.addedP99Ms <= 2],
      ['SSE added p99 after each stream\'s first second (ms)', sse.steadyAddedP99Ms.toFixed(3), '', true],
      ['SSE run: gateway event-loop delay p99 / max (ms)', `${sse.eventLoopDelayP99Ms.toFixed(1)} / ${sse.eventLoopDelayMaxMs.toFixed(1)}`, '', true],
      ['SSE gateway CPU per event (µs)', sse.gatewayCpuMicrosPerEvent.toFixed(1), '≤ 50', sse.gatewayCpuMicrosPerEvent <= 50],
      ['SSE 200×100/s: events relayed / expected', `${sse200.eventsRelayed} / ${sse200.eventsExpected}`, 'all', sse200.eventsRelayed === sse200.eventsExpected],
      ['SSE 200×100/s added latency p50 / p99 (ms)', `${sse200.addedP50Ms.toFixed(3)} / ${sse200.addedP99Ms.toFixed(3)}`, '', true],
      ['SSE 200×100/s gateway CPU per event (µs)', sse200.gatewayCpuMicrosPerEvent.toFixed(1), '', true],
      ['RSS idle (MB)', String(mb(memory.idleRssBytes)), '', true],
      [`RSS with ${memory.opened} SSE streams open (MB)`, String(mb(memory.openRssBytes)), '< 250', memory.openRssBytes < 250 * 2 ** 20 && memory.opened === 1000],
      ['RSS 10 s after they closed (MB)', `${mb(memory.afterRssBytes)} (${(memory.afterVsIdle * 100).toFixed(1)} % vs idle)`, '≤ +10 %', memory.afterVsIdle <= 0.1],
      [
        `RSS before / after ${growth.requests} requests (MB)`,
        `${mb(growth.beforeRssBytes)} / ${mb(growth.afterRssBytes)} (${(growth.growth * 100).toFixed(1)} %)`,
        '< +10 %',
        growth.growth < 0.1 && growth.failed === 0,
      ],
      ['gRPC API: gateway CPU per ListDevices call (µs)', front.gatewayCpuMicrosPerCall.toFixed(0), '≤ 150', front.gatewayCpuMicrosPerCall <= 150],
      ['  floor: grpc-js relay with no logic, same rpc (µs)', front.floorCpuMicrosPerCall.toFixed(0), '', true],
      ['  WhoAmI (the front alone, no worker call) (µs)', front.whoAmICpuMicrosPerCall.toFixed(0), '', true],
      ['gRPC API: added latency at 1 call, p50 (ms)', front.addedP50Ms.toFixed(3), '≤ 0.25', front.addedP50Ms <= 0.25],
      ['  p99 added; direct p50 / gateway p50 (ms)', `${front.addedP99Ms.toFixed(3)}; ${front.directP50Ms.toFixed(3)} / ${front.gatewayP50Ms.toFixed(3)}`, '', true],
      ['gRPC API: throughput at 50 calls, gateway / direct', `${(front.throughputRatio * 100).toFixed(0)} %`, '≥ 60 %', front.throughputRatio >= 0.6],
      ['  calls/s gateway, direct', `${front.gatewayCallsPerSecond.toFixed(0)}, ${front.directCallsPerSecond.toFixed(0)}`, '', true],
      ['gRPC ExecuteStream 50×100/s: events relayed / expected', `${front.streamEventsRelayed} / ${front.streamEventsExpected}`, 'all', front.streamEventsRelayed === front.streamEventsExpected],
      ['gRPC ExecuteStream: gateway CPU per event (µs)', front.streamCpuMicrosPerEvent.toFixed(1), '≤ 20', front.streamCpuMicrosPerEvent <= 20],
    ];
    console.log(`gateway benchmark — ${machine}`);
    printRows(rows);
    console.log(ablationText(ablation));
    const results = { machine: { cpu: cpus()[0]?.model, cores: cpus().length, node: process.version, pinned: canPin }, commit: commitOf(), request, auth, direct, sse, sse200, memory, growth, grpcFront: front, ablation };
    const out = join(repoRoot, 'var', 'bench');
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'gateway-bench.json'), JSON.stringify(results, null, 2));
    const recorded = recordResults(rows, machine, ablation);
    console.log(`figures written to ${join('var', 'bench', 'gateway-bench.json')} and ${recorded.replace(`${repoRoot}/`, '')}`);
  } finally {
    await stopProcess(gateway.child);
    await source.stop();
  }
}

await main();
process.exit(0);
