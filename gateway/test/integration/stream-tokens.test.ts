import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { SessionSchema, StreamTokenSchema, type SessionBody } from '../../src/features/sessions/session-schemas.js';
import { StreamTokenService } from '../../src/features/sessions/stream-token-service.js';
import { testEnv } from '../helpers/env.js';
import { bearer } from '../helpers/http.js';
import { startRealGatewayOn, type GatewayOnDatabase } from '../helpers/real-gateway.js';
import { readSse } from '../helpers/sse.js';
import { signToken } from '../helpers/tokens.js';

const alice = bearer(signToken({ sub: 'alice', scope: 'inference', expiresInSeconds: 3600 }));
const bob = bearer(signToken({ sub: 'bob', scope: 'inference', expiresInSeconds: 3600 }));
const admin = bearer(signToken({ sub: 'root', scope: 'admin', expiresInSeconds: 3600 }));
const APP_ORIGIN = 'http://app.example.test';
const job = (seed: number) => ({
  task: 'text-to-image',
  model: 'tiny-sd',
  parameters: { prompt: 'a red kite', steps: 2, width: 64, height: 64, seed },
});

/** The token in an events URL. */
const tokenOf = (url: string): string => new URL(url, 'http://x').searchParams.get('access_token')!;

/**
 * Stream tokens on the real gateway with real workers (ADR 0028): a native
 * EventSource sends no header, only the URL, so every request here carries
 * the token alone, as a browser's would.
 */
