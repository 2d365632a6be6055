import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../../../src/infra/paths.js';

/** Where the observability configuration lives, from the repository root. */
export const prometheusDir = join(repoRoot, 'prometheus');
export const prometheusConfigFile = join(prometheusDir, 'prometheus.yml');
export const dashboardsDir = join(repoRoot, 'grafana', 'dashboards');
export const grafanaProvisioningDir = join(repoRoot, 'grafana', 'provisioning');
export const metricsContractFile = join(repoRoot, 'docs', 'metrics.md');

const yamlIn = (dir: string) =>
  readdirSync(dir)
    .filter((name) => name.endsWith('.yml') || name.endsWith('.yaml'))
    .sort()
    .map((name) => join(dir, name));

/** prometheus/rules/*.yml: recording rules and alerts. */
export const ruleFiles = (): string[] => yamlIn(join(prometheusDir, 'rules'));
/** prometheus/tests/*.yml: promtool unit tests. */
export const ruleTestFiles = (): string[] => yamlIn(join(prometheusDir, 'tests'));

/**
 * The PromQL of every `expr:` in a rules file (one-line or block scalar).
 * The files are ours and written in one style, so reading them line by line
 * is enough, and the tests need no YAML parser.
 */
export function ruleExpressions(file: string): string[] {
  const lines = readFileSync(file, 'utf8').split('\n');
  const expressions: string[] = [];
  for (let i = 0; i < lines.length; i += 1) {
    const match = /^(\s*)(?:- )?expr:\s*(.*)$/.exec(lines[i]!);
    if (!match) continue;
    const indent = match[1]!.length;
    const rest = match[2]!.trim();
    if (!/^[|>][-+]?$/.test(rest)) {
      expressions.push(rest);
      continue;
    }
    const block: string[] = [];
    while (i + 1 < lines.length && (lines[i + 1]!.trim() === '' || lines[i + 1]!.search(/\S/) > indent)) {
      block.push(lines[(i += 1)]!.trim());
    }
    expressions.push(block.join(' ').trim());
  }
  return expressions;
}

/** `record:` names of a rules file. */
export const recordedNames = (file: string): string[] =>
  [...readFileSync(file, 'utf8').matchAll(/^\s*- record:\s*(\S+)\s*$/gm)].map((m) => m[1]!);

/** `alert:` names of a rules file. */
export const alertNames = (file: string): string[] =>
  [...readFileSync(file, 'utf8').matchAll(/^\s*- alert:\s*(\S+)\s*$/gm)].map((m) => m[1]!);
