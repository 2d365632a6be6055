import type { Config } from '../../config/config.js';
import type { Logger } from '../../infra/logger.js';
import { LocalWorkerPool } from './local-worker-pool.js';
import { checkPythonEnvironment } from './python-environment.js';
import { RemoteWorkerPool } from './remote-worker-pool.js';
import type { WorkerPool } from './worker-handle.js';

/**
 * WORKER_ADDRESSES set: connect to those workers (compose, Kubernetes).
 * Otherwise: launch WORKER_COUNT local workers from the project's Python
 * environment, after checking that environment can run them.
 */
export async function createWorkerPool(config: Config, logger: Logger, env: NodeJS.ProcessEnv): Promise<WorkerPool> {
  if (config.workerAddresses && config.workerAddresses.length > 0) {
    return new RemoteWorkerPool(config, logger.child({ component: 'workers' }), config.workerAddresses);
  }
  await checkPythonEnvironment(config.workerPython);
  return new LocalWorkerPool(config, logger.child({ component: 'workers' }), env);
}
