import { createHash } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Knex } from 'knex';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { SessionBody } from '../../src/features/sessions/session-schemas.js';
import { createPostgresTestUrl, postgresServer } from '../helpers/databases.js';
import { gatewayClient, serverStream, unary } from '../helpers/grpc-client.js';
import { spawnGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { startStandaloneWorker, type StandaloneWorker } from '../helpers/standalone-worker.js';
import { MACHINE_MARGIN_MS, waitFor } from '../helpers/wait.js';
import {
  alice,
  alive,
  database,
  embeddingJob,
  followAcross,
  ids,
  jobsRunOn,
  longImageJob,
  ownerOf,
  readSession,
  replicaEnvironment,
  startReplicaWorkers,
  submit,
  tinyImageJob,
} from './replica-support.js';

/**
 * Sessions belong to the deployment, not to one gateway process: several
 * real gateway processes (`node gateway/dist/server.js`) on one PostgreSQL,
 * in front of workers started the way containers start them
 * (WORKER_ADDRESSES), with replicas killed, restarted and added under load.
 */
const LEASE_SECONDS = 3;
const TERMINAL_STATUSES = new Set(['succeeded', 'failed', 'cancelled', 'interrupted']);

describe.skipIf(!postgresServer())('sessions across gateway replicas', () => {
  let databaseUrl: string;
  let drop: () => Promise<void>;
  let db: Knex;
  let workers: StandaloneWorker[] = [];
  const gateways: GatewayProcess[] = [];
  let outputs: string;

  const spawnReplica = async () => {
    const gateway = await spawnGatewayProcess(replicaEnvironment({ databaseUrl, workers, models: inject('demoModels'), outputs, leaseSeconds: LEASE_SECONDS }));
    gateways.push(gateway);
    return gateway;
  };
  const live = () => gateways.filter(alive);

  beforeAll(async () => {
    ({ url: databaseUrl, drop } = await createPostgresTestUrl());
    db = database(databaseUrl);
    outputs = mkdtempSync(join(tmpdir(), 'replica-outputs-'));
    workers = await startReplicaWorkers(inject('demoModels'), outputs);
    for (let i = 0; i < 3; i += 1) await spawnReplica();
  });

  afterAll(async () => {
    await Promise.all(gateways.map((g) => g.stop('SIGKILL')));
    await Promise.all(workers.map((w) => w.stop()));
    await db?.destroy();
    await drop?.();
  });

  it('runs 200 background sessions to one success each while replicas are killed, restarted and added', async () => {
    const ranBefore = (await Promise.all(workers.map(jobsRunOn))).reduce((a, b) => a + b, 0);
    const submitted: string[] = [];
    const followers: ReturnType<typeof followAcross>[] = [];
    // Every status read by anyone, in order: a terminal one must never change.
    const reads = new Map<string, string[]>();
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const sample = submitted.filter((_, i) => i % 5 === Math.floor(Date.now() / 300) % 5);
        for (const id of sample) {
          const gateway = live()[Math.floor(Math.random() * live().length)]!;
          try {
            const session = await readSession(gateway, id);
            reads.set(id, [...(reads.get(id) ?? []), session.status]);
          } catch {
            // the replica went away mid-read
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
    })();

    const [a, b] = gateways;
    for (let i = 0; i < 200; i += 1) {
      if (i === 50) await a!.stop('SIGKILL');
      if (i === 100) {
        await b!.stop('SIGTERM');
        await spawnReplica();
      }
      if (i === 150) await spawnReplica();
      const replicas = live();
      const session = await submit(replicas[i % replicas.length]!, i % 2 === 0 ? embeddingJob(i) : tinyImageJob(i));
      submitted.push(session.id);
      if (i % 10 === 0) followers.push(followAcross(session.id, () => gateways));
    }

    const ended = await waitFor(
      async () => {
        const rows = (await db('sessions').select('id', 'status').whereIn('id', submitted)) as { id: string; status: string }[];
        return rows.every((r) => TERMINAL_STATUSES.has(r.status)) ? rows : undefined;
      },
      { timeoutMs: 240_000, intervalMs: 500, what: 'every session to end' },
    );
    polling = false;
    await poller;

    const byStatus: Record<string, number> = {};
    for (const row of ended) byStatus[row.status] = (byStatus[row.status] ?? 0) + 1;
    expect(byStatus).toEqual({ succeeded: 200 });
    // Each ran exactly once: the workers counted 200 jobs, whatever was retried, taken over or reattached.
    const ran = (await Promise.all(workers.map(jobsRunOn))).reduce((x, y) => x + y, 0) - ranBefore;
    expect(ran).toBe(200);
    // Each session has exactly one terminal event, and its events are numbered without gaps.
    const events = (await db('session_events').select('session_id', 'sequence', 'type').whereIn('session_id', submitted).orderBy(['session_id', 'sequence'])) as {
      session_id: string;
      sequence: number;
      type: string;
    }[];
    // On a failure, what every replica logged about the session.
    const story = (id: string) =>
      `${id}: ${JSON.stringify(events.filter((e) => e.session_id === id))}\n` +
      gateways.flatMap((g, i) => g.lines.filter((l) => JSON.stringify(l).includes(id)).map((l) => `#${i} ${JSON.stringify(l)}`)).join('\n');
    for (const id of submitted) {
      const own = events.filter((e) => e.session_id === id);
      expect(own.map((e) => Number(e.sequence)), story(id)).toEqual(own.map((_, i) => i + 1));
      expect(own.filter((e) => ['result', 'error', 'cancelled'].includes(e.type)).map((e) => e.type), id).toEqual(['result']);
    }
    // Every follower saw the events in order, none twice, and one terminal event.
    for (const follower of followers) {
      const seen = await follower.done;
      expect(ids(seen)).toEqual(seen.map((_, i) => i + 1));
      expect(seen.filter((e) => ['result', 'error', 'cancelled'].includes(e.event)).map((e) => e.event)).toEqual(['result']);
    }
    // No status read as terminal ever changed afterwards.
    for (const [id, statuses] of reads) {
      const first = statuses.findIndex((s) => TERMINAL_STATUSES.has(s));
      if (first >= 0) expect(new Set(statuses.slice(first)), id).toEqual(new Set([statuses[first]]));
    }
    expect([...reads.values()].some((s) => s.includes('succeeded'))).toBe(true);
  }, 420_000);

  it('cancels through a replica that does not own the session: stopped on the worker within a second', async () => {
    const [first, second] = live();
    const session = await submit(first!, longImageJob);
    await waitFor(async () => ((await readSession(first!, session.id)).status === 'running' ? true : undefined), { timeoutMs: 60_000, what: 'the job to start' });
    const owner = await ownerOf(db, session.id, gateways);
    const other = live().find((g) => g !== owner)!;
    expect(owner).toBeDefined();
    expect(other).not.toBe(owner);
    const asked = performance.now();
    const response = await fetch(`${other.url}/api/inference/sessions/${session.id}`, { method: 'DELETE', headers: alice });
    expect(response.status).toBe(202);
    const cancelled = await waitFor(
      async () => {
        const current = await readSession(second!, session.id);
        return current.status === 'cancelled' ? performance.now() : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 20, what: 'the session to end cancelled' },
    );
    // The bound is 1 s; the margin is this machine's (two suites at once).
    expect(cancelled - asked).toBeLessThan(1000 + MACHINE_MARGIN_MS);
    expect((await readSession(other, session.id)).result).toMatchObject({ reason: expect.any(String) });
  }, 120_000);

  it('runs a session created over gRPC on one replica that another reads and serves; watches over gRPC a REST session created elsewhere', async () => {
    const [first, second] = live();
    const grpcAddress = String(first!.lines.find((l) => l.message === 'gateway listening')!.grpcAddress).replace('localhost', '127.0.0.1');
    const client = gatewayClient(grpcAddress);
    try {
      const created = await unary(client, 'createSession', { model: 'tiny-sd', textToImage: { prompt: 'across replicas', steps: 2, width: 64, height: 64, seed: 3 } }, alice);
      expect(created.error).toBeUndefined();
      const id = String(created.response!.id);
      const done = await waitFor(async () => {
        const session = await readSession(second!, id);
        return session.status === 'succeeded' ? session : undefined;
      }, { timeoutMs: 60_000, what: 'the gRPC session to succeed, read on the other replica' });
      expect(done.owner).toBe('jwt:alice');
      const file = (done.result as { files: { url: string; sha256: string }[] }).files[0]!;
      const png = Buffer.from(await (await fetch(`${second!.url}${file.url}`, { headers: alice })).arrayBuffer());
      expect(png.subarray(1, 4).toString()).toBe('PNG');
      expect(createHash('sha256').update(png).digest('hex')).toBe(file.sha256);

      const restSession = await submit(second!, tinyImageJob(901));
      const watched = await serverStream(client, 'watchSession', { id: restSession.id }, alice);
      expect(watched.status.code).toBe(0);
      expect(watched.events.at(-1)!.type).toBe('result');
      expect(watched.events.map((e) => e.sequence)).toEqual(watched.events.map((_e, i) => i + 1));
      const resumed = await serverStream(client, 'watchSession', { id: restSession.id, afterSequence: 2 }, alice);
      expect(resumed.events.map((e) => e.sequence)).toEqual(watched.events.slice(2).map((e) => e.sequence));
    } finally {
      client.close();
    }
  }, 120_000);

  it("reattaches the job of an owner killed mid-job: the session ends succeeded with its output, followers elsewhere see no gap", async () => {
    const session = await submit(live()[0]!, { ...longImageJob, parameters: { ...longImageJob.parameters, steps: 30, seed: 99 } });
    await waitFor(async () => ((await readSession(live()[0]!, session.id)).status === 'running' ? true : undefined), { timeoutMs: 60_000, what: 'the job to start' });
    const owner = (await ownerOf(db, session.id, gateways))!;
    const follower = followAcross(session.id, () => gateways.filter((g) => g !== owner));
    await waitFor(async () => (follower.events.some((e) => e.event === 'progress') ? true : undefined), { timeoutMs: 30_000, what: 'progress on the follower' });
    // A second client, on the owner itself, reconnects elsewhere with Last-Event-ID after the kill.
    const onOwner = followAcross(session.id, () => [owner, ...gateways.filter((g) => g !== owner)]);
    await waitFor(async () => (onOwner.events.length > 0 ? true : undefined), { timeoutMs: 30_000, what: 'events on the owner' });
    const killedAt = performance.now();
    const seenAtKill = follower.events.length;
    await owner.stop('SIGKILL');
    // Taken over once the lease ran out: the follower's next event comes from the new owner.
    const tookMs = await waitFor(async () => (follower.events.length > seenAtKill ? performance.now() - killedAt : undefined), {
      timeoutMs: 60_000,
      intervalMs: 20,
      what: 'the next event after the owner died',
    });

    const [seen, reconnected] = await Promise.all([follower.done, onOwner.done]);
    for (const events of [seen, reconnected]) {
      expect(ids(events)).toEqual(events.map((_, i) => i + 1));
      expect(events.at(-1)!.event).toBe('result');
    }
    const finished = await readSession(live()[0]!, session.id);
    expect(finished.status).toBe('succeeded');
    const file = (finished.result as { files: { url: string }[] }).files[0]!;
    expect((await fetch(`${live()[0]!.url}${file.url}`, { headers: alice })).status).toBe(200);
    // Within SESSION_LEASE_SECONDS + 5 s, as the issue asks, plus this machine's margin.
    expect(tookMs).toBeLessThan((LEASE_SECONDS + 5) * 1000 + MACHINE_MARGIN_MS);
    const row = (await db('sessions').select('dispatch_count').where({ id: session.id }).first()) as { dispatch_count: number };
    expect(Number(row.dispatch_count)).toBe(1);
    await spawnReplica();
  }, 180_000);

  it('gives every follower, on any replica, a terminal error naming the worker when the worker dies mid-job', async () => {
    const doomed = await startStandaloneWorker({
      id: 'worker-doomed',
      dir: mkdtempSync(join(tmpdir(), 'doomed-')),
      modelDirectory: inject('demoModels'),
      outputDirectory: outputs,
    });
    const extra = await spawnGatewayProcess(replicaEnvironment({ databaseUrl, workers: [doomed], models: inject('demoModels'), outputs, leaseSeconds: LEASE_SECONDS }));
    gateways.push(extra);
    try {
      // Execute through the replica that knows the doomed worker; follow through another.
      const started = fetch(`${extra.url}/api/inference/execute`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...alice },
        body: JSON.stringify(longImageJob),
      });
      const id = await waitFor(async () => {
        // Remote workers are known by their address.
        const row = (await db('sessions').select('id').where({ worker_id: doomed.address, status: 'running' }).first()) as { id: string } | undefined;
        return row?.id;
      }, { timeoutMs: 60_000, what: 'the job to run on the doomed worker' });
      const follower = followAcross(id, () => gateways.filter((g) => g !== extra));
      await waitFor(async () => (follower.events.some((e) => e.event === 'progress') ? true : undefined), { timeoutMs: 30_000, what: 'progress' });
      await doomed.stop('SIGKILL');
      const seen = await follower.done;
      expect(seen.at(-1)!.event).toBe('error');
      expect((seen.at(-1)!.data as { message: string }).message).toContain(`worker ${doomed.address} was lost while running the job`);
      // The execute client gets the same cause (a worker gone is 503 worker-unavailable: retry elsewhere).
      const answer = await started;
      expect(answer.status).toBe(503);
      expect(((await answer.json()) as { detail: string }).detail).toContain(`worker ${doomed.address} was lost while running the job`);
    } finally {
      await extra.stop('SIGKILL');
      await doomed.stop('SIGKILL');
    }
  }, 180_000);
});

