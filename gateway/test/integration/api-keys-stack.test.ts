import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Dialect } from '../../src/infra/database/database.js';
import { dialectAvailable } from '../helpers/databases.js';
import { bearer, getJson } from '../helpers/http.js';
import { startRealGatewayOn, type GatewayOnDatabase } from '../helpers/real-gateway.js';
import { startStandaloneWorker, type StandaloneWorker } from '../helpers/standalone-worker.js';
import { signToken } from '../helpers/tokens.js';
import { waitFor } from '../helpers/wait.js';

/**
 * API keys and the audit log through the real gateway, on each database:
 * what the README promises (revocation on the next request, expiry, lookup
 * by prefix, last_used_at at most once a minute, audit filters), read back
 * over HTTP and from the rows. On PostgreSQL a second gateway on the same
 * database sees the same keys (SQLite is one process: ADR 0006).
 */
const root = bearer(signToken({ sub: 'root', scope: 'admin' }));
const ops = bearer(signToken({ sub: 'ops', scope: 'admin' }));
const apiKey = (key: string) => ({ 'x-api-key': key });

describe.each(['sqlite', 'postgres'] as Dialect[])('API keys and audit through the real gateway on %s', (dialect) => {
  let worker: StandaloneWorker;
  let first: GatewayOnDatabase;
  let second: GatewayOnDatabase | undefined;

  const urls = () => [first.url, ...(second ? [second.url] : [])];
  const knex = () => first.gateway.database.knex;
  const whoami = (url: string, headers: Record<string, string>) => fetch(`${url}/api/auth/whoami`, { headers });
  const createKey = async (body: Record<string, unknown>, headers = root) => {
    const response = await fetch(`${first.url}/api/admin/keys`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    });
    expect(response.status).toBe(201);
    return (await response.json()) as { id: string; key: string; prefix: string };
  };
  const keyRow = async (id: string) => (await knex()('api_keys').where('id', id).first()) as Record<string, unknown>;
  const lastUsed = async (id: string) => {
    const value = (await keyRow(id)).last_used_at;
    return value === null ? null : new Date(value as string).getTime();
  };

  beforeAll(async () => {
    if (!dialectAvailable(dialect)) return;
    worker = await startStandaloneWorker({ id: `keys-${dialect}`, dir: mkdtempSync(join(tmpdir(), 'keys-worker-')) });
    // Every request reads the key's row here (API_KEY_CACHE_SECONDS=0), so a row changed by hand (time made
    // to pass) is seen at once; the cache, and revocation pushed to replicas, have their own suites
    // (unit/api-key-cache.test.ts, replicas/api-key-revocation.test.ts).
    const env = { WORKER_ADDRESSES: worker.address, LOG_LEVEL: 'warn', API_KEY_CACHE_SECONDS: '0' };
    first = await startRealGatewayOn(dialect, env);
    // A second instance on the same PostgreSQL database.
    if (dialect === 'postgres') second = await startRealGatewayOn(dialect, { ...env, DATABASE_URL: first.gateway.config.databaseUrl! });
  });

  afterAll(async () => {
    await second?.close();
    await first?.close();
    await worker?.stop();
  });

  it.skipIf(!dialectAvailable(dialect))('uses the configured database on every instance', () => {
    expect(first.gateway.database.dialect).toBe(dialect);
    expect(second?.gateway.database.dialect).toBe(dialect === 'postgres' ? 'postgres' : undefined);
  });

  it.skipIf(!dialectAvailable(dialect))('refuses a revoked key on the very next request, on every instance', async () => {
    const created = await createKey({ name: 'ci', scopes: ['inference'] });
    for (const url of urls()) {
      const response = await whoami(url, apiKey(created.key));
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ id: `key:${created.id}`, subject: 'ci', method: 'api-key', scopes: ['inference'] });
    }
    const revoked = await fetch(`${first.url}/api/admin/keys/${created.id}`, { method: 'DELETE', headers: root });
    expect(revoked.status).toBe(200);
    expect(((await revoked.json()) as { revokedAt: string | null }).revokedAt).not.toBeNull();
    expect((await keyRow(created.id)).revoked_at).not.toBeNull();
    for (const url of urls()) {
      const refused = await whoami(url, apiKey(created.key));
      expect(refused.status, url).toBe(401);
      expect(refused.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    }
  });

  it.skipIf(!dialectAvailable(dialect))('refuses an expired key, and finds keys by prefix: a right prefix with a wrong secret is refused', async () => {
    const created = await createKey({ name: 'short-lived', scopes: ['inference'], expiresInSeconds: 3600 });
    expect((await whoami(first.url, apiKey(created.key))).status).toBe(200);
    // Time passes: the stored expiry is now behind us.
    await knex()('api_keys').where('id', created.id).update({ expires_at: new Date(Date.now() - 1000).toISOString() });
    for (const url of urls()) expect((await whoami(url, apiKey(created.key))).status, url).toBe(401);

    const other = await createKey({ name: 'lookup', scopes: ['inference'] });
    expect(other.key.startsWith(`dok_${other.prefix}_`)).toBe(true);
    expect((await keyRow(other.id)).prefix).toBe(other.prefix);
    const wrongSecret = `dok_${other.prefix}_${'A'.repeat(43)}`;
    const unknownPrefix = `dok_${'Z'.repeat(12)}_${other.key.slice(-43)}`;
    for (const key of [wrongSecret, unknownPrefix, other.key.slice(0, -1)]) expect((await whoami(first.url, apiKey(key))).status, key).toBe(401);
    expect((await whoami(first.url, apiKey(other.key))).status).toBe(200);
    // Stored as a hash only.
    expect(JSON.stringify(await keyRow(other.id))).not.toContain(other.key.slice(-43));
  });

  it.skipIf(!dialectAvailable(dialect))('advances last_used_at at most once a minute', async () => {
    const created = await createKey({ name: 'touched', scopes: ['inference'] });
    expect(await lastUsed(created.id)).toBeNull();
    expect((await whoami(first.url, apiKey(created.key))).status).toBe(200);
    // Written behind the request: wait for the row.
    const firstUse = await waitFor(async () => (await lastUsed(created.id)) ?? undefined, { what: 'last_used_at written' });
    for (let i = 0; i < 5; i += 1) expect((await whoami(urls()[i % urls().length]!, apiKey(created.key))).status).toBe(200);
    // A touch is sent before the response; its UPDATE, had there been one, lands within
    // milliseconds — 500 ms is a wide margin on this 2-core machine.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await lastUsed(created.id)).toBe(firstUse);

    // A minute later (the stored use moved back 61 s), the next use writes again.
    const minuteAgo = new Date(firstUse - 61_000);
    await knex()('api_keys').where('id', created.id).update({ last_used_at: minuteAgo.toISOString() });
    expect((await whoami(first.url, apiKey(created.key))).status).toBe(200);
    const advanced = await waitFor(async () => {
      const value = await lastUsed(created.id);
      return value !== null && value > minuteAgo.getTime() ? value : undefined;
    }, { what: 'last_used_at advanced' });
    expect(advanced).toBeGreaterThanOrEqual(firstUse);
  });

  it.skipIf(!dialectAvailable(dialect))('filters the audit log by actor, action and time range, exactly', async () => {
    // Entries from a known window only: earlier tests wrote their own.
    const from = new Date();
    await new Promise((resolve) => setTimeout(resolve, 20));
    const a = await createKey({ name: 'audit-a', scopes: ['inference'] }, root);
    const b = await createKey({ name: 'audit-b', scopes: ['models:manage'] }, ops);
    expect((await fetch(`${first.url}/api/admin/keys/${a.id}`, { method: 'DELETE', headers: ops })).status).toBe(200);
    // A refused admin call is audited too (denied, by an inference-only principal).
    expect((await fetch(`${first.url}/api/admin/keys`, { headers: bearer(signToken({ sub: 'eve', scope: 'inference' })) })).status).toBe(403);
    const audit = (query: string) => getJson(`${first.url}/api/admin/audit?${query}`, root);
    const window = `from=${from.toISOString()}`;
    // Audit writes do not hold up the response: wait until all four are stored.
    await waitFor(async () => ((await audit(window)).body!.total as number) >= 4 || undefined, { what: 'four audit entries' });
    const to = new Date();

    type Row = { id: string | number; at: Date; actor: string; action: string; target: string | null; outcome: string };
    const rows = ((await knex()('audit_log').select('*')) as (Omit<Row, 'at'> & { at: string | Date })[])
      .map((r): Row => ({ ...r, at: new Date(r.at) }))
      .filter((r) => r.at >= from && r.at <= to);
    const expectMatching = async (query: string, keep: (row: Row) => boolean) => {
      const page = await audit(`${query}&${window}&to=${to.toISOString()}`);
      expect(page.status, query).toBe(200);
      const expected = rows.filter(keep).sort((x, y) => y.at.getTime() - x.at.getTime() || Number(y.id) - Number(x.id));
      expect(expected.length, `rows matching ${query}`).toBeGreaterThan(0);
      expect((page.body!.items as any[]).map((e) => e.id), query).toEqual(expected.map((r) => String(r.id)));
      expect(page.body!.total, query).toBe(expected.length);
    };
    await expectMatching('actor=jwt:root', (r) => r.actor === 'jwt:root');
    await expectMatching('actor=jwt:ops', (r) => r.actor === 'jwt:ops');
    await expectMatching('action=key.create', (r) => r.action === 'key.create');
    await expectMatching('action=key.revoke&actor=jwt:ops', (r) => r.action === 'key.revoke' && r.actor === 'jwt:ops');
    await expectMatching('action=auth.admin', (r) => r.action === 'auth.admin' && r.outcome === 'denied');
    const targets = rows.filter((r) => r.action === 'key.create').map((r) => r.target);
    expect(targets.sort()).toEqual(['audit-a', 'audit-b']);
    expect(rows.find((r) => r.action === 'key.revoke')!.target).toBe(a.id);
    expect(b.id).not.toBe(a.id);

    // A range that ends before the window holds none of them.
    const before = await audit(`to=${new Date(from.getTime() - 1).toISOString()}&action=key.create`);
    expect((before.body!.items as any[]).map((e) => e.target)).not.toContain('audit-a');
  });
});
