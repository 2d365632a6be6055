import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Dialect } from '../../src/infra/database/database.js';
import { startGateway, type RunningGateway } from '../../src/main.js';
import { createPostgresTestUrl } from './databases.js';
import { testEnv } from './env.js';
import { LogCapture } from './log-capture.js';

export interface RealGateway {
  gateway: RunningGateway;
  url: string;
  logs: LogCapture;
}

/** The whole gateway as `npm start` runs it, with real local Python workers. */
export async function startRealGateway(env: Record<string, string> = {}): Promise<RealGateway> {
  const logs = new LogCapture();
  const gateway = await startGateway(testEnv(env), { logStream: logs });
  return { gateway, url: gateway.url, logs };
}

export interface GatewayOnDatabase extends RealGateway {
  /** Close the gateway, then drop its PostgreSQL database (if any). */
  close(): Promise<void>;
}

/**
 * The real gateway on one database: a fresh PostgreSQL database cloned from
 * the run's template (dropped by close()), or an SQLite file in a new data
 * folder. `env` may name DATABASE_URL itself (a second gateway on the same one).
 */
export async function startRealGatewayOn(dialect: Dialect, env: Record<string, string> = {}): Promise<GatewayOnDatabase> {
  const database = dialect === 'postgres' && !env.DATABASE_URL ? await createPostgresTestUrl() : null;
  try {
    const real = await startRealGateway({
      DATA_DIRECTORY: mkdtempSync(join(tmpdir(), 'device-ops-data-')),
      ...(database ? { DATABASE_URL: database.url } : {}),
      ...env,
    });
    return {
      ...real,
      close: async () => {
        await real.gateway.close();
        await database?.drop();
      },
    };
  } catch (error) {
    await database?.drop();
    throw error;
  }
}
