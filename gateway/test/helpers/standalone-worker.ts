import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { loadConfig } from '../../src/config/config.js';
import { workerEnvironment } from '../../src/features/workers/local-worker-pool.js';
import { testEnv } from './env.js';

export interface StandaloneWorker {
  child: ChildProcess;
  /** host:port as a gateway's WORKER_ADDRESSES names it. */
  address: string;
  /** Every line it wrote to stdout and stderr. */
  output: string[];
  /** Its Prometheus endpoint, when started with `metrics`. */
  metricsUrl: string | null;
  /** Signal it (SIGTERM by default) and wait for it to exit; safe to call twice. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface StandaloneWorkerOptions {
  id: string;
  /** Holds models/, outputs/ and cache/ unless given below. */
  dir: string;
  modelDirectory?: string;
  outputDirectory?: string;
  /** Extra environment (WORKER_TOKEN, TLS files, engine settings). */
  env?: Record<string, string>;
  /** How the address names the host: by name, as compose and Kubernetes do, or by IP. */
  host?: 'localhost' | '127.0.0.1';
  /** A fixed port (a worker restarted where the gateway expects it); a free one by default. */
  port?: number;
  /** Serve its Prometheus metrics (on a free port). */
  metrics?: boolean;
}

/**
 * A worker started the way a container starts it — `python -m
 * device_ops_worker` with its settings in the environment — that the
 * gateway knows only by its address (WORKER_ADDRESSES).
 */
export async function startStandaloneWorker(options: StandaloneWorkerOptions): Promise<StandaloneWorker> {
  const python = loadConfig(testEnv()).workerPython;
  const args = ['-m', 'device_ops_worker', '--port', String(options.port ?? 0), '--worker-id', options.id, '--ready-fd', '3', '--metrics-port', options.metrics ? '0' : '-1'];
  args.push(
    '--model-directory', options.modelDirectory ?? join(options.dir, 'models'),
    '--output-directory', options.outputDirectory ?? join(options.dir, 'outputs'),
    '--cache-directory', join(options.dir, 'cache'),
  );
  const child = spawn(python, args, {
    env: { ...workerEnvironment(process.env), ...options.env },
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  for (const stream of [child.stdout!, child.stderr!]) createInterface({ input: stream }).on('line', (line) => output.push(line));
  const kill = () => child.kill('SIGKILL');
  process.once('exit', kill);
  const exited = once(child, 'exit');
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdio[3] as Readable }).once('line', resolve);
    child.once('exit', (code, signal) => reject(new Error(`worker ${options.id} exited with ${code ?? signal}: ${output.join('\n')}`)));
  });
  const { port, metricsPort } = JSON.parse(line) as { port: number; metricsPort?: number };
  return {
    child,
    address: `${options.host ?? '127.0.0.1'}:${port}`,
    output,
    metricsUrl: options.metrics && metricsPort ? `http://127.0.0.1:${metricsPort}/metrics` : null,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      process.off('exit', kill);
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}
