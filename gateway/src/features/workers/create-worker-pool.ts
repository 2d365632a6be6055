import type { Config } from '../../config/config.js';
import type { Logger } from '../../infra/logger.js';
import type { CallObserver } from '../../infra/grpc/worker-client.js';
import { LocalWorkerPool } from './local-worker-pool.js';
import { checkPythonEnvironment } from './python-environment.js';
import { RemoteWorkerPool } from './remote-worker-pool.js';
import type { WorkerPool } from './worker-handle.js';

/**
 * WORKER_ADDRESSES set: connect to those workers (compose, Kubernetes) with
 * WORKER_TOKEN and, when WORKER_TLS_CA is set, TLS.
 * Otherwise: launch WORKER_COUNT local workers from the project's Python
 * environment, after checking that environment can run them; they listen on
 * loopback and share a random token with this process only.
 */
export async function createWorkerPool(
  config: Config,
  logger: Logger,
  env: NodeJS.ProcessEnv,
  observe?: CallObserver,
): Promise<WorkerPool> {
  const log = logger.child({ component: 'workers' });
  if (config.workerAddresses && config.workerAddresses.length > 0) {
    return new RemoteWorkerPool(config, log, config.workerAddresses, observe);
  }
  if (config.workerToken !== undefined || config.workerTlsCa !== undefined) {
    log.info('WORKER_TOKEN and WORKER_TLS_* apply to remote workers only; local workers get a random token');
  }
  await checkPythonEnvironment(config.workerPython);
  return new LocalWorkerPool(config, log, env, observe);
}
