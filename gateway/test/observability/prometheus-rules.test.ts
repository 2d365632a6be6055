import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../../src/infra/paths.js';
import { alertNames, prometheusConfigFile, ruleFiles, ruleTestFiles } from './helpers/observability-files.js';
import { prometheusToolForTests } from './helpers/prometheus-tools.js';

/**
 * The Prometheus configuration as promtool reads it: the scrape config and
 * the rule files are valid, and the unit tests in prometheus/tests pass (each
 * alert fires on its condition held for its `for:`, not before, not below
 * its threshold; the recording rules compute what their names say).
 */

const run = promisify(execFile);
const promtool = prometheusToolForTests('promtool', 'Prometheus config and rule tests');

async function promtoolSays(args: string[]): Promise<{ code: number; output: string }> {
  try {
    const { stdout, stderr } = await run(promtool!, args, { cwd: repoRoot, timeout: 60_000 });
    return { code: 0, output: stdout + stderr };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof failed.code === 'number' ? failed.code : 1, output: `${failed.stdout ?? ''}${failed.stderr ?? ''}` };
  }
}

describe.skipIf(!promtool)('promtool', () => {
  it('accepts prometheus/prometheus.yml and the rule files it names', async () => {
    const { code, output } = await promtoolSays(['check', 'config', prometheusConfigFile]);
    expect(output, output).toContain('SUCCESS');
    expect(code, output).toBe(0);
  });

  it('accepts every rules file', async () => {
    const files = ruleFiles();
    expect(files.map((file) => basename(file))).toEqual(['alerts.yml', 'recording.yml']);
    const { code, output } = await promtoolSays(['check', 'rules', ...files]);
    expect(code, output).toBe(0);
  });

  it('passes every rule unit test', async () => {
    const files = ruleTestFiles();
    expect(files.length).toBeGreaterThan(0);
    const { code, output } = await promtoolSays(['test', 'rules', ...files]);
    expect(code, output).toBe(0);
  });
});

describe('rule unit tests', () => {
  // promtool passes a test file whatever it leaves out: this checks that none is left out.
  it('have, for every alert, a case where it fires and one where it does not', () => {
    const cases = new Map<string, { fires: number; quiet: number }>();
    for (const file of ruleTestFiles()) {
      const lines = readFileSync(file, 'utf8').split('\n');
      lines.forEach((line, i) => {
        const name = /^\s*alertname:\s*(\S+)/.exec(line)?.[1];
        if (!name) return;
        const expected = lines.slice(i + 1).find((next) => /^\s*exp_alerts:/.test(next)) ?? '';
        const counts = cases.get(name) ?? { fires: 0, quiet: 0 };
        if (/exp_alerts:\s*\[\]/.test(expected)) counts.quiet += 1;
        else counts.fires += 1;
        cases.set(name, counts);
      });
    }
    const alerts = ruleFiles().flatMap(alertNames);
    expect(alerts.length).toBeGreaterThan(0);
    const uncovered = alerts.filter((alert) => !cases.get(alert)?.fires || !cases.get(alert)?.quiet);
    expect(uncovered, 'alerts without a firing and a quiet case in prometheus/tests').toEqual([]);
  });

});

describe("the deployment checklist's automatic rollback triggers", () => {
  it.each([
    ['RollbackHealthFailing', '5m', /device_ops_gateway_ready == 0\) or \(up\{job="gateway"\} == 0/],
    ['RollbackErrorRate', '2m', /> 0\.05$/],
    ['RollbackMemory', '1m', /> 0\.90$/],
    ['RollbackResponseTime', '1m', /quantile="0\.95"\} > 30$/],
  ])('declare %s with for: %s, critical and rollback="true"', (alert, duration, condition) => {
    const text = readFileSync(ruleFiles().find((file) => alertNames(file).includes(alert))!, 'utf8');
    const block = text.slice(text.indexOf(`- alert: ${alert}\n`)).split(/\n\s*- alert: /)[0]!;
    expect(/^\s*expr:\s*(.+)$/m.exec(block)?.[1]?.trim()).toMatch(condition);
    expect(block).toMatch(new RegExp(`\\n\\s*for: ${duration}\\n`));
    expect(block).toMatch(/\n\s*severity: critical\n/);
    expect(block).toMatch(/\n\s*rollback: "true"\n/);
    expect(block).toMatch(/summary: "Rollback trigger: /);
  });
});
