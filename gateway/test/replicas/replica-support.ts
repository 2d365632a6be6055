import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import { SessionSchema, type SessionBody } from '../../src/features/sessions/session-schemas.js';
import type { GatewayProcess } from '../helpers/gateway-process.js';
import { bearer } from '../helpers/http.js';
import { samples } from '../helpers/metrics.js';
import { readSse, type SseEvent } from '../helpers/sse.js';
import { startStandaloneWorker, type StandaloneWorker } from '../helpers/standalone-worker.js';
import { signToken } from '../helpers/tokens.js';

/**
 * The environment of one replica: one PostgreSQL, the workers by address
 * (as containers are started), a short lease, limits out of the way.
 */
export function replicaEnvironment(options: { databaseUrl: string; workers: StandaloneWorker[]; models: string; outputs: string; leaseSeconds: number }): Record<string, string> {
  return {
    DATABASE_URL: options.databaseUrl,
    WORKER_ADDRESSES: options.workers.map((w) => w.address).join(','),
    MODEL_DIRECTORY: options.models,
    OUTPUT_DIRECTORY: options.outputs,
    DATA_DIRECTORY: mkdtempSync(join(tmpdir(), 'replica-data-')),
    SESSION_LEASE_SECONDS: String(options.leaseSeconds),
    SHUTDOWN_GRACE_SECONDS: '1',
    WORKER_HEALTH_INTERVAL_MS: '500',
    RATE_LIMIT_PER_PRINCIPAL: '1000000',
    RATE_LIMIT_INFERENCE_PER_PRINCIPAL: '1000000',
    RATE_LIMIT_PER_IP: '1000000',
    // Info: the harness waits for the "gateway listening" line.
    LOG_LEVEL: 'info',
  };
}

/** Two workers started as containers start them, writing to one shared output folder. */
export const startReplicaWorkers = (models: string, outputs: string): Promise<StandaloneWorker[]> =>
  Promise.all(
    ['worker-a', 'worker-b'].map((id) => startStandaloneWorker({ id, dir: mkdtempSync(join(tmpdir(), `${id}-`)), modelDirectory: models, outputDirectory: outputs, metrics: true })),
  );

export const alice = bearer(signToken({ sub: 'alice', scope: 'inference', expiresInSeconds: 3600 }));

export const embeddingJob = (i: number) => ({ task: 'text-embedding', model: 'minilm', parameters: { texts: [`text number ${i}`] } });
export const tinyImageJob = (i: number) => ({
  task: 'text-to-image',
  model: 'tiny-sd',
  parameters: { prompt: `picture ${i}`, steps: 2, width: 64, height: 64, seed: i },
});
/** A text-to-image job of several seconds on this machine's CPU. */
export const longImageJob = { task: 'text-to-image', model: 'tiny-sd', parameters: { prompt: 'a slow one', steps: 60, width: 256, height: 256, seed: 7 } };

const TERMINAL = new Set(['result', 'error', 'cancelled']);

export async function submit(gateway: GatewayProcess, job: unknown): Promise<SessionBody> {
  const response = await fetch(`${gateway.url}/api/inference/sessions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...alice },
    body: JSON.stringify(job),
  });
  if (response.status !== 202) {
    const problem = (await response.json()) as { errorId?: string };
    const logged = gateway.lines.filter((l) => l.errorId === problem.errorId);
    throw new Error(`POST /api/inference/sessions answered ${response.status}: ${JSON.stringify(problem)}; logged ${JSON.stringify(logged)}`);
  }
  return SessionSchema.parse(await response.json());
}

export async function readSession(gateway: GatewayProcess, id: string): Promise<SessionBody> {
  const response = await fetch(`${gateway.url}/api/inference/sessions/${id}`, { headers: alice });
  if (response.status !== 200) throw new Error(`GET session answered ${response.status}`);
  return SessionSchema.parse(await response.json());
}

/** Whether a gateway process still runs. */
export const alive = (gateway: GatewayProcess) => gateway.child.exitCode === null && gateway.child.signalCode === null;

/**
 * A client following one session as EventSource does: through any live
 * replica, reconnecting elsewhere with Last-Event-ID when its replica goes
 * away, until the terminal event. Keeps every event it was given.
 */
export function followAcross(sessionId: string, gateways: () => GatewayProcess[]): { events: SseEvent[]; done: Promise<SseEvent[]> } {
  const events: SseEvent[] = [];
  const done = (async () => {
    for (let attempt = 0; attempt < 200; attempt += 1) {
      const live = gateways().filter(alive);
      const gateway = live[(attempt + sessionId.charCodeAt(0)) % live.length]!;
      const last = events.at(-1)?.id;
      try {
        const response = await fetch(`${gateway.url}/api/inference/sessions/${sessionId}/events`, {
          headers: { ...alice, ...(last ? { 'last-event-id': last } : {}) },
        });
        await readSse(response, (event) => {
          events.push(event);
          return TERMINAL.has(event.event);
        });
        if (events.some((e) => TERMINAL.has(e.event))) return events;
      } catch {
        // its replica went away: reconnect elsewhere
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`follower of ${sessionId} never saw a terminal event`);
  })();
  return { events, done };
}

/** Jobs each worker ran to an end (any outcome), from its own metrics. */
export async function jobsRunOn(worker: StandaloneWorker): Promise<number> {
  const text = await (await fetch(worker.metricsUrl!)).text();
  return samples(text, 'device_ops_worker_inference_requests_total').reduce((sum, s) => sum + s.value, 0);
}

/** A connection of the test's own to the replicas' database. */
export function database(url: string): Knex {
  return knexFactory({ client: 'pg', connection: url, pool: { min: 0, max: 2 } });
}

/** The instance id each gateway process registered under. */
export function instanceOf(gateway: GatewayProcess): string {
  const line = gateway.lines.find((l) => l.message === 'gateway instance registered');
  if (!line) throw new Error('gateway has not registered an instance');
  return String(line.instanceId);
}

/** The gateway process that relays a session now, by the database's record. */
export async function ownerOf(db: Knex, sessionId: string, gateways: GatewayProcess[]): Promise<GatewayProcess | undefined> {
  const row = (await db('sessions').select('owner_instance').where({ id: sessionId }).first()) as { owner_instance: string | null } | undefined;
  return gateways.find((g) => row?.owner_instance && instanceOf(g) === row.owner_instance);
}

/** Sequence ids of the events a follower saw, as numbers. */
export const ids = (events: SseEvent[]) => events.map((e) => Number(e.id));
