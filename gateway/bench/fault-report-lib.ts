/**
 * Helpers of the fault report (fault-report.ts): a real gateway process with
 * real local Python workers, tokens, an SSE reader, /health/detailed, and
 * small statistics. Nothing here is timed; the report does the timing.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import jwt from 'jsonwebtoken';
import { loadConfig, type Config } from '../src/config/config.js';
import { repoRoot, workerSourceRoot } from '../src/infra/paths.js';

export const SECRET = 'fault-report-secret-0123456789-abcdefghijklmnop';

/** The gateway's defaults for everything the report does not set. */
export const DEFAULTS: Config = loadConfig({ JWT_SECRET: SECRET, WORKER_PYTHON: process.env.WORKER_PYTHON });

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function bearer(subject: string): Record<string, string> {
  const token = jwt.sign({ scope: 'inference' }, SECRET, { algorithm: 'HS256', subject, expiresIn: 3600 });
  return { authorization: `Bearer ${token}` };
}

// ------------------------------------------------------------ statistics

export const median = (values: number[]) => percentile(values, 50);

/** Nearest-rank percentile; NaN for no values. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export const ms = (value: number) => (Number.isFinite(value) ? `${Math.round(value)} ms` : 'n/a');
export const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MB`;

const CLOCK_TICK_US = 1e6 / Number(spawnSync('getconf', ['CLK_TCK']).stdout?.toString().trim() || 100);

/** CPU time (user + system, µs) a process used so far, from /proc. */
export function cpuMicros(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * CLOCK_TICK_US;
}

/**
 * Resolves with the ms from `since` (performance.now()) until the process is
 * gone or a zombie with no thread left: the kernel has torn it down and
 * closed its sockets.
 * Polls /proc every millisecond or so; gives up (NaN) after 10 s.
 */
export async function processGone(pid: number, since: number): Promise<number> {
  for (;;) {
    let dead = true;
    try {
      // A zombie leader may still have threads tearing down (the sockets close with the last one).
      const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.charAt(0);
      dead = (state === 'Z' || state === 'X') && readdirSync(`/proc/${pid}/task`).length <= 1;
    } catch {
      // gone and reaped
    }
    const now = performance.now();
    if (dead) return now - since;
    if (now - since > 10_000) return Number.NaN;
    await sleep(1);
  }
}

// ------------------------------------------------------------ demo models

/** var/test-models as the test setup builds it; built the same way when missing. */
export async function demoModels(): Promise<string> {
  const target = join(repoRoot, 'var', 'test-models');
  if (['tiny-sd', 'tiny-mlp'].every((model) => existsSync(join(target, model, 'manifest.json')))) return target;
  console.log(`building the demo models into ${target} …`);
  await promisify(execFile)(DEFAULTS.workerPython, ['-m', 'device_ops_worker_tools.demo_models', '--model-directory', target], {
    env: { ...process.env, PYTHONPATH: workerSourceRoot, HF_HUB_OFFLINE: '1' },
    timeout: 300_000,
  });
  return target;
}

// ------------------------------------------------------------ gateway process

export interface WorkerView {
  id: string;
  state: string;
  healthy: boolean;
  pid: number | null;
  restarts: number;
  lastExit: { at: string; code: number | null; signal: string | null; cause: string } | null;
  nextRestartAt: string | null;
}

export interface DetailedHealth {
  status: string;
  gateway: { pid: number; memory: { rssBytes: number; heapUsedBytes: number } };
  workers: WorkerView[];
}

export interface Gateway {
  url: string;
  pid: number;
  logFile: string;
  child: ChildProcess;
  detailed(): Promise<DetailedHealth>;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
// A report that dies half-way leaves no gateway behind (its workers follow their parent).
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Settings every gateway of the report runs with (printed by the report). */
export const BASE_SETTINGS: Record<string, string> = {
  LOG_LEVEL: 'warn',
  HOST: '127.0.0.1',
  // Limits are raised so 429s never mix with the capacity 503s being measured.
  RATE_LIMIT_PER_IP: '1000000',
  RATE_LIMIT_PER_PRINCIPAL: '1000000',
  RATE_LIMIT_INFERENCE_PER_PRINCIPAL: '1000000',
  INTERNAL_ALLOW_LIST: '127.0.0.0/8,::1',
  SHUTDOWN_GRACE_SECONDS: '2',
};

/**
 * `node gateway/dist/server.js` as its own process (so its memory is its
 * own), with local workers, embedded SQLite and scratch folders; resolves
 * once /health answers, which the gateway does only after its workers served.
 */
export async function startGateway(name: string, modelDirectory: string, settings: Record<string, string>): Promise<Gateway> {
  const scratch = mkdtempSync(join(tmpdir(), `fault-report-${name}-`));
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    ...(process.env.WORKER_PYTHON ? { WORKER_PYTHON: process.env.WORKER_PYTHON } : {}),
    HF_HUB_OFFLINE: '1',
    PORT: String(port),
    // Several gateways side by side: each its own free gRPC port.
    GRPC_PORT: '0',
    JWT_SECRET: SECRET,
    MODEL_DIRECTORY: modelDirectory,
    OUTPUT_DIRECTORY: join(scratch, 'outputs'),
    DATA_DIRECTORY: join(scratch, 'data'),
    CACHE_DIRECTORY: join(scratch, 'cache'),
    ...BASE_SETTINGS,
    ...settings,
  };
  const logFile = join(scratch, 'gateway.log');
  const log = createWriteStream(logFile);
  // FAULTS_NODE_ARGS, e.g. "--cpu-prof --cpu-prof-dir=var/bench", to profile the gateways.
  const nodeArgs = process.env.FAULTS_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const child = spawn(process.execPath, [...nodeArgs, join(repoRoot, 'gateway', 'dist', 'server.js')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  let exitCode: number | null | undefined;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code) => {
      exitCode = code;
      running.delete(child);
      resolve();
    }),
  );
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 180_000;
  for (;;) {
    if (exitCode !== undefined) throw new Error(`gateway ${name} exited with ${exitCode} while starting; see ${logFile}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`gateway ${name} did not answer within 180 s; see ${logFile}`);
    }
    try {
      const response = await fetch(`${url}/health`);
      await response.arrayBuffer();
      if (response.ok) break;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  return {
    url,
    pid: child.pid!,
    logFile,
    child,
    async detailed() {
      const response = await fetch(`${url}/health/detailed`);
      if (response.status !== 200 && response.status !== 503) throw new Error(`/health/detailed answered ${response.status}`);
      return (await response.json()) as DetailedHealth;
    },
    async stop() {
      if (exitCode !== undefined) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

// ------------------------------------------------------------ SSE

export interface SseFrame {
  event: string;
  data: Record<string, unknown>;
  /** performance.now() when the frame was parsed. */
  at: number;
}

export const TERMINAL_EVENTS = new Set(['result', 'error', 'cancelled']);

/** Read an SSE response frame by frame, calling `onFrame` for each; resolves when the stream ends. */
export async function readSse(response: Response, onFrame: (frame: SseFrame) => void): Promise<void> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of response.body!) {
    buffer += decoder.decode(chunk as Uint8Array, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length > 0) onFrame({ event, data: JSON.parse(data.join('\n')) as Record<string, unknown>, at: performance.now() });
    }
  }
}
