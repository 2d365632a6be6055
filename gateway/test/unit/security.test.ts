import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import jwt from 'jsonwebtoken';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { bearer, getJson } from '../helpers/http.js';
import { startFakeGateway, type FakeGateway } from '../helpers/fake-app.js';
import { signToken, unsignedToken } from '../helpers/tokens.js';

const BOOTSTRAP = 'bootstrap-admin-key-0123456789abcdefghij';
const adminKey = { 'x-api-key': BOOTSTRAP };

const post = (url: string, body: unknown, headers: Record<string, string>) =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

/** The calls and records a refused request must not have caused. */
function untouched(gateway: FakeGateway, sessionsBefore: number) {
  expect(gateway.pool.calls).toEqual([]);
  expect(gateway.stores.sessions.rows.size).toBe(sessionsBefore);
}

describe('API keys, scopes, audit', () => {
  let gateway: FakeGateway;

  beforeAll(async () => {
    gateway = await startFakeGateway(['worker-0'], { ADMIN_API_KEY: BOOTSTRAP });
  });
  afterAll(() => gateway.close());

  it('lets an admin create a scoped key, use it, see the audit entry, revoke it and watch the next request fail', async () => {
    const created = await post(`${gateway.url}/api/admin/keys`, { name: 'ci-runner', scopes: ['inference'] }, adminKey);
    expect(created.status).toBe(201);
    expect(created.headers.get('cache-control')).toBe('no-store');
    const { key, id, prefix } = (await created.json()) as { key: string; id: string; prefix: string };
    expect(key).toMatch(/^dok_[A-Za-z0-9]{12}_[A-Za-z0-9_-]{43}$/);
    expect(key.startsWith(`dok_${prefix}_`)).toBe(true);
    // Stored as a hash only.
    const stored = [...gateway.stores.apiKeys.rows.values()][0]!;
    expect(stored.keyHash).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(stored)).not.toContain(key.slice(`dok_${prefix}_`.length)); // the secret part

    // Every header form works: X-API-Key, ApiKey, and Bearer as OpenAI-style SDKs send a key.
    expect((await getJson(`${gateway.url}/api/device/list`, { 'x-api-key': key })).status).toBe(200);
    const whoami = await getJson(`${gateway.url}/api/auth/whoami`, { authorization: `ApiKey ${key}` });
    expect(whoami.body).toEqual({ id: `key:${id}`, subject: 'ci-runner', method: 'api-key', scopes: ['inference'] });
    expect((await getJson(`${gateway.url}/api/auth/whoami`, { authorization: `Bearer ${key}` })).body).toEqual(whoami.body);
    // A key-shaped bearer that is no key is the same 401 as any bad credential.
    expect((await getJson(`${gateway.url}/api/auth/whoami`, { authorization: `Bearer ${key.slice(0, -2)}xx` })).status).toBe(401);
    const listed = await getJson(`${gateway.url}/api/admin/keys`, adminKey);
    const record = (listed.body!.keys as { id: string; lastUsedAt: string | null }[]).find((k) => k.id === id)!;
    expect(record.lastUsedAt).not.toBeNull();
    expect(JSON.stringify(listed.body)).not.toContain(key);

    // Its scope is inference: management is forbidden.
    const denied = await post(`${gateway.url}/api/model/load`, { model: 'x' }, { 'x-api-key': key });
    expect(denied.status).toBe(403);

    const revoked = await fetch(`${gateway.url}/api/admin/keys/${id}`, { method: 'DELETE', headers: adminKey });
    expect(revoked.status).toBe(200);
    expect((await getJson(`${gateway.url}/api/device/list`, { 'x-api-key': key })).status).toBe(401);

    const audit = await getJson(`${gateway.url}/api/admin/audit?actor=key:bootstrap-admin`, adminKey);
    const actions = (audit.body!.items as { action: string; outcome: string; target: string }[]).map((e) => [e.action, e.outcome, e.target]);
    expect(actions).toContainEqual(['key.create', 'success', 'ci-runner']);
    expect(actions).toContainEqual(['key.revoke', 'success', id]);
  });

  it('refuses an expired key', async () => {
    const created = await post(
      `${gateway.url}/api/admin/keys`,
      { name: 'short-lived', scopes: ['inference'], expiresInSeconds: 3600 },
      adminKey,
    );
    const { key } = (await created.json()) as { key: string };
    expect((await getJson(`${gateway.url}/api/device/list`, { 'x-api-key': key })).status).toBe(200);
    // An hour passes (the clock moves; the key's verification is still cached): refused.
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + 3_601_000 });
    try {
      expect((await getJson(`${gateway.url}/api/device/list`, { 'x-api-key': key })).status).toBe(401);
    } finally {
      vi.useRealTimers();
    }
  });

  it('audits failed and denied admin access, with the client address and no credential', async () => {
    const garbage = 'dok_AAAAAAAAAAAA_' + 'x'.repeat(43);
    expect((await getJson(`${gateway.url}/api/admin/keys`, { 'x-api-key': garbage })).status).toBe(401);
    expect((await getJson(`${gateway.url}/api/admin/keys`, bearer(signToken({ scope: 'inference' })))).status).toBe(403);
    const audit = await getJson(`${gateway.url}/api/admin/audit?action=auth.admin`, adminKey);
    const entries = audit.body!.items as { actor: string; outcome: string; clientAddress: string; details: unknown }[];
    expect(entries.map((e) => [e.actor, e.outcome])).toEqual(
      expect.arrayContaining([
        ['anonymous', 'failure'],
        ['jwt:alice', 'denied'],
      ]),
    );
    expect(entries[0]!.clientAddress).toMatch(/127\.0\.0\.1/);
    expect(JSON.stringify(audit.body)).not.toContain(garbage);
  });

  it('audits management actions with their outcome', async () => {
    const manager = bearer(signToken({ sub: 'ops', scope: 'models:manage' }));
    expect((await post(`${gateway.url}/api/model/load`, { model: 'tiny' }, manager)).status).toBe(200);
    const audit = await getJson(`${gateway.url}/api/admin/audit?actor=jwt:ops`, adminKey);
    expect((audit.body!.items as { action: string; outcome: string; target: string }[])[0]).toMatchObject({
      action: 'model.load',
      outcome: 'success',
      target: 'tiny',
    });
  });

  it('validates key creation input', async () => {
    for (const body of [{ name: '', scopes: ['inference'] }, { name: 'x', scopes: ['root'] }, { name: 'x', scopes: [] }, { name: 'x', scopes: ['admin'], expiresInSeconds: 0 }, { name: 'x', scopes: ['admin'], expiresAt: '2031-01-01T00:00:00Z' }]) {
      expect((await post(`${gateway.url}/api/admin/keys`, body, adminKey)).status).toBe(400);
    }
  });

  it('never writes a credential to the logs', async () => {
    const token = signToken();
    await getJson(`${gateway.url}/api/device/list`, bearer(token));
    await getJson(`${gateway.url}/api/device/list`, bearer(`${token}tampered`));
    await getJson(`${gateway.url}/api/admin/keys`, { 'x-api-key': BOOTSTRAP });
    const created = (await (await post(`${gateway.url}/api/admin/keys`, { name: 'log-check', scopes: ['inference'] }, adminKey)).json()) as { key: string };
    await getJson(`${gateway.url}/api/device/list`, { 'x-api-key': created.key });
    const text = gateway.logs.text;
    for (const secret of [token.split('.')[2]!, BOOTSTRAP, created.key, created.key.slice('dok_'.length + 13) /* the secret part */, 'test-secret-0123456789']) {
      expect(text).not.toContain(secret);
    }
  });
});

