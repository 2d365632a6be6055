import { startGateway, type RunningGateway } from '../../src/main.js';
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
