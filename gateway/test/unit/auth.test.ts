import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { bearer, getJson } from '../helpers/http.js';
import { startFakeGateway, type FakeGateway } from '../helpers/fake-app.js';
import { signToken, tamperedToken, tokenWithClaims, unsignedToken } from '../helpers/tokens.js';

const ISSUER = 'device-ops-test';
const AUDIENCE = 'device-ops-api';
const now = () => Math.floor(Date.now() / 1000);
const good = () => signToken({ issuer: ISSUER, audience: AUDIENCE });

describe('JWT authentication on /api/device/list', () => {
  let gateway: FakeGateway;

  beforeAll(async () => {
    gateway = await startFakeGateway(['worker-0'], { JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE });
  });
  afterAll(() => gateway.close());
  beforeEach(() => {
    for (const fake of gateway.pool.fakes) fake.calls.length = 0;
  });

  const rejected: [string, () => Record<string, string>][] = [
    ['no Authorization header', () => ({})],
    ['a garbage bearer token', () => bearer('not-a-jwt')],
    ['another scheme', () => ({ authorization: `Basic ${Buffer.from('a:b').toString('base64')}` })],
    ['an expired token', () => bearer(signToken({ issuer: ISSUER, audience: AUDIENCE, expiresInSeconds: -120 }))],
    ['a token signed with another secret', () => bearer(signToken({ issuer: ISSUER, audience: AUDIENCE, secret: 'y'.repeat(40) }))],
    ['alg: none', () => bearer(unsignedToken())],
    ['a tampered payload', () => bearer(tamperedToken())],
    ['a token without exp', () => bearer(tokenWithClaims({ sub: 'alice', iss: ISSUER, aud: AUDIENCE }))],
    ['a token without sub', () => bearer(tokenWithClaims({ exp: now() + 60, iss: ISSUER, aud: AUDIENCE }))],
    ['the wrong issuer', () => bearer(signToken({ issuer: 'someone-else', audience: AUDIENCE }))],
    ['the wrong audience', () => bearer(signToken({ issuer: ISSUER, audience: 'other-api' }))],
    ['a token not yet valid', () => bearer(tokenWithClaims({ sub: 'a', exp: now() + 600, nbf: now() + 300, iss: ISSUER, aud: AUDIENCE }))],
  ];

  it.each(rejected)('refuses %s with the same 401 problem and calls no worker', async (_case, headers) => {
    const { status, response, body } = await getJson(`${gateway.url}/api/device/list`, headers());
    expect(status).toBe(401);
    expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(response.headers.get('www-authenticate')).toBe('Bearer, ApiKey');
    const { errorId, correlationId, ...rest } = body as Record<string, unknown>;
    expect(typeof errorId).toBe('string');
    expect(correlationId).toBe(response.headers.get('x-request-id'));
    expect(rest).toEqual({
      type: '/problems/unauthorized',
      title: 'Unauthorized',
      status: 401,
      detail: 'A valid bearer token or API key is required.',
      instance: '/api/device/list',
    });
    expect(gateway.pool.calls).toEqual([]);
  });

  it('lets a valid token through and passes the correlation id to the worker', async () => {
    const { status, response } = await getJson(`${gateway.url}/api/device/list`, {
      ...bearer(good()),
      'x-request-id': 'client-req-42',
    });
    expect(status).toBe(200);
    expect(response.headers.get('x-request-id')).toBe('client-req-42');
    expect(gateway.pool.fakes[0]!.calls).toEqual([
      { rpc: 'ListDevices', options: { correlationId: 'client-req-42', deadlineMs: 10_000 } },
    ]);
    const line = gateway.logs.find((l) => l.message === 'request' && l.correlationId === 'client-req-42');
    expect(line).toHaveLength(1);
    expect(line[0]).toMatchObject({ status: 200, route: '/api/device/list', principal: 'jwt:alice' });
  });

  it('replaces a malformed X-Request-Id with a generated one', async () => {
    const { response } = await getJson(`${gateway.url}/api/device/list`, {
      ...bearer(good()),
      'x-request-id': 'bad id; drop table',
    });
    expect(response.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('never logs the token', async () => {
    const token = good();
    await getJson(`${gateway.url}/api/device/list`, bearer(token));
    await getJson(`${gateway.url}/api/device/list`, bearer(`${token}x`));
    expect(gateway.logs.text).not.toContain(token.split('.')[2]);
  });
});