describe('the attack matrix: each refused with its exact status, no worker call, no job', () => {
  let gateway: FakeGateway;
  beforeAll(async () => {
    gateway = await startFakeGateway(['worker-0'], { CORS_ORIGINS: 'https://app.example.com', REQUEST_BODY_LIMIT_BYTES: '4096' });
  });
  afterAll(() => gateway.close());

  const execute = { task: 'text-embedding', model: 'minilm', parameters: { texts: ['hi'] } };
  const now = () => Math.floor(Date.now() / 1000);

  it.each([
    ['expired token', () => bearer(signToken({ expiresInSeconds: -300 }))],
    ['token without exp', () => bearer(jwt.sign({ sub: 'a', scope: 'inference' }, 'test-secret-0123456789-abcdefghijklmnop', { algorithm: 'HS256' }))],
    ['wrong signature', () => bearer(signToken({ secret: 'z'.repeat(40) }))],
    ['alg: none', () => bearer(unsignedToken())],
    ['garbage Authorization', () => ({ authorization: 'Bearer a.b.c' })],
    ['unknown scheme', () => ({ authorization: 'Digest username="x"' })],
    ['unknown API key', () => ({ 'x-api-key': 'dok_BBBBBBBBBBBB_' + 'y'.repeat(43) })],
    ['malformed API key', () => ({ 'x-api-key': 'not-a-key' })],
    ['token for the future (nbf)', () => bearer(jwt.sign({ sub: 'a', exp: now() + 900, nbf: now() + 600 }, 'test-secret-0123456789-abcdefghijklmnop'))],
  ])('%s → 401', async (_name, headers) => {
    const before = gateway.stores.sessions.rows.size;
    gateway.pool.fakes[0]!.calls.length = 0;
    const response = await post(`${gateway.url}/api/inference/execute`, execute, headers());
    expect(response.status).toBe(401);
    untouched(gateway, before);
  });

  it('a token without the needed scope → 403', async () => {
    gateway.pool.fakes[0]!.calls.length = 0;
    const response = await post(`${gateway.url}/api/inference/execute`, execute, bearer(signToken({ scope: 'models:manage' })));
    expect(response.status).toBe(403);
    untouched(gateway, gateway.stores.sessions.rows.size);
  });

  it('an oversized body → 413 before anything else runs', async () => {
    gateway.pool.fakes[0]!.calls.length = 0;
    const before = gateway.stores.sessions.rows.size;
    const response = await post(`${gateway.url}/api/inference/execute`, { ...execute, parameters: { texts: ['x'.repeat(8000)] } }, bearer(signToken()));
    expect(response.status).toBe(413);
    untouched(gateway, before);
  });

  it('answers a CORS preflight only for a configured origin', async () => {
    const preflight = (origin: string) =>
      fetch(`${gateway.url}/api/inference/execute`, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
      });
    const foreign = await preflight('https://evil.example.net');
    expect(foreign.headers.get('access-control-allow-origin')).toBeNull();
    const allowed = await preflight('https://app.example.com');
    expect(allowed.headers.get('access-control-allow-origin')).toBe('https://app.example.com');
    expect(allowed.headers.get('access-control-allow-credentials')).toBe('true');
    expect(gateway.pool.calls).toEqual([]);
  });

  it('sends the security headers on every response, errors included', async () => {
    for (const path of ['/health', '/api/device/list', '/nope', '/api-docs/']) {
      const response = await fetch(`${gateway.url}${path}`);
      expect(response.headers.get('x-content-type-options'), path).toBe('nosniff');
      expect(response.headers.get('strict-transport-security'), path).toMatch(/max-age=/);
      expect(response.headers.get('x-frame-options'), path).toBe('SAMEORIGIN');
      expect(response.headers.get('content-security-policy'), path).toContain("default-src 'self'");
      expect(response.headers.get('x-powered-by'), path).toBeNull();
    }
  });

  it('cuts off a client that sends its headers too slowly', async () => {
    const { port } = new URL(gateway.url);
    const closedAfter = await new Promise<number>((resolve, reject) => {
      const started = Date.now();
      const socket = connect(Number(port), '127.0.0.1', () => {
        socket.write('GET /health HTTP/1.1\r\nHost: x\r\n');
        const drip = setInterval(() => socket.write('X-Slow: 1\r\n'), 1000);
        socket.once('close', () => {
          clearInterval(drip);
          resolve(Date.now() - started);
        });
      });
      socket.on('error', () => {});
      setTimeout(() => reject(new Error('still open after 15 s')), 15_000);
    });
    // 5 s headers timeout, checked every second; Node's defaults would allow 60 s or more.
    expect(closedAfter).toBeLessThan(10_000);
  });
});

