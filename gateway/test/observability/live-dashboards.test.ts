import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startRealGateway, type RealGateway } from '../helpers/real-gateway.js';
import { freePort } from '../helpers/servers.js';
import { waitFor } from '../helpers/wait.js';
import { panelQueries, toPromQL, variableQueries, type PanelQuery } from './helpers/dashboards.js';
import { readMetricContract } from './helpers/metric-contract.js';
import { alertNames, recordedNames, ruleFiles } from './helpers/observability-files.js';
import { startNodeExporter, type RunningNodeExporter } from './helpers/node-exporter.js';
import { startPrometheus, type RunningPrometheus } from './helpers/prometheus-server.js';
import { prometheusToolForTests } from './helpers/prometheus-tools.js';
import { generateTraffic, TRAFFIC_GATEWAY_ENV, type TrafficReport } from './helpers/traffic.js';

/**
 * The dashboards against live metrics: a real Prometheus, with the project's
 * rule files, scrapes a real gateway, its local worker (through the
 * gateway's /metrics/workers/{id}, as one scrape configuration finds them)
 * and Debian's node exporter (host memory) after traffic of every kind the dashboards draw. Every panel query must
 * parse and return data, as Grafana would send it.
 */

/**
 * Queries that are rightly empty here, with why. Only their parsing is
 * checked. `when` limits an entry to the runs where its reason holds.
 */
const EMPTY_HERE: { key: string; reason: string; when?: (run: RunFacts) => boolean }[] = [
  ...[
    'device-ops-workers-gpus / GPU memory used and total (bytes) / A',
    'device-ops-workers-gpus / GPU memory used and total (bytes) / B',
    'device-ops-workers-gpus / GPU memory used (%) / A',
    'device-ops-workers-gpus / GPU utilization (%) / A',
    'device-ops-workers-gpus / CUDA allocator allocated and reserved (bytes) / A',
    'device-ops-workers-gpus / CUDA allocator allocated and reserved (bytes) / B',
    'device-ops-workers-gpus / GPU temperature (°C) / A',
    'device-ops-workers-gpus / GPU power draw (W) / A',
  ].map((key) => ({ key, reason: 'NVML and CUDA gauges: the worker has no GPU here', when: (run: RunFacts) => !run.workerHasGpu })),
];

interface RunFacts {
  workerHasGpu: boolean;
}

const prometheusBinary = prometheusToolForTests('prometheus', 'dashboard queries against a live Prometheus');
const nodeExporterBinary = prometheusBinary && prometheusToolForTests('prometheus-node-exporter', 'dashboard queries against a live Prometheus');
const WORKER = 'worker-0';

