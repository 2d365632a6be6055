/** A complete, valid environment for a test gateway on a free loopback port. */
export const TEST_JWT_SECRET = 'test-secret-0123456789-abcdefghijklmnop';

export function testEnv(overrides: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
    JWT_SECRET: TEST_JWT_SECRET,
    WORKER_RESTART_BACKOFF_MS: '200',
    SHUTDOWN_GRACE_SECONDS: '2',
    ...overrides,
  };
}