describe('stream tokens: browser EventSource follows its session', () => {
  let real: GatewayOnDatabase;
  let first: SessionBody;
  let second: SessionBody;
  const issued: string[] = [];

  const create = async (seed: number, headers = alice) => {
    const response = await fetch(`${real.url}/api/inference/sessions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(job(seed)),
    });
    expect(response.status).toBe(202);
    const body = SessionSchema.parse(await response.json());
    issued.push(tokenOf(body.links.events));
    return body;
  };
  const expectRefused = async (response: Response) => {
    expect(response.status).toBe(401);
    expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(await response.json()).toMatchObject({ status: 401, type: '/problems/unauthorized' });
  };

  beforeAll(async () => {
    real = await startRealGatewayOn('sqlite', {
      MODEL_DIRECTORY: inject('demoModels'),
      OUTPUT_DIRECTORY: mkdtempSync(join(tmpdir(), 'device-ops-outputs-')),
      CORS_ORIGINS: APP_ORIGIN,
      LOG_LEVEL: 'debug',
    });
    first = await create(1);
    second = await create(2);
  });

  afterAll(() => real?.close());

  it("puts an owner's stream token in links.events, which opens the stream without any header, to the result", async () => {
    expect(first.links.events).toMatch(new RegExp(`^/api/inference/sessions/${first.id}/events\\?access_token=[\\w.-]+$`));
    const response = await fetch(`${real.url}${first.links.events}`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = await readSse(response);
    expect(events.at(-1)!.event).toBe('result');
    expect(events.map((e) => Number(e.id))).toEqual(events.map((_, i) => i + 1));
    // A reconnect (the same URL, with Last-Event-ID) gets exactly the rest.
    const resumed = await readSse(await fetch(`${real.url}${first.links.events}`, { headers: { 'last-event-id': '2' } }));
    expect(resumed.map((e) => e.id)).toEqual(events.slice(2).map((e) => e.id));
  });

  it("never opens another session's events, even of the same owner", async () => {
    await expectRefused(await fetch(`${real.url}/api/inference/sessions/${second.id}/events?access_token=${tokenOf(first.links.events)}`));
  });

  it('is refused after it expired, also by a replica other than the one that issued it', async () => {
    // What a replica sharing this configuration issued ten minutes ago (300 s tokens).
    const config = loadConfig(testEnv());
    const stale = StreamTokenService.fromConfig(config, () => Date.now() - 600_000)!.issue(first.id, { id: 'jwt:alice', subject: 'alice', scopes: ['inference'], method: 'jwt' });
    issued.push(stale.token);
    await expectRefused(await fetch(`${real.url}/api/inference/sessions/${first.id}/events?access_token=${stale.token}`));
    // The same, fresh, from that other replica: accepted here.
    const fresh = StreamTokenService.fromConfig(config)!.issue(first.id, { id: 'jwt:alice', subject: 'alice', scopes: ['inference'], method: 'jwt' });
    issued.push(fresh.token);
    const response = await fetch(`${real.url}/api/inference/sessions/${first.id}/events?access_token=${fresh.token}`);
    expect(response.status).toBe(200);
    await response.body!.cancel();
  });

  it('is refused on every other route', async () => {
    const token = tokenOf(first.links.events);
    const elsewhere = [
      '/api/device/list',
      '/api/auth/whoami',
      `/api/inference/sessions/${first.id}`,
      `/api/inference/outputs/${first.id}/image-0.png`,
    ];
    for (const path of elsewhere) await expectRefused(await fetch(`${real.url}${path}?access_token=${token}`));
    // As a header it is no credential either.
    await expectRefused(await fetch(`${real.url}/api/device/list`, { headers: bearer(token) }));
    // A stream token never buys a fresh one.
    await expectRefused(await fetch(`${real.url}/api/inference/sessions/${first.id}/stream-token?access_token=${token}`, { method: 'POST' }));
    // A list has strict query fields: refused too, naming the field, never echoing the value.
    const listed = await fetch(`${real.url}/api/inference/sessions?access_token=${token}`, { headers: alice });
    expect(listed.status).toBe(400);
    expect(await listed.text()).not.toContain(token);
    // Garbage and a missing secret's failures look the same as any refused credential.
    await expectRefused(await fetch(`${real.url}/api/inference/sessions/${first.id}/events?access_token=nonsense`));
  });

  it('is issued to the owner only: from its own endpoint, not to others, and admins read without one', async () => {
    const response = await fetch(`${real.url}/api/inference/sessions/${first.id}/stream-token`, { method: 'POST', headers: alice });
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-control')).toBe('no-store');
    const grant = StreamTokenSchema.parse(await response.json());
    issued.push(grant.token);
    expect(new Date(grant.expiresAt).getTime() - Date.now()).toBeGreaterThan(290_000);
    expect(new Date(grant.expiresAt).getTime() - Date.now()).toBeLessThanOrEqual(300_000);
    expect(grant.events).toBe(`/api/inference/sessions/${first.id}/events?access_token=${grant.token}`);
    const read = SessionSchema.parse(await (await fetch(`${real.url}/api/inference/sessions/${first.id}`, { headers: alice })).json());
    expect(tokenOf(read.links.events)).toBeTruthy();
    issued.push(tokenOf(read.links.events));

    expect((await fetch(`${real.url}/api/inference/sessions/${first.id}/stream-token`, { method: 'POST', headers: bob })).status).toBe(404);
    expect((await fetch(`${real.url}/api/inference/sessions/${first.id}/stream-token`, { method: 'POST', headers: admin })).status).toBe(403);
    const asAdmin = SessionSchema.parse(await (await fetch(`${real.url}/api/inference/sessions/${first.id}`, { headers: admin })).json());
    expect(asAdmin.links.events).toBe(`/api/inference/sessions/${first.id}/events`);
  });

  it("lets the listed origins follow the stream: CORS on the events route, Last-Event-ID allowed, X-Session-Id exposed", async () => {
    const preflight = await fetch(`${real.url}${first.links.events}`, {
      method: 'OPTIONS',
      headers: { origin: APP_ORIGIN, 'access-control-request-method': 'GET', 'access-control-request-headers': 'last-event-id' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe(APP_ORIGIN);
    expect(preflight.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('last-event-id');
    const stream = await fetch(`${real.url}${first.links.events}`, { headers: { origin: APP_ORIGIN, 'last-event-id': '1' } });
    expect(stream.status).toBe(200);
    expect(stream.headers.get('access-control-allow-origin')).toBe(APP_ORIGIN);
    expect(stream.headers.get('access-control-expose-headers')).toContain('X-Session-Id');
    await stream.body!.cancel();
    const foreign = await fetch(`${real.url}${first.links.events}`, { headers: { origin: 'http://evil.example.test' } });
    expect(foreign.headers.get('access-control-allow-origin')).toBeNull();
    await foreign.body!.cancel();
  });

  it('never writes a token to the log, while logging why one was refused', async () => {
    // Let the exchanges above end and their access-log lines be written.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(issued.length).toBeGreaterThanOrEqual(6);
    const text = real.logs.text;
    for (const token of issued) {
      expect(text).not.toContain(token);
      expect(text).not.toContain(token.split('.')[1]!);
    }
    expect(text).not.toContain('access_token=');
    const refusals = real.logs.find((line) => line.authMethod === 'stream-token').map((line) => line.reason);
    expect(refusals).toEqual(expect.arrayContaining(['stream token is for another session', 'stream token expired', 'malformed stream token']));
    const followed = real.logs.find((line) => line.message === 'request' && line.route === '/api/inference/sessions/{id}/events' && line.status === 200);
    expect(followed.length).toBeGreaterThan(0);
    expect(followed.every((line) => line.principal === 'jwt:alice')).toBe(true);
  });
});
