import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, describe, expect, it } from 'vitest';
import { SessionPageSchema, SessionSchema } from '../../src/features/sessions/session-schemas.js';
import { getJson } from '../helpers/http.js';
import { metric } from '../helpers/metrics.js';
import type { RealGateway } from '../helpers/real-gateway.js';
import { waitFor } from '../helpers/wait.js';
import { alice, health, longJob, openExecuteStream, post, session, startFaultGateway } from './fault-support.js';

setFlagsFromString('--expose_gc');
const collectGarbage = runInNewContext('gc') as () => void;

/** Heap in use once garbage is collected: what is really retained. */
async function retainedHeap(): Promise<number> {
  for (let i = 0; i < 3; i += 1) {
    collectGarbage();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return process.memoryUsage().heapUsed;
}

/** A job that holds its slot for a moment. */
const mediumJob = { ...longJob, parameters: { ...longJob.parameters, steps: 6, width: 128, height: 128 } };

async function allSessions(url: string) {
  const items = [];
  for (let offset = 0; ; offset += 200) {
    const page = SessionPageSchema.parse((await getJson(`${url}/api/inference/sessions?limit=200&offset=${offset}`, alice)).body);
    items.push(...page.items);
    if (items.length >= page.total) return items;
  }
}

describe('overload', () => {
  let real: RealGateway | undefined;
  afterEach(async () => {
    await real?.gateway.close();
    real = undefined;
  });

  it('refuses a flood of execute requests beyond the bound at once with 503 and Retry-After, and finishes every job it accepted', async () => {
    real = await startFaultGateway({ WORKER_COUNT: '1', MAX_ACTIVE_SESSIONS: '4' });
    const { url } = real;
    const rssBefore = process.memoryUsage().rss;
    const responses = await Promise.all(
      Array.from({ length: 300 }, async () => {
        const response = await post(url, '/api/inference/execute', mediumJob);
        return { status: response.status, at: Date.now(), retryAfter: response.headers.get('retry-after'), body: (await response.json()) as Record<string, unknown> };
      }),
    );
    const accepted = responses.filter((r) => r.status === 200);
    const refused = responses.filter((r) => r.status === 503);
    expect(accepted.length + refused.length).toBe(responses.length); // nothing else: no 429, no 500
    expect(accepted.length).toBeGreaterThanOrEqual(4);
    expect(refused.length).toBeGreaterThan(200);
    for (const r of refused) {
      expect(r.retryAfter).toBe('1');
      expect(r.body).toMatchObject({ type: '/problems/service-unavailable', status: 503 });
      expect(String(r.body.detail)).toMatch(/already runs 4 jobs, its limit/);
    }

    // Every accepted job ends, succeeded: none lost, none stuck.
    const ids = accepted.map((r) => SessionSchema.parse(r.body).id);
    const ended = await waitFor(
      async () => {
        const all = await Promise.all(ids.map((id) => session(url, id)));
        return all.every((s) => s.finishedAt !== null) ? all : undefined;
      },
      { timeoutMs: 120_000, what: 'every accepted job to end' },
    );
    expect(ended.map((s) => s.status)).toEqual(ids.map(() => 'succeeded'));
    // Refused at once: every 503 was answered before the first accepted job ended.
    const firstEnd = Math.min(...ended.map((s) => Date.parse(s.finishedAt!)));
    expect(Math.max(...refused.map((r) => r.at))).toBeLessThan(firstEnd);
    // Refusals left no session behind, and are counted for the dashboards.
    expect((await allSessions(url)).length).toBe(accepted.length);
    expect(await metric(url, 'device_ops_gateway_backpressure_rejections_total', '{reason="gateway-queue"}')).toBe(refused.length);
    // Bounded: 300 requests, 4 admitted; the gateway holds nothing for the rest.
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(150 * 1024 * 1024);
  }, 180_000);

  it('1,000 clients that disconnect mid-stream: every job is cancelled on the worker, nothing is left behind', async () => {
    real = await startFaultGateway({
      WORKER_COUNT: '1',
      MAX_QUEUE_PER_DEVICE: '2000',
      MAX_ACTIVE_SESSIONS: '2000',
      MAX_INFLIGHT_PER_WORKER: '2000',
      MAX_SSE_STREAMS: '2000',
      MAX_SSE_STREAMS_PER_PRINCIPAL: '2000',
    });
    const { url, gateway } = real;
    const round = async (count: number) => {
      // Opened in waves: the clients share this process's event loop with the
      // gateway, and 1,000 connections opened in one turn can leave a client's
      // own request unsent past the server's 5 s headers timeout (408). All
      // of them are open, their jobs queued, when they disconnect together.
      const streams: ReturnType<typeof openExecuteStream>[] = [];
      for (let wave = 0; wave < count; wave += 100) {
        const opened = Array.from({ length: Math.min(100, count - wave) }, () => openExecuteStream(url, longJob));
        streams.push(...opened);
        await waitFor(async () => (opened.every((s) => s.seen.length > 0) ? true : undefined), { timeoutMs: 60_000, intervalMs: 50, what: 'a wave of streams to open' });
      }
      await waitFor(async () => (streams.every((s) => s.seen.some((e) => e.event === 'queued')) ? true : undefined), {
        timeoutMs: 120_000,
        intervalMs: 200,
        what: `${count} queued jobs`,
      });
      for (const s of streams) s.abort.abort();
      await Promise.allSettled(streams.map((s) => s.done));
      // Nothing left: no live session, stream, in-flight call or queued job.
      await waitFor(async () => (gateway.services.sessions.activeCount === 0 ? true : undefined), {
        timeoutMs: 60_000,
        intervalMs: 500,
        what: 'no live session',
      }).catch((error: Error) => {
        // Say what was left, for whoever reads the failure.
        const stuck = streams.filter((s) => gateway.services.sessions.isLive(String((s.seen[0]?.data as { sessionId?: string })?.sessionId)));
        const trouble = real!.logs.find((l) => l.level === 'error' || l.level === 'warn').slice(-5);
        throw new Error(`${error.message}; ${gateway.services.sessions.activeCount} live, e.g. events ${stuck.slice(0, 2).map((s) => s.seen.map((e) => e.event).join(',')).join(' | ')}; last warnings ${JSON.stringify(trouble)}`);
      });
      await waitFor(
        async () => {
          const w = (await health(url)).workers[0]!;
          return w.inFlightJobs === 0 && w.queuedJobs === 0 && w.runningJobs === 0 ? w : undefined;
        },
        { timeoutMs: 60_000, what: 'the worker to hold no job' },
      );
      expect(await metric(url, 'device_ops_gateway_sse_streams')).toBe(0);
      expect(await metric(url, 'device_ops_gateway_sessions', '{state="queued"}')).toBe(0);
      expect(await metric(url, 'device_ops_gateway_sessions', '{state="running"}')).toBe(0);
      return streams;
    };

    const first = await round(1000);
    const heapAfterFirst = await retainedHeap();
    const sessions = await allSessions(url);
    expect(sessions).toHaveLength(1000);
    expect(new Set(sessions.map((s) => s.status))).toEqual(new Set(['cancelled']));
    expect(first.every((s) => s.seen.some((e) => e.event === 'accepted'))).toBe(true);

    // Memory flat: a second thousand does not grow the heap by what the first left.
    await round(1000);
    const growth = (await retainedHeap()) - heapAfterFirst;
    expect(growth).toBeLessThan(16 * 1024 * 1024);
    expect((await allSessions(url)).filter((s) => s.status !== 'cancelled')).toEqual([]);
  }, 600_000);
});
