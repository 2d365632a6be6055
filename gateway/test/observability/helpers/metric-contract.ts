import { readFileSync } from 'node:fs';
import { metricsContractFile } from './observability-files.js';

export interface ContractMetric {
  /** As docs/metrics.md writes it, `…_x` spelled out: `device_ops_worker_x`, `device_ops_gateway_process_*`. */
  name: string;
  type: string;
  /** Which section: the gateway's /metrics or the worker's. */
  exporter: 'gateway' | 'worker';
  /** Matches the metric's family name (a `*` in the contract stands for any suffix). */
  pattern: RegExp;
}

const escape = (text: string) => text.replace(/[.+?^${}()|[\]\\]/g, '\\$&');

/**
 * The metrics docs/metrics.md promises: the first column of the gateway's and
 * the worker's tables. `…_reserved_bytes` after `device_ops_worker_…` reads as
 * `device_ops_worker_reserved_bytes`, as the document means it.
 */
export function readMetricContract(file = metricsContractFile): ContractMetric[] {
  const metrics: ContractMetric[] = [];
  let exporter: ContractMetric['exporter'] | null = null;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line.startsWith('## ')) {
      exporter = /gateway/i.test(line) ? 'gateway' : /worker/i.test(line) ? 'worker' : null;
      continue;
    }
    if (!exporter || !line.startsWith('| `')) continue;
    const [, nameCell, typeCell] = line.split('|').map((cell) => cell.trim());
    const prefix = exporter === 'gateway' ? 'device_ops_gateway' : 'device_ops_worker';
    for (const [, raw] of nameCell!.matchAll(/`([^`]+)`/g)) {
      const name = raw!.startsWith('…') ? `${prefix}${raw!.slice(1)}` : raw!;
      metrics.push({ name, type: typeCell!, exporter, pattern: new RegExp(`^${name.split('*').map(escape).join('[a-zA-Z0-9_]*')}$`) });
    }
  }
  return metrics;
}

/** The family a sample name belongs to: histogram series drop their suffix. */
const familyCandidates = (name: string): string[] => [name, name.replace(/_(bucket|sum|count)$/, '')];

/** Whether a metric (series) name is one the contract promises. */
export function inContract(contract: ContractMetric[], name: string): boolean {
  return familyCandidates(name).some((candidate) => contract.some((metric) => metric.pattern.test(candidate)));
}

/**
 * The metric names a PromQL expression reads: the exporters' (`device_ops_…`,
 * `process_…`, `node_…`), Prometheus' own (`up`, `ALERTS`) and recording-rule
 * names (those with a colon). Label values and label names are never taken
 * for metrics: strings are removed first, and label names never carry those
 * prefixes or a colon.
 */
export function metricNamesIn(expr: string): string[] {
  const bare = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
  const names = new Set<string>();
  for (const [token] of bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    if (/^(device_ops_|process_|node_)/.test(token) || token.includes(':') || token === 'up' || token === 'ALERTS') names.add(token);
  }
  return [...names];
}
