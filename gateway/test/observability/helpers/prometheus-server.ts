import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, killAbandonedServers, spawnServer } from '../../helpers/servers.js';

/**
 * A throwaway Prometheus server (the real binary) on a free loopback port,
 * with its own scrape targets, the project's rule files and an empty TSDB in
 * a temporary folder: what Grafana would query, for tests of dashboards and
 * rules against live metrics.
 */

export interface ScrapeJob {
  job: string;
  /** host:port */
  target: string;
  metricsPath: string;
}

export interface PrometheusOptions {
  jobs: ScrapeJob[];
  ruleFiles: string[];
  /** Scrape and rule-evaluation interval; short, so a test sees data within seconds. */
  intervalSeconds?: number;
}

/** The JSON body of the HTTP API (`/api/v1/…`), success or not. */
export interface ApiResponse<T = unknown> {
  status: 'success' | 'error';
  data?: T;
  errorType?: string;
  error?: string;
}

export interface QueryData {
  resultType: string;
  result: { metric: Record<string, string>; value?: [number, string] }[] | [number, string];
}

export interface RunningPrometheus {
  url: string;
  /** GET /api/v1/<path> with query parameters. */
  api<T = unknown>(path: string, params?: Record<string, string>): Promise<ApiResponse<T>>;
  /** An instant query at the current time. */
  query(expr: string): Promise<ApiResponse<QueryData>>;
  stop(): Promise<void>;
}

const ROOT_PREFIX = 'device-ops-prometheus-';
const OWNER_FILE = 'owner.pid';
const SERVER_FILE = 'server.pid';

export async function startPrometheus(binary: string, options: PrometheusOptions): Promise<RunningPrometheus> {
  killAbandonedServers(ROOT_PREFIX, OWNER_FILE, SERVER_FILE, 'prometheus');
  const dir = mkdtempSync(join(tmpdir(), ROOT_PREFIX));
  writeFileSync(join(dir, OWNER_FILE), String(process.pid));
  const interval = `${options.intervalSeconds ?? 1}s`;
  // JSON is YAML: no YAML writer needed.
  const config = {
    global: { scrape_interval: interval, scrape_timeout: interval, evaluation_interval: interval },
    rule_files: options.ruleFiles,
    scrape_configs: options.jobs.map((job) => ({
      job_name: job.job,
      metrics_path: job.metricsPath,
      static_configs: [{ targets: [job.target] }],
    })),
  };
  const configFile = join(dir, 'prometheus.yml');
  writeFileSync(configFile, JSON.stringify(config, null, 2));

  let child: ChildProcess | null = null;
  const kill = () => child?.kill('SIGKILL');
  // A run that exits without its teardown still stops the server.
  process.once('exit', kill);

  let url = '';
  for (let attempt = 1; ; attempt += 1) {
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const data = join(dir, `data-${attempt}`);
    mkdirSync(data);
    const args = [`--config.file=${configFile}`, `--storage.tsdb.path=${data}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'];
    try {
      child = await spawnServer(binary, args, join(dir, SERVER_FILE), (server) => waitForReady(url, server));
      break;
    } catch (error) {
      // Another process may have taken the port between probe and start.
      if (attempt >= 3) {
        process.off('exit', kill);
        rmSync(dir, { recursive: true, force: true });
        throw new Error(`prometheus did not start: ${(error as Error).message}`);
      }
    }
  }

  const api = async <T>(path: string, params: Record<string, string> = {}): Promise<ApiResponse<T>> => {
    const response = await fetch(`${url}/api/v1/${path}?${new URLSearchParams(params)}`);
    return (await response.json()) as ApiResponse<T>;
  };

  return {
    url,
    api,
    query: (expr) => api<QueryData>('query', { query: expr }),
    stop: async () => {
      const running = child;
      child = null;
      if (running && running.exitCode === null && running.signalCode === null) {
        const exited = once(running, 'exit');
        running.kill('SIGTERM');
        const forced = setTimeout(() => running.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(forced);
      }
      process.off('exit', kill);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Poll /-/ready until Prometheus answers 200, or fail once it exits or 20 s pass. */
async function waitForReady(url: string, server: ChildProcess): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (server.exitCode !== null || server.signalCode !== null) throw new Error(`exited (${server.exitCode ?? server.signalCode})`);
    try {
      if ((await fetch(`${url}/-/ready`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('not ready within 20 s');
}

