/**
 * The fault report's "replicas" part: several gateway processes
 * (gateway/dist/server.js) on one throwaway PostgreSQL, in front of two
 * workers started as containers start them (WORKER_ADDRESSES).
 *
 * 1. 200 background sessions (embeddings and tiny text-to-image, round
 *    robin) while one replica is SIGKILLed, one restarted (SIGTERM, start
 *    again) and a fourth started: sessions submitted / succeeded /
 *    interrupted / failed, jobs run twice (the workers' own counts against
 *    the sessions), events lost or duplicated for 20 followers that move
 *    between replicas as EventSource does.
 * 2. Takeover: a long job on each worker, dispatched by one replica which is
 *    then SIGKILLed; time until another replica stores each session's next
 *    event (rounds repeated for several samples).
 * 3. Cancel through a replica that does not own the session: time from the
 *    DELETE to the session read `cancelled`.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnGatewayProcess, type GatewayProcess } from '../test/helpers/gateway-process.js';
import { findPostgresBinaries, postgresUrl, startPostgres, withAdminConnection } from '../test/helpers/postgres.js';
import type { StandaloneWorker } from '../test/helpers/standalone-worker.js';
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
} from '../test/replicas/replica-support.js';
import { median, sleep } from './fault-report-lib.js';

const LEASE_SECONDS = 3;
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled', 'interrupted']);

export interface ReplicaFigures {
  submitted: number;
  statusCounts: Record<string, number>;
  runTwice: number;
  followers: number;
  eventsLost: number;
  eventsDuplicated: number;
  takeoverMs: number[];
  takeoverStatus: Record<string, number>;
  cancelMs: number[];
  leaseSeconds: number;
}

async function until<T>(check: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

export async function replicas(models: string): Promise<ReplicaFigures> {
  const bin = findPostgresBinaries();
  if (!bin) throw new Error('the replicas part needs PostgreSQL server binaries (apt-get install postgresql)');
  const pg = await startPostgres(bin);
  const outputs = mkdtempSync(join(tmpdir(), 'report-outputs-'));
  const gateways: GatewayProcess[] = [];
  let workers: StandaloneWorker[] = [];
  try {
    await withAdminConnection(pg.info, (admin) => admin.raw('create database replicas'));
    const url = postgresUrl(pg.info, 'replicas');
    const db = database(url);
    workers = await startReplicaWorkers(models, outputs);
    const spawn = async () => {
      const gateway = await spawnGatewayProcess(replicaEnvironment({ databaseUrl: url, workers, models, outputs, leaseSeconds: LEASE_SECONDS }));
      gateways.push(gateway);
      return gateway;
    };
    const live = () => gateways.filter(alive);

    // 1. 200 sessions through replicas that come and go.
    for (let i = 0; i < 3; i += 1) await spawn();
    const ranBefore = (await Promise.all(workers.map(jobsRunOn))).reduce((a, b) => a + b, 0);
    const submitted: string[] = [];
    const followers: ReturnType<typeof followAcross>[] = [];
    const [a, b] = gateways;
    for (let i = 0; i < 200; i += 1) {
      if (i === 50) await a!.stop('SIGKILL');
      if (i === 100) {
        await b!.stop('SIGTERM');
        await spawn();
      }
      if (i === 150) await spawn();
      const replicasNow = live();
      const session = await submit(replicasNow[i % replicasNow.length]!, i % 2 === 0 ? embeddingJob(i) : tinyImageJob(i));
      submitted.push(session.id);
      if (i % 10 === 0) followers.push(followAcross(session.id, () => gateways));
    }
    const rows = await until(
      async () => {
        const found = (await db('sessions').select('status').whereIn('id', submitted)) as { status: string }[];
        return found.every((r) => TERMINAL.has(r.status)) ? found : undefined;
      },
      300_000,
      'every session to end',
    );
    const statusCounts: Record<string, number> = {};
    const takeoverStatus: Record<string, number> = {};
    for (const row of rows) statusCounts[row.status] = (statusCounts[row.status] ?? 0) + 1;
    const ran = (await Promise.all(workers.map(jobsRunOn))).reduce((x, y) => x + y, 0) - ranBefore;
    let eventsLost = 0;
    let eventsDuplicated = 0;
    for (const follower of followers) {
      const seen = ids(await follower.done);
      eventsDuplicated += seen.length - new Set(seen).size;
      eventsLost += Math.max(...seen) - new Set(seen).size;
    }

    // 2. Takeover: jobs dispatched by one replica, which then dies; three rounds.
    const takeoverMs: number[] = [];
    for (let round = 0; round < 3; round += 1) {
      for (const gateway of live()) await gateway.stop('SIGTERM');
      const owner = await spawn();
      const takeoverIds: string[] = [];
      // One long job per worker, so both run (not queue) when the owner dies.
      for (let i = 0; i < workers.length; i += 1) {
        takeoverIds.push((await submit(owner, { ...longImageJob, parameters: { ...longImageJob.parameters, seed: 100 + 10 * round + i } })).id);
      }
      await until(async () => ((await Promise.all(takeoverIds.map((id) => readSession(owner, id)))).every((s) => s.status === 'running') ? true : undefined), 120_000, 'the long jobs to run');
      await spawn();
      const killedAt = Date.now();
      await owner.stop('SIGKILL');
      takeoverMs.push(
        ...(await Promise.all(
          takeoverIds.map((id) =>
            until(
              async () => {
                const row = (await db('session_events').max({ at: 'created_at' }).where('session_id', id).first()) as { at: Date | string | null } | undefined;
                const at = row?.at ? new Date(row.at).getTime() : 0;
                return at > killedAt ? at - killedAt : undefined;
              },
              120_000,
              'the takeover',
            ),
          ),
        )),
      );
      await until(async () => ((await Promise.all(takeoverIds.map((id) => readSession(live()[0]!, id)))).every((s) => TERMINAL.has(s.status)) ? true : undefined), 300_000, 'the taken-over jobs to end');
      const ended = (await db('sessions').select('status').whereIn('id', takeoverIds)) as { status: string }[];
      for (const row of ended) takeoverStatus[row.status] = (takeoverStatus[row.status] ?? 0) + 1;
    }

    // 3. Cancel through a replica that does not own the session.
    await spawn();
    const cancelMs: number[] = [];
    for (let i = 0; i < 5; i += 1) {
      const session = await submit(live()[0]!, { ...longImageJob, parameters: { ...longImageJob.parameters, seed: 200 + i } });
      await until(async () => ((await readSession(live()[0]!, session.id)).status === 'running' ? true : undefined), 120_000, 'a job to run');
      const holder = await ownerOf(db, session.id, gateways);
      const other = live().find((g) => g !== holder)!;
      const asked = performance.now();
      await fetch(`${other.url}/api/inference/sessions/${session.id}`, { method: 'DELETE', headers: alice });
      cancelMs.push(await until(async () => ((await readSession(other, session.id)).status === 'cancelled' ? performance.now() - asked : undefined), 60_000, 'the cancel'));
    }
    await db.destroy();
    return {
      submitted: submitted.length,
      statusCounts,
      runTwice: Math.max(0, ran - submitted.length),
      followers: followers.length,
      eventsLost,
      eventsDuplicated,
      takeoverMs,
      takeoverStatus,
      cancelMs,
      leaseSeconds: LEASE_SECONDS,
    };
  } finally {
    await Promise.all(gateways.map((g) => g.stop('SIGKILL')));
    await Promise.all(workers.map((w) => w.stop()));
    pg.stop();
  }
}

export const replicaRows = (r: ReplicaFigures): [string, string][] => [
  [`5. replicas: ${r.submitted} sessions, 3 replicas on PostgreSQL, one killed, one restarted, one added`, JSON.stringify(r.statusCounts)],
  ['   jobs run twice (the workers\' counts); interrupted', `${r.runTwice}; ${r.statusCounts.interrupted ?? 0}`],
  [`   events lost / duplicated, ${r.followers} followers moving between replicas`, `${r.eventsLost} / ${r.eventsDuplicated}`],
  [`   takeover after SIGKILL of the owner (lease ${r.leaseSeconds} s), ${r.takeoverMs.length} jobs, median / max`, `${Math.round(median(r.takeoverMs))} / ${Math.round(Math.max(...r.takeoverMs))} ms`],
  ['   taken-over jobs ended', JSON.stringify(r.takeoverStatus)],
  ['   cancel through a non-owner until cancelled, median / max', `${Math.round(median(r.cancelMs))} / ${Math.round(Math.max(...r.cancelMs))} ms`],
];

/** Sessions that failed the replicas' promises: anything but succeeded, and any job run twice. */
export const replicaLost = (r: ReplicaFigures) =>
  r.submitted - (r.statusCounts.succeeded ?? 0) + r.runTwice + r.eventsLost + r.eventsDuplicated + r.takeoverMs.length - (r.takeoverStatus.succeeded ?? 0);
