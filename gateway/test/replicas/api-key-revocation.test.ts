import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Knex } from 'knex';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createPostgresTestUrl, postgresServer } from '../helpers/databases.js';
import { spawnGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { gatewayClient, unary } from '../helpers/grpc-client.js';
import type { StandaloneWorker } from '../helpers/standalone-worker.js';
import { MACHINE_MARGIN_MS, waitFor } from '../helpers/wait.js';
import { database, replicaEnvironment, startReplicaWorkers } from './replica-support.js';

/**
 * API keys are verified from memory on each replica (API_KEY_CACHE_SECONDS,
 * default 30 s) and revocation is pushed to every replica over PostgreSQL
 * NOTIFY: two real gateway processes on one PostgreSQL, a key created on
 * one, used on the other, revoked on the first.
 */
const ADMIN_KEY = 'replica-admin-key-0123456789abcdefghijklmnop';
/** What issue 21 asks: a revoked key is refused on every replica within 1 s. */
const REVOCATION_BOUND_MS = 1_000;

describe.skipIf(!postgresServer())('API keys across gateway replicas', () => {
  let databaseUrl: string;
  let drop: () => Promise<void>;
  let db: Knex;
  let workers: StandaloneWorker[] = [];
  let a: GatewayProcess;
  let b: GatewayProcess;

  beforeAll(async () => {
    ({ url: databaseUrl, drop } = await createPostgresTestUrl());
    db = database(databaseUrl);
    const outputs = mkdtempSync(join(tmpdir(), 'key-replica-outputs-'));
    workers = await startReplicaWorkers(inject('demoModels'), outputs);
    const env = { ...replicaEnvironment({ databaseUrl, workers, models: inject('demoModels'), outputs, leaseSeconds: 3 }), ADMIN_API_KEY: ADMIN_KEY };
    [a, b] = await Promise.all([spawnGatewayProcess(env), spawnGatewayProcess(env)]);
  });

  afterAll(async () => {
    await Promise.all([a, b].filter(Boolean).map((g) => g.stop('SIGKILL')));
    await Promise.all(workers.map((w) => w.stop()));
    await db?.destroy();
    await drop?.();
  });

  const createKey = async (name: string): Promise<{ id: string; key: string }> => {
    const response = await fetch(`${a.url}/api/admin/keys`, {
      method: 'POST',
      headers: { 'x-api-key': ADMIN_KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ name, scopes: ['inference'] }),
    });
    expect(response.status).toBe(201);
    const body = (await response.json()) as { key: string; id: string };
    return { id: body.id, key: body.key };
  };
  const whoAmI = async (gateway: GatewayProcess, key: string) => {
    const response = await fetch(`${gateway.url}/api/auth/whoami`, { headers: { 'x-api-key': key } });
    return { status: response.status, body: (await response.json()) as { scopes?: string[]; type?: string } };
  };
  const grpcAddressOf = (gateway: GatewayProcess) =>
    String(gateway.lines.find((l) => l.message === 'gateway listening')!.grpcAddress).replace('localhost', '127.0.0.1');

  it('refuses a key revoked on one replica on the other within 1 s, over REST and gRPC, while it trusted its cached verification until then', async () => {
    const { id, key } = await createKey('revoked-across');
    expect(await whoAmI(b, key)).toMatchObject({ status: 200, body: { scopes: ['inference'] } });
    // The row changed behind the gateways' backs (no revocation, no notification):
    // replica B keeps answering from its verified copy, so the cache is what serves it.
    await db('api_keys').where('id', id).update({ scopes: JSON.stringify(['admin']) });
    expect(await whoAmI(b, key)).toMatchObject({ status: 200, body: { scopes: ['inference'] } });

    const revoked = await fetch(`${a.url}/api/admin/keys/${id}`, { method: 'DELETE', headers: { 'x-api-key': ADMIN_KEY } });
    expect(revoked.status).toBe(200);
    const since = Date.now();
    await waitFor(async () => ((await whoAmI(b, key)).status === 401 ? true : undefined), {
      timeoutMs: REVOCATION_BOUND_MS + MACHINE_MARGIN_MS,
      intervalMs: 10,
      what: 'replica B to refuse the revoked key',
    });
    const elapsed = Date.now() - since;
    console.log(`revoked key refused by the other replica ${elapsed} ms after the revoking response`);
    expect(elapsed).toBeLessThan(REVOCATION_BOUND_MS + MACHINE_MARGIN_MS);
    expect((await whoAmI(b, key)).body).toMatchObject({ type: expect.stringContaining('unauthorized') });
    expect((await whoAmI(a, key)).status).toBe(401);

    const client = gatewayClient(grpcAddressOf(b));
    try {
      const outcome = await unary(client, 'whoAmI', {}, { 'x-api-key': key });
      expect(outcome.error?.code).toBe(16); // UNAUTHENTICATED
    } finally {
      client.close();
    }
  });

  it('trusts nothing cached once its notification connection was lost', async () => {
    const { id, key } = await createKey('bus-lost');
    expect(await whoAmI(b, key)).toMatchObject({ status: 200, body: { scopes: ['inference'] } });
    await db('api_keys').where('id', id).update({ scopes: JSON.stringify(['models:manage']) });
    expect(await whoAmI(b, key)).toMatchObject({ status: 200, body: { scopes: ['inference'] } });
    // Cut every replica's LISTEN connection, as a network blip would: revocations sent meanwhile would be missed.
    const cut = await db.raw(`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'device-operations-gateway-bus'`);
    expect(cut.rows.length).toBe(2);
    await waitFor(async () => b.lines.find((l) => l.message === 'session bus listening again'), { what: 'replica B to listen again' });
    expect(await whoAmI(b, key)).toMatchObject({ status: 200, body: { scopes: ['models:manage'] } });
  });

  it('writes last_used_at behind, once a minute at most, however many replicas see the key', async () => {
    const { id, key } = await createKey('touched');
    expect((await whoAmI(a, key)).status).toBe(200);
    const first = await waitFor(async () => {
      const row = (await db('api_keys').where('id', id).first('last_used_at')) as { last_used_at: Date | null };
      return row.last_used_at ?? undefined;
    }, { what: 'last_used_at to be written' });
    for (let i = 0; i < 40; i += 1) expect((await whoAmI(i % 2 === 0 ? a : b, key)).status).toBe(200);
    // Each replica's first sight of the key asks to write it; the conditional update keeps the first.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const after = (await db('api_keys').where('id', id).first('last_used_at')) as { last_used_at: Date };
    expect(after.last_used_at.getTime()).toBe(first.getTime());
  });
});
