import type { Config } from '../../config/config.js';
import type { Logger } from '../../infra/logger.js';
import { workerSourceRoot } from '../../infra/paths.js';
import { WorkerClient, type CallObserver } from '../../infra/grpc/worker-client.js';
import { loadProtos } from '../../infra/grpc/protos.js';
import { localWorkerChannel } from '../../infra/grpc/worker-credentials.js';
import { LocalWorker } from './local-worker.js';
import type { WorkerHandle, WorkerPool } from './worker-handle.js';

/** Variables a worker may see: the gateway's own secrets never reach it. */
const CHILD_ENV_NAMES = new Set([
  'PATH',
  'HOME',
  'USER',
  'LANG',
  'TZ',
  'TMPDIR',
  'LD_LIBRARY_PATH',
  'SSL_CERT_FILE',
  // The worker engine's own settings (python-workers/src/device_ops_worker/settings.py).
  'ALLOW_PICKLE_MODELS',
  'MAX_LOADED_MODELS',
  'DEVICE_MEMORY_FRACTION',
  'MAX_QUEUE_PER_DEVICE',
  'MAX_BATCH_SIZE',
  'MAX_BATCH_DELAY_MS',
  'PROGRESS_INTERVAL_MS',
  'EMBEDDING_CUDA_GRAPHS',
]);
const CHILD_ENV_PREFIXES = ['LC_', 'CUDA_', 'NVIDIA_', 'PYTORCH_', 'TORCH_', 'OMP_', 'MKL_', 'HF_', 'TRANSFORMERS_'];

export function workerEnvironment(parent: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(parent)) {
    if (CHILD_ENV_NAMES.has(name) || CHILD_ENV_PREFIXES.some((prefix) => name.startsWith(prefix))) env[name] = value;
  }
  env.PYTHONPATH = workerSourceRoot;
  env.PYTHONUNBUFFERED = '1';
  return env;
}

export class LocalWorkerPool implements WorkerPool {
  readonly mode = 'local';
  private readonly handles: LocalWorker[];

  constructor(config: Config, logger: Logger, parentEnv: NodeJS.ProcessEnv, observe?: CallObserver) {
    // One token for this gateway process, in each child's environment (argv
    // is visible in ps): even on loopback, our workers answer only us.
    const channel = localWorkerChannel();
    const env = { ...workerEnvironment(parentEnv), WORKER_TOKEN: channel.token };
    this.handles = Array.from(
      { length: config.workerCount },
      (_, index) =>
        new LocalWorker({
          id: `worker-${index}`,
          python: config.workerPython,
          extraArgs: [
            '--model-directory',
            config.modelDirectory,
            '--output-directory',
            config.outputDirectory,
            '--cache-directory',
            config.cacheDirectory,
          ],
          env,
          logLevel: config.logLevel,
          startTimeoutMs: config.workerStartTimeoutMs,
          backoffInitialMs: config.workerRestartBackoffMs,
          backoffMaxMs: config.workerRestartBackoffMaxMs,
          crashLoopFailures: config.workerCrashLoopFailures,
          crashLoopWindowMs: config.workerCrashLoopWindowSeconds * 1000,
          shutdownGraceSeconds: config.shutdownGraceSeconds,
          healthDeadlineMs: config.healthCheckDeadlineMs,
          logger,
          createClient: (id, address) => new WorkerClient(id, address, config.grpcDeadlineMs, loadProtos(), channel, observe),
        }),
    );
  }

  workers(): readonly WorkerHandle[] {
    return this.handles;
  }

  async start(): Promise<void> {
    await Promise.all(this.handles.map((worker) => worker.start()));
  }

  async stop(): Promise<void> {
    await Promise.all(this.handles.map((worker) => worker.stop()));
  }
}
