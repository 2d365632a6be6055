import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { workerSourceRoot } from '../../infra/paths.js';

const run = promisify(execFile);

export class PythonEnvironmentError extends Error {
  constructor(python: string, reason: string) {
    super(
      `no usable Python environment for local workers at ${python}: ${reason}. ` +
        'Run `npm start` once (it creates python-workers/.venv) or set WORKER_PYTHON.',
    );
    this.name = 'PythonEnvironmentError';
  }
}

/**
 * Check once, before launching workers, that the interpreter exists and can
 * import the worker with its dependencies (torch, grpc, generated stubs), so
 * a broken environment is one clear line instead of a restart loop.
 */
export async function checkPythonEnvironment(python: string): Promise<void> {
  try {
    await run(python, ['-c', 'import device_ops_worker.server'], {
      env: { ...process.env, PYTHONPATH: workerSourceRoot },
      timeout: 120_000,
    });
  } catch (error) {
    const e = error as NodeJS.ErrnoException & { stderr?: string };
    const reason =
      e.code === 'ENOENT'
        ? 'the interpreter does not exist'
        : (e.stderr ?? e.message).trim().split('\n').filter(Boolean).pop() ?? 'import failed';
    throw new PythonEnvironmentError(python, reason);
  }
}
