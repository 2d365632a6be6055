import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { DetailedHealthSchema, type WorkerHealth } from '../../src/features/health/health-schemas.js';
import { SessionSchema, type SessionBody } from '../../src/features/sessions/session-schemas.js';
import { testEnv } from '../helpers/env.js';
import { bearer, getJson } from '../helpers/http.js';
import { startRealGateway, type RealGateway } from '../helpers/real-gateway.js';
import { readSse, type SseEvent } from '../helpers/sse.js';
import { signToken } from '../helpers/tokens.js';
import { waitFor } from '../helpers/wait.js';

export const alice = bearer(signToken({ sub: 'alice', scope: 'inference' }));

/** A text-to-image job of a few seconds on this machine's CPU. */
export const longJob = {
  task: 'text-to-image',
  model: 'tiny-sd',
  parameters: { prompt: 'a slow painting', steps: 80, width: 256, height: 256, seed: 1 },
};

/** A job of a few milliseconds. */
export const quickJob = {
  task: 'tensor',
  model: 'tiny-mlp',
  parameters: { inputs: { x: { dtype: 'float32', shape: [1, 4], data: Buffer.alloc(16).toString('base64') } } },
};

/** The real gateway with real workers on the demo models, its own output and data folders, and generous rate limits. */
export function startFaultGateway(env: Record<string, string> = {}): Promise<RealGateway> {
  return startRealGateway({
    MODEL_DIRECTORY: inject('demoModels'),
    OUTPUT_DIRECTORY: mkdtempSync(join(tmpdir(), 'device-ops-out-')),
    DATA_DIRECTORY: mkdtempSync(join(tmpdir(), 'device-ops-data-')),
    LOG_LEVEL: 'warn',
    RATE_LIMIT_PER_PRINCIPAL: '100000',
    RATE_LIMIT_INFERENCE_PER_PRINCIPAL: '100000',
    RATE_LIMIT_PER_IP: '100000',
    ...env,
  });
}

export async function health(url: string) {
  return DetailedHealthSchema.parse((await getJson(`${url}/health/detailed`)).body);
}

export async function worker(url: string, id: string): Promise<WorkerHealth> {
  return (await health(url)).workers.find((w) => w.id === id)!;
}

export async function waitForWorker(url: string, id: string, predicate: (w: WorkerHealth) => boolean, what: string, timeoutMs = 60_000) {
  return waitFor(async () => {
    const w = await worker(url, id);
    return w && predicate(w) ? w : undefined;
  }, { timeoutMs, what });
}

export async function session(url: string, id: string): Promise<SessionBody> {
  return SessionSchema.parse((await getJson(`${url}/api/inference/sessions/${id}`, alice)).body);
}

export function post(url: string, path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...alice, ...headers },
    body: JSON.stringify(body),
  });
}

export interface OpenStream {
  /** Every event so far, in order. */
  seen: SseEvent[];
  /** When the terminal event (result, error, cancelled) arrived (performance.now()). */
  terminalAt: number | null;
  /** Resolves with every event once the stream ends. */
  done: Promise<SseEvent[]>;
  abort: AbortController;
}

const TERMINAL = new Set(['result', 'error', 'cancelled']);

/** POST /api/inference/execute as an event stream. */
export function openExecuteStream(url: string, job: unknown, headers: Record<string, string> = alice): OpenStream {
  const abort = new AbortController();
  const stream: OpenStream = { seen: [], terminalAt: null, abort, done: Promise.resolve([]) };
  stream.done = fetch(`${url}/api/inference/execute`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...headers },
    body: JSON.stringify(job),
    signal: abort.signal,
  }).then((response) => {
    if (response.status !== 200) throw new Error(`execute answered ${response.status}`);
    return readSse(response, (event) => {
      stream.seen.push(event);
      if (TERMINAL.has(event.event)) stream.terminalAt = performance.now();
      return false;
    });
  });
  return stream;
}

/**
 * A WORKER_PYTHON that runs the real interpreter, except for the worker
 * named `crashingId`, which exits 1 at every start: a worker that cannot
 * come up (bad driver, missing file) without touching the worker's code.
 */
export function crashingPython(crashingId: string): string {
  const real = loadConfig(testEnv()).workerPython;
  const path = join(mkdtempSync(join(tmpdir(), 'device-ops-python-')), 'python');
  writeFileSync(
    path,
    [
      '#!/bin/sh',
      'prev=""',
      'for arg in "$@"; do',
      `  if [ "$prev" = "--worker-id" ] && [ "$arg" = "${crashingId}" ]; then echo "fault injection: ${crashingId} cannot start" >&2; exit 1; fi`,
      '  prev="$arg"',
      'done',
      `exec "${real}" "$@"`,
      '',
    ].join('\n'),
  );
  chmodSync(path, 0o755);
  return path;
}
