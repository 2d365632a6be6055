import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** The two binaries of Debian's `prometheus` package, and its node exporter. */
export type PrometheusTool = 'promtool' | 'prometheus' | 'prometheus-node-exporter';

const PACKAGE: Record<PrometheusTool, string> = {
  promtool: 'prometheus',
  prometheus: 'prometheus',
  'prometheus-node-exporter': 'prometheus-node-exporter',
};

export const prometheusToolMissingMessage = (tool: PrometheusTool, tests: string): string =>
  `${tool} not found: ${tests} skipped; install the ${PACKAGE[tool]} package (apt-get install ${PACKAGE[tool]})`;

/** The tool from PATH, else /usr/bin (Debian); null when none. */
export function findPrometheusTool(tool: PrometheusTool, env: NodeJS.ProcessEnv = process.env): string | null {
  const folders = [...(env.PATH ?? '').split(delimiter).filter(Boolean), '/usr/bin'];
  for (const folder of folders) {
    const candidate = join(folder, tool);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/**
 * The tool for a test file, or null to skip its tests (with one line saying
 * so). Under CI a missing tool is a failure: CI must not pass by skipping the
 * checks of the alert rules and dashboards.
 */
export function prometheusToolForTests(tool: PrometheusTool, tests: string): string | null {
  const binary = findPrometheusTool(tool);
  if (binary) return binary;
  const message = prometheusToolMissingMessage(tool, tests);
  if (process.env.CI) throw new Error(message.replace('skipped', 'cannot be skipped under CI'));
  console.warn(message);
  return null;
}