describe('RS256 and JWKS', () => {
  let keys: { publicKey: KeyObject; privateKey: KeyObject };
  let jwks: Server;
  const sign = (payload: object, options: jwt.SignOptions = {}) =>
    jwt.sign({ scope: 'inference', ...payload }, keys.privateKey, { algorithm: 'RS256', subject: 'rsa-user', expiresIn: 300, ...options });

  beforeAll(async () => {
    keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = { ...keys.publicKey.export({ format: 'jwk' }), kid: 'k1', use: 'sig', alg: 'RS256' };
    jwks = createServer((_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
  });
  afterAll(() => new Promise<void>((resolve) => jwks.close(() => resolve())));

  it('verifies RS256 with a public key and refuses HS256 signed with that public key', async () => {
    const pem = keys.publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const gateway = await startFakeGateway(['worker-0'], { JWT_SECRET: undefined as unknown as string, JWT_PUBLIC_KEY: pem });
    try {
      expect((await getJson(`${gateway.url}/api/device/list`, bearer(sign({})))).status).toBe(200);
      // The classic confusion: the public key used as an HMAC secret.
      const confused = jwt.sign({ sub: 'mallory', scope: 'admin', exp: Math.floor(Date.now() / 1000) + 300 }, pem, { algorithm: 'HS256' });
      expect((await getJson(`${gateway.url}/api/device/list`, bearer(confused))).status).toBe(401);
      expect((await getJson(`${gateway.url}/api/device/list`, bearer(unsignedToken()))).status).toBe(401);
      expect(gateway.pool.calls.filter((c) => c.rpc === 'ListDevices')).toHaveLength(1);
    } finally {
      await gateway.close();
    }
  });

  it('verifies RS256 against a JWKS, by key id', async () => {
    const url = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/.well-known/jwks.json`;
    const gateway = await startFakeGateway(['worker-0'], { JWT_SECRET: undefined as unknown as string, JWT_JWKS_URL: url });
    try {
      expect((await getJson(`${gateway.url}/api/device/list`, bearer(sign({}, { keyid: 'k1' })))).status).toBe(200);
      expect((await getJson(`${gateway.url}/api/device/list`, bearer(sign({}, { keyid: 'unknown' })))).status).toBe(401);
    } finally {
      await gateway.close();
    }
  });
});