describe.skipIf(!postgresServer())('a full worker queue across replicas', () => {
  let databaseUrl: string;
  let drop: () => Promise<void>;
  let worker: StandaloneWorker;
  const gateways: GatewayProcess[] = [];

  beforeAll(async () => {
    ({ url: databaseUrl, drop } = await createPostgresTestUrl());
    const outputs = mkdtempSync(join(tmpdir(), 'queue-outputs-'));
    worker = await startStandaloneWorker({
      id: 'worker-small',
      dir: mkdtempSync(join(tmpdir(), 'small-')),
      modelDirectory: inject('demoModels'),
      outputDirectory: outputs,
      env: { MAX_QUEUE_PER_DEVICE: '2', MAX_BATCH_SIZE: '1' },
    });
    for (const queueTimeout of ['600', '2']) {
      gateways.push(
        await spawnGatewayProcess({
          ...replicaEnvironment({ databaseUrl, workers: [worker], models: inject('demoModels'), outputs, leaseSeconds: LEASE_SECONDS }),
          QUEUE_TIMEOUT_SECONDS: queueTimeout,
        }),
      );
    }
  });

  afterAll(async () => {
    await Promise.all(gateways.map((g) => g.stop('SIGKILL')));
    await worker?.stop();
    await drop?.();
  });

  it('accepts 50 sessions against a queue of 2, runs them all, and reports their positions', async () => {
    const [patient] = gateways;
    const sessions: SessionBody[] = [];
    for (let i = 0; i < 50; i += 1) sessions.push(await submit(patient!, tinyImageJob(i)));
    // Accepted = stored: every one answered 202 with its place in the queue.
    expect(sessions.every((s) => typeof s.queuePosition === 'number')).toBe(true);
    expect(Math.max(...sessions.map((s) => s.queuePosition!))).toBeGreaterThan(10);
    const ended = await waitFor(
      async () => {
        const all = await Promise.all(sessions.map((s) => readSession(patient!, s.id)));
        return all.every((s) => TERMINAL_STATUSES.has(s.status)) ? all : undefined;
      },
      { timeoutMs: 240_000, intervalMs: 500, what: 'all 50 to end' },
    );
    expect(ended.map((s) => s.status)).toEqual(ended.map(() => 'succeeded'));
    // Their queued events carried positions.
    const events = await (await fetch(`${patient!.url}/api/inference/sessions/${sessions.at(-1)!.id}/events`, { headers: alice })).text();
    expect(events).toMatch(/event: queued\ndata: \{[^\n]*"position":\d+/);
  }, 300_000);

  it('fails what waited past QUEUE_TIMEOUT_SECONDS, naming the reason', async () => {
    const impatient = gateways[1]!;
    // Keep the worker busy, then queue more than it can take before the 2 s deadline.
    const sessions: SessionBody[] = [];
    for (let i = 0; i < 12; i += 1) sessions.push(await submit(impatient, { ...longImageJob, parameters: { ...longImageJob.parameters, steps: 20, seed: i } }));
    const ended = await waitFor(
      async () => {
        const all = await Promise.all(sessions.map((s) => readSession(impatient, s.id)));
        return all.every((s) => TERMINAL_STATUSES.has(s.status)) ? all : undefined;
      },
      { timeoutMs: 240_000, intervalMs: 500, what: 'all 12 to end' },
    );
    const expired = ended.filter((s) => s.status === 'failed');
    expect(expired.length).toBeGreaterThan(0);
    for (const s of expired) expect(s.error).toMatchObject({ code: 'QUEUE_TIMEOUT', message: expect.stringMatching(/QUEUE_TIMEOUT_SECONDS/) });
    expect(ended.filter((s) => s.status === 'succeeded').length).toBeGreaterThan(0);
  }, 300_000);
});
