import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadDashboards, panelQueries, panelsOf } from './helpers/dashboards.js';
import { inContract, metricNamesIn, readMetricContract } from './helpers/metric-contract.js';
import { grafanaProvisioningDir, recordedNames, ruleExpressions, ruleFiles } from './helpers/observability-files.js';

/**
 * The Grafana dashboards and provisioning as files: valid JSON, stable and
 * unique uids, every panel on the provisioned Prometheus datasource with a
 * query, and every metric they (and the rules) read either promised by
 * docs/metrics.md, recorded by prometheus/rules, or an exporter's of the stack.
 */

const DATASOURCE_UID = 'prometheus';
const dashboards = loadDashboards();
const contract = readMetricContract();
const recorded = new Set(ruleFiles().flatMap(recordedNames));

/** Metrics not ours: Prometheus' own series, and node-exporter's for the host memory. */
const EXTERNAL = [/^up$/, /^ALERTS$/, /^node_memory_(MemAvailable|MemTotal)_bytes$/];

function unknownMetrics(expr: string): string[] {
  return metricNamesIn(expr).filter(
    (name) => !(name.includes(':') ? recorded.has(name) : inContract(contract, name) || EXTERNAL.some((pattern) => pattern.test(name))),
  );
}

describe('dashboards', () => {
  it('are the four the runbook names', () => {
    expect(dashboards.map((d) => d.file)).toEqual(['inference.json', 'overview.json', 'rollback-triggers.json', 'workers-gpus.json']);
  });

  it.each(dashboards.map((d) => [d.file, d] as const))('%s parses, with a uid, a title and a current schema', (_file, { error, dashboard }) => {
    expect(error).toBeUndefined();
    expect(dashboard!.uid).toMatch(/^device-ops-[a-z0-9-]+$/);
    expect(dashboard!.title).toBeTruthy();
    expect(dashboard!.schemaVersion).toBeGreaterThanOrEqual(36);
  });

  it('have unique uids, and unique panel ids within each', () => {
    const uids = dashboards.map((d) => d.dashboard?.uid);
    expect(new Set(uids).size).toBe(uids.length);
    for (const { file, dashboard } of dashboards) {
      const ids = panelsOf(dashboard!).map((panel) => panel.id);
      expect(new Set(ids).size, file).toBe(ids.length);
    }
  });

  it('draw every panel from the Prometheus datasource, with at least one query', () => {
    const problems: string[] = [];
    for (const { dashboard } of dashboards) {
      for (const panel of panelsOf(dashboard!)) {
        const where = `${dashboard!.uid} / ${panel.title}`;
        if (!panel.title) problems.push(`${where}: no title`);
        if (panel.datasource?.uid !== DATASOURCE_UID) problems.push(`${where}: datasource ${JSON.stringify(panel.datasource)}`);
        const targets = panel.targets ?? [];
        if (!targets.some((target) => target.expr?.trim())) problems.push(`${where}: no query`);
        for (const target of targets) {
          if (target.datasource && target.datasource.uid !== DATASOURCE_UID) problems.push(`${where} / ${target.refId}: datasource ${JSON.stringify(target.datasource)}`);
        }
      }
      for (const variable of dashboard!.templating?.list ?? []) {
        if (variable.type === 'query' && variable.datasource?.uid !== DATASOURCE_UID) problems.push(`${dashboard!.uid} / $${variable.name}: datasource`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('read only metrics of docs/metrics.md, recording rules and the stack exporters', () => {
    const unknown = panelQueries(dashboards).flatMap((query) => unknownMetrics(query.expr).map((name) => `${query.key}: ${name}`));
    expect(unknown).toEqual([]);
  });
});

describe('rules', () => {
  it('read only metrics of docs/metrics.md, recording rules and the stack exporters', () => {
    const unknown = ruleFiles().flatMap((file) => ruleExpressions(file).flatMap((expr) => unknownMetrics(expr).map((name) => `${file}: ${name}`)));
    expect(ruleFiles().flatMap(ruleExpressions).length).toBeGreaterThan(10);
    expect(unknown).toEqual([]);
  });
});

describe('Grafana provisioning', () => {
  it('provisions Prometheus with the uid the dashboards use', () => {
    const datasources = readFileSync(join(grafanaProvisioningDir, 'datasources', 'prometheus.yml'), 'utf8');
    expect(datasources).toMatch(/^\s*uid: prometheus$/m);
    expect(datasources).toMatch(/^\s*type: prometheus$/m);
    expect(datasources).toMatch(/^\s*url: http:\/\/prometheus:9090$/m);
  });

  it('loads the dashboards from the folder compose mounts them in', () => {
    const providers = readFileSync(join(grafanaProvisioningDir, 'dashboards', 'dashboards.yml'), 'utf8');
    expect(providers).toMatch(/^\s*type: file$/m);
    expect(providers).toMatch(/^\s*path: \/var\/lib\/grafana\/dashboards$/m);
  });
});
