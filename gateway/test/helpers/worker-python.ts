import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../../src/infra/paths.js';
import { requirement } from './tools.js';

/** The workers' virtual environment's interpreter, which `npm test` sets up. */
export const WORKER_VENV_PYTHON = join(repoRoot, 'python-workers', '.venv', 'bin', 'python');

/** That interpreter for a test file, or null to skip its tests; a failure under CI (see requirement()). */
export const workerPythonForTests = (): string | null =>
  requirement(existsSync(WORKER_VENV_PYTHON) ? WORKER_VENV_PYTHON : null, "the workers' Python environment (python-workers/.venv)", 'run npm test, which creates it');
