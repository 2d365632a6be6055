import { findTool, requirement } from '../../helpers/tools.js';

/** The two binaries of Debian's `prometheus` package, and its node exporter. */
export type PrometheusTool = 'promtool' | 'prometheus' | 'prometheus-node-exporter';

const PACKAGE: Record<PrometheusTool, string> = {
  promtool: 'prometheus',
  prometheus: 'prometheus',
  'prometheus-node-exporter': 'prometheus-node-exporter',
};

/**
 * The tool for a test file (`tests` says which tests need it), or null to
 * skip them; a failure under CI (see requirement()).
 */
export const prometheusToolForTests = (tool: PrometheusTool, tests: string): string | null =>
  requirement(findTool(tool), `${tool} (for ${tests})`, `install the ${PACKAGE[tool]} package (apt-get install ${PACKAGE[tool]})`);