describe.skipIf(!prometheusBinary || !nodeExporterBinary)('dashboards on a live Prometheus scraping a real gateway', () => {
  let real: RealGateway;
  let prometheus: RunningPrometheus;
  let nodeExporter: RunningNodeExporter;
  let traffic: TrafficReport;
  let gatewayExposition = '';
  let workerExposition = '';
  const facts: RunFacts = { workerHasGpu: false };

  beforeAll(async () => {
    real = await startRealGateway({
      MODEL_DIRECTORY: inject('demoModels'),
      OUTPUT_DIRECTORY: mkdtempSync(join(tmpdir(), 'device-ops-outputs-')),
      DATA_DIRECTORY: mkdtempSync(join(tmpdir(), 'device-ops-data-')),
      // Info-level lines, shipped to a Seq that is not there: dropped and counted.
      LOG_LEVEL: 'info',
      SEQ_SERVER_URL: `http://127.0.0.1:${await freePort()}`,
      SEQ_MAX_BUFFERED_EVENTS: '10',
      ...TRAFFIC_GATEWAY_ENV,
    });
    const target = new URL(real.url).host;
    nodeExporter = await startNodeExporter(nodeExporterBinary!);
    prometheus = await startPrometheus(prometheusBinary!, {
      // The job names prometheus/prometheus.yml gives them: the rules select on them.
      jobs: [
        { job: 'gateway', target, metricsPath: '/metrics' },
        { job: 'worker', target, metricsPath: `/metrics/workers/${WORKER}` },
        { job: 'node', target: nodeExporter.target, metricsPath: '/metrics' },
      ],
      ruleFiles: ruleFiles(),
    });
    traffic = await generateTraffic(real.url, real.gateway.grpcAddress);
    gatewayExposition = await (await fetch(`${real.url}/metrics`)).text();
    workerExposition = await (await fetch(`${real.url}/metrics/workers/${WORKER}`)).text();
    facts.workerHasGpu = /^device_ops_worker_gpu_memory_total_bytes\{/m.test(workerExposition);

    // Three scrapes and rule evaluations after the last request: every
    // counter has two samples since it appeared, so rate() has a value.
    const trafficEnd = Date.now() / 1000;
    await waitFor(
      async () => {
        const response = await prometheus.query('min(timestamp(up))');
        const result = response.data?.result as { value: [number, string] }[] | undefined;
        const oldest = Number(result?.[0]?.value[1] ?? 0);
        return result?.length && oldest > trafficEnd + 3 ? true : undefined;
      },
      { what: 'Prometheus to scrape after the traffic', timeoutMs: 30_000, intervalMs: 250 },
    );
  });

  afterAll(async () => {
    await prometheus?.stop();
    await nodeExporter?.stop();
    await real?.gateway.close();
  });

  it('generated every kind of request the dashboards draw', () => {
    const { statuses } = traffic;
    expect(statuses['unknown route']).toEqual([404]);
    expect(statuses['no credentials']).toEqual([401]);
    expect(statuses['malformed token']).toEqual([401]);
    expect(statuses.embedding).toEqual([200]);
    expect(statuses.tensor).toEqual([200]);
    expect(statuses['image burst']).toContain(200);
    expect(statuses['image burst']).toContain(503);
    expect(statuses['background session']).toEqual([202]);
    expect(statuses['session events']).toEqual([200]);
    expect(traffic.cancelledSession).toBe('cancelled');
    expect(statuses['over the limit']).toContain(429);
    expect([statuses['grpc devices'], statuses['grpc embedding'], statuses['grpc no credentials']]).toEqual([[0], [0], [16]]);
  });

  it('reads every metric of docs/metrics.md from the gateway and its worker', () => {
    const families = (exposition: string) => [...exposition.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!);
    const exported = { gateway: families(gatewayExposition), worker: families(workerExposition) };
    const missing = readMetricContract()
      .filter((metric) => !exported[metric.exporter].some((family) => metric.pattern.test(family) || metric.pattern.test(`${family}_total`)))
      .map((metric) => `${metric.exporter}: ${metric.name}`);
    expect(missing).toEqual([]);
  });

  it('scrapes every target and evaluates every rule without error', async () => {
    const targets = await prometheus.api<{ activeTargets: { labels: { job: string }; health: string; lastError: string }[] }>('targets');
    expect(targets.data!.activeTargets.map((t) => [t.labels.job, t.health, t.lastError])).toEqual(
      expect.arrayContaining([
        ['gateway', 'up', ''],
        ['worker', 'up', ''],
        ['node', 'up', ''],
      ]),
    );
    const rules = await prometheus.api<{ groups: { rules: { name: string; health: string; lastError?: string }[] }[] }>('rules');
    const loaded = rules.data!.groups.flatMap((group) => group.rules);
    expect(loaded.filter((rule) => rule.health !== 'ok').map((rule) => `${rule.name}: ${rule.health} ${rule.lastError ?? ''}`)).toEqual([]);
    expect(loaded.length).toBe(ruleFiles().flatMap((file) => [...recordedNames(file), ...alertNames(file)]).length);
  });

  it('answers every panel query of every dashboard with data', async () => {
    const queries = panelQueries();
    expect(queries.length).toBeGreaterThan(40);
    const allowedEmpty = new Map(EMPTY_HERE.filter((entry) => entry.when?.(facts) ?? true).map((entry) => [entry.key, entry.reason]));
    const failures: string[] = [];
    for (const query of queries) {
      const problem = await check(prometheus, query, allowedEmpty.has(query.key));
      if (problem) failures.push(`${query.key}: ${problem}\n    ${toPromQL(query.expr)}`);
    }
    expect(failures).toEqual([]);
  });

  it('offers values in every template variable', async () => {
    const empty: string[] = [];
    for (const variable of variableQueries()) {
      const response = await prometheus.query(toPromQL(variable.expr));
      const result = response.data?.result;
      if (response.status !== 'success' || !Array.isArray(result) || result.length === 0) {
        empty.push(`${variable.key}: ${response.error ?? 'no values'}\n    ${variable.expr}`);
      }
    }
    expect(variableQueries().length).toBeGreaterThan(0);
    expect(empty).toEqual([]);
  });

  it('names only existing panel queries in its list of rightly empty ones', () => {
    const keys = new Set(panelQueries().map((query) => query.key));
    expect(EMPTY_HERE.map((entry) => entry.key).filter((key) => !keys.has(key))).toEqual([]);
  });

  // The health rollback trigger reads this gauge: it must say "ready" for a
  // ready gateway whether or not an orchestrator probes /health/ready.
  it('shows Prometheus a ready gateway as ready, without a readiness probe', async () => {
    expect(traffic.statuses['readiness probe']).toBeUndefined();
    const ready = await prometheus.query('device_ops_gateway_ready');
    expect((ready.data!.result as { value: [number, string] }[]).map((sample) => sample.value[1])).toEqual(['1']);
  });
});

/** Why a query fails the dashboards: a parse or evaluation error, or no data (unless allowed). */
async function check(prometheus: RunningPrometheus, query: PanelQuery, mayBeEmpty: boolean): Promise<string | null> {
  const response = await prometheus.query(toPromQL(query.expr));
  if (response.status !== 'success') return `${response.errorType}: ${response.error}`;
  const result = response.data!.result;
  if (!mayBeEmpty && Array.isArray(result) && result.length === 0) return 'no data';
  return null;
}
