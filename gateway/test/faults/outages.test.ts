import { afterAll, describe, expect, it } from 'vitest';
import { SessionSchema } from '../../src/features/sessions/session-schemas.js';
import { getJson } from '../helpers/http.js';
import { postgresBinariesForTests, startPostgres, type RunningPostgres } from '../helpers/postgres.js';
import type { RealGateway } from '../helpers/real-gateway.js';
import { redisServerForTests, startRedis, type RunningRedis } from '../helpers/redis.js';
import { waitFor, MACHINE_MARGIN_MS } from '../helpers/wait.js';
import { alice, health, longJob, post, quickJob, session, startFaultGateway } from './fault-support.js';

interface Outcome {
  what: string;
  status: number;
  ms: number;
  at: number;
  type?: string;
}

/** Requests in a loop until stopped: what clients saw during the fault. */
function load(url: string, requests: { what: string; send: () => Promise<Response> }[]) {
  const outcomes: Outcome[] = [];
  let running = true;
  const loops = requests.map(async ({ what, send }) => {
    while (running) {
      const started = performance.now();
      const response = await send();
      const body = (await response.json().catch(() => ({}))) as { type?: string };
      outcomes.push({ what, status: response.status, ms: performance.now() - started, at: Date.now(), ...(body.type ? { type: body.type } : {}) });
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  });
  return {
    outcomes,
    since: (at: number) => outcomes.filter((o) => o.at >= at),
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}

const postgresBin = postgresBinariesForTests();

describe.skipIf(!postgresBin)('PostgreSQL stopped and restarted under load', () => {
  let pg: RunningPostgres | undefined;
  let real: RealGateway | undefined;
  afterAll(async () => {
    await real?.gateway.close();
    pg?.stop();
  });

  it('fails what needs the database fast with 503, says why in readiness, and recovers by itself', async () => {
    pg = await startPostgres(postgresBin!);
    real = await startFaultGateway({
      WORKER_COUNT: '1',
      DATABASE_URL: `postgres://${pg.info.user}@${pg.info.host}:${pg.info.port}/postgres`,
    });
    const { url } = real;
    expect((await getJson(`${url}/health/ready`)).status).toBe(200);
    // A job accepted before the outage that ends during it.
    const before = await post(url, '/api/inference/sessions', { ...longJob, parameters: { ...longJob.parameters, steps: 40, width: 128, height: 128 } });
    expect(before.status).toBe(202);
    const running = SessionSchema.parse(await before.json());

    const traffic = load(url, [
      { what: 'create', send: () => post(url, '/api/inference/sessions', quickJob) },
      { what: 'devices', send: () => fetch(`${url}/api/device/list`, { headers: alice }) },
      { what: 'live', send: () => fetch(`${url}/health`) },
    ]);
    await waitFor(async () => (traffic.outcomes.some((o) => o.what === 'create' && o.status === 202) ? true : undefined), { what: 'traffic' });

    await pg.down();
    const downAt = Date.now();
    const notReady = await waitFor(
      async () => {
        const ready = await getJson(`${url}/health/ready`);
        return ready.status === 503 ? ready : undefined;
      },
      { timeoutMs: 15_000, what: 'readiness to fail' },
    );
    expect(JSON.stringify(notReady.body)).toMatch(/the database does not answer/);
    await waitFor(async () => (traffic.since(downAt).filter((o) => o.what === 'create' && o.status === 503).length >= 5 ? true : undefined), {
      timeoutMs: 30_000,
      what: 'five refused creations',
    });
    const detailed = await health(url);
    expect(detailed.dependencies.find((d) => d.name === 'database')).toMatchObject({ healthy: false });
    // The job accepted before the outage ends during it; its end waits for the database.
    await waitFor(
      async () => (real!.logs.find((l) => l.message === 'could not record the end of a session; retrying' && l.sessionId === running.id).length > 0 ? true : undefined),
      { timeoutMs: 60_000, what: 'the running job to end during the outage' },
    );

    await pg.up();
    const upAt = Date.now();
    await waitFor(async () => ((await getJson(`${url}/health/ready`)).status === 200 ? true : undefined), { timeoutMs: 30_000, what: 'ready again' });
    await waitFor(async () => (traffic.since(upAt + 500).some((o) => o.what === 'create' && o.status === 202) ? true : undefined), {
      timeoutMs: 30_000,
      what: 'creations accepted again',
    });
    await traffic.stop();

    const during = traffic.outcomes.filter((o) => o.at > downAt && o.at < upAt);
    const refused = during.filter((o) => o.what === 'create' && o.status === 503);
    expect(refused.length).toBeGreaterThanOrEqual(5);
    // Fast, and clear: a problem naming the database, never a 500.
    for (const o of refused) {
      expect(o.type).toBe('/problems/database-unavailable');
      // Bounded by the 5 s connect timeout (DatabaseOptions), never a hang.
      expect(o.ms).toBeLessThan(5000 + MACHINE_MARGIN_MS);
    }
    expect(traffic.outcomes.filter((o) => o.status >= 500 && o.status !== 503)).toEqual([]);
    expect(during.filter((o) => o.what === 'create').every((o) => o.status === 202 || o.status === 503)).toBe(true);
    // What does not need the database went on: liveness and device listing.
    expect(during.filter((o) => o.what !== 'create').every((o) => o.status === 200)).toBe(true);

    // The job that ended during the outage is recorded once the database is back: not stuck.
    const ended = await waitFor(
      async () => {
        const s = await session(url, running.id);
        return s.finishedAt ? s : undefined;
      },
      { timeoutMs: 60_000, what: 'the job that ran through the outage to be recorded' },
    );
    expect(ended.status).toBe('succeeded');
  }, 240_000);
});

const redisBinary = redisServerForTests();

describe.skipIf(!redisBinary)('Redis stopped and restarted under load', () => {
  let redis: RunningRedis | undefined;
  let real: RealGateway | undefined;
  afterAll(async () => {
    await real?.gateway.close();
    await redis?.stop();
  });

  it('never fails a request: rate limits fall back to local counters and return to Redis', async () => {
    redis = await startRedis(redisBinary!);
    real = await startFaultGateway({ WORKER_COUNT: '1', REDIS_URL: redis.url });
    const { url } = real;
    const store = async () => (await health(url)).dependencies.find((d) => d.name === 'rate-limit store')!;
    expect((await store()).healthy).toBe(true);

    const traffic = load(url, [
      { what: 'execute', send: () => post(url, '/api/inference/execute', quickJob) },
      { what: 'devices', send: () => fetch(`${url}/api/device/list`, { headers: alice }) },
    ]);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await redis.down();
    const downAt = Date.now();
    await waitFor(async () => ((await store()).healthy ? undefined : true), { timeoutMs: 20_000, what: 'the store to be reported degraded' });
    expect((await health(url)).status).toBe('degraded');
    expect((await getJson(`${url}/health/ready`)).status).toBe(200); // rate limiting degraded is not unready
    await new Promise((resolve) => setTimeout(resolve, 2000));
    await redis.up();
    const upAt = Date.now();
    await waitFor(async () => ((await store()).healthy ? true : undefined), { timeoutMs: 30_000, what: 'the store back on Redis' });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await traffic.stop();

    expect(traffic.outcomes.filter((o) => o.at > downAt && o.at < upAt).length).toBeGreaterThan(10);
    expect(traffic.outcomes.filter((o) => o.status !== 200)).toEqual([]);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/^device_ops_gateway_rate_limit_store_healthy 1$/m);
  }, 180_000);
});
