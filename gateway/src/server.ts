/**
 * Entry point: boots the gateway, listens, and exits 0 after a graceful
 * drain on SIGTERM or SIGINT. Startup problems are one line on stderr and a
 * non-zero exit.
 */
import { ConfigError } from './config/config.js';
import { PythonEnvironmentError } from './features/workers/python-environment.js';
import { startGateway, type RunningGateway } from './main.js';

export async function runServer(env: NodeJS.ProcessEnv = process.env): Promise<RunningGateway> {
  let gateway: RunningGateway;
  try {
    gateway = await startGateway(env);
  } catch (error) {
    if (error instanceof ConfigError || error instanceof PythonEnvironmentError) {
      process.stderr.write(`gateway: ${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
  let signals = 0;
  const shutdown = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) {
      gateway.logger.warn('second signal; exiting without draining', { signal });
      process.exit(1);
    }
    gateway.logger.info('signal received', { signal });
    gateway.close().then(
      () => process.exit(0),
      (error: unknown) => {
        gateway.logger.error('shutdown failed', { err: error });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  return gateway;
}

// Run when executed directly (node gateway/dist/server.js), not when imported.
if (import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  await runServer();
}
