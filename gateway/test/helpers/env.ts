import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A complete, valid environment for a test gateway on a free loopback port. */
export const TEST_JWT_SECRET = 'test-secret-0123456789-abcdefghijklmnop';

let scratch: string | undefined;
/** One scratch folder per test file for workers' models, outputs and caches. */
export function scratchDir(): string {
  scratch ??= mkdtempSync(join(tmpdir(), 'device-ops-test-'));
  return scratch;
}

export function testEnv(overrides: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    PORT: '0',
    GRPC_PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
    JWT_SECRET: TEST_JWT_SECRET,
    WORKER_RESTART_BACKOFF_MS: '200',
    SHUTDOWN_GRACE_SECONDS: '2',
    MODEL_DIRECTORY: join(scratchDir(), 'models'),
    OUTPUT_DIRECTORY: join(scratchDir(), 'outputs'),
    CACHE_DIRECTORY: join(scratchDir(), 'cache'),
    DATA_DIRECTORY: join(scratchDir(), 'data'),
    // Tests read /health/detailed from loopback without credentials, as Prometheus would from its network.
    INTERNAL_ALLOW_LIST: '127.0.0.0/8,::1',
    // One progress event per denoising step (workers throttle them to 4/s by
    // default): the relay's tests count them.
    PROGRESS_INTERVAL_MS: '0',
    ...overrides,
  };
}
