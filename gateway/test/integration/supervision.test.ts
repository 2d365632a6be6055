import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceListSchema } from '../../src/features/devices/device-schemas.js';
import { DetailedHealthSchema, type WorkerHealth } from '../../src/features/health/health-schemas.js';
import { bearer, getJson } from '../helpers/http.js';
import { startRealGateway, type RealGateway } from '../helpers/real-gateway.js';
import { signToken } from '../helpers/tokens.js';
import { processExists, waitFor, MACHINE_MARGIN_MS } from '../helpers/wait.js';

const DEADLINE_MS = 1500;

describe('local supervision of real workers', () => {
  let real: RealGateway;

  const health = async () => DetailedHealthSchema.parse((await getJson(`${real.url}/health/detailed`)).body);
  const worker = async (id: string): Promise<WorkerHealth> => (await health()).workers.find((w) => w.id === id)!;

  beforeAll(async () => {
    real = await startRealGateway({
      WORKER_COUNT: '2',
      GRPC_DEADLINE_MS: String(DEADLINE_MS),
      HEALTH_CHECK_DEADLINE_MS: '1000',
      WORKER_RESTART_BACKOFF_MS: '1500',
    });
  });
  afterAll(async () => {
    await real?.gateway.close();
  });

  it('starts WORKER_COUNT workers and waits until each serves', async () => {
    const report = await health();
    expect(report.status).toBe('healthy');
    expect(report.workers.map((w) => [w.id, w.state, w.healthy])).toEqual([
      ['worker-0', 'serving', true],
      ['worker-1', 'serving', true],
    ]);
    expect(new Set(report.workers.map((w) => w.pid)).size).toBe(2);
  });

  it('reports a killed worker and brings it back', async () => {
    const before = await worker('worker-0');
    process.kill(before.pid!, 'SIGKILL');

    const down = await waitFor(async () => {
      const w = await worker('worker-0');
      return w.state === 'restarting' ? w : undefined;
    }, { what: 'worker-0 to be reported restarting' });
    expect(down.healthy).toBe(false);
    expect(down.error).toMatch(/restarting|unavailable/);
    expect(down.lastExit).toMatchObject({ code: null, signal: 'SIGKILL' });
    expect(Date.parse(down.nextRestartAt!)).toBeGreaterThan(Date.parse(down.lastExit!.at));
    const degraded = await health();
    expect(degraded.status).toBe('degraded');

    const back = await waitFor(async () => {
      const w = await worker('worker-0');
      return w.healthy ? w : undefined;
    }, { timeoutMs: 60_000, what: 'worker-0 to serve again' });
    expect(back.restarts).toBe(1);
    expect(back.pid).not.toBe(before.pid);
    expect(processExists(before.pid!)).toBe(false);
    expect(back.lastExit).toMatchObject({ signal: 'SIGKILL' });

    const list = DeviceListSchema.parse((await getJson(`${real.url}/api/device/list`, bearer(signToken()))).body);
    expect(list.partial).toBe(false);
    expect(list.devices.map((d) => d.workerId).sort()).toEqual(['worker-0', 'worker-1']);
  });

  it('answers with the other worker\'s devices when one does not answer in time', async () => {
    const stopped = await worker('worker-1');
    process.kill(stopped.pid!, 'SIGSTOP');
    try {
      const started = performance.now();
      const { status, body } = await getJson(`${real.url}/api/device/list`, bearer(signToken()));
      const elapsed = performance.now() - started;
      expect(status).toBe(200);
      const list = DeviceListSchema.parse(body);
      expect(list.partial).toBe(true);
      expect(list.devices.map((d) => d.workerId)).toEqual(['worker-0']);
      expect(list.missingWorkers).toEqual([
        { workerId: 'worker-1', reason: `worker worker-1 did not answer ListDevices within ${DEADLINE_MS} ms` },
      ]);
      // Bounded by the deadline, not hanging on the stopped worker.
      expect(elapsed).toBeLessThan(DEADLINE_MS + MACHINE_MARGIN_MS);

      const report = await health();
      expect(report.status).toBe('degraded');
      const w1 = report.workers.find((w) => w.id === 'worker-1')!;
      expect(w1.healthy).toBe(false);
      expect(w1.error).toMatch(/did not answer Health\/Check within 1000 ms/);
    } finally {
      process.kill(stopped.pid!, 'SIGCONT');
    }
    const back = await waitFor(async () => ((await worker('worker-1')).healthy ? true : undefined), {
      what: 'worker-1 to answer again',
    });
    expect(back).toBe(true);
  });
});
