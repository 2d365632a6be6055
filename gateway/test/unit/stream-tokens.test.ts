import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/config.js';
import type { Principal } from '../../src/features/auth/principal.js';
import { StreamTokenService } from '../../src/features/sessions/stream-token-service.js';
import { TEST_JWT_SECRET, testEnv } from '../helpers/env.js';

const alice: Principal = { id: 'jwt:alice', subject: 'alice', scopes: ['inference'], method: 'jwt' };
const admin: Principal = { id: 'jwt:root', subject: 'root', scopes: ['admin'], method: 'jwt' };
const SECRET = 'stream-token-secret-0123456789-abcdefgh';

/** A clock the test moves. */
function clock(start = Date.UTC(2030, 0, 1)) {
  let now = start;
  return { now: () => now, advance: (seconds: number) => (now += seconds * 1000) };
}

describe('stream tokens', () => {
  it("open their own session for the owner, with the inference scope only, until they expire", () => {
    const time = clock();
    const tokens = new StreamTokenService(SECRET, 300, time.now);
    const session = randomUUID();
    const grant = tokens.issue(session, alice);
    expect(grant.expiresAt.getTime()).toBe(time.now() + 300_000);
    expect(tokens.verify(grant.token, session)).toEqual({
      principal: { id: 'jwt:alice', subject: 'jwt:alice', scopes: ['inference'], method: 'stream-token' },
    });
    time.advance(299);
    expect(tokens.verify(grant.token, session)).toHaveProperty('principal');
    time.advance(1);
    expect(tokens.verify(grant.token, session)).toEqual({ reason: 'stream token expired' });
  });

  it("never open another session's events", () => {
    const tokens = new StreamTokenService(SECRET, 300);
    const grant = tokens.issue(randomUUID(), alice);
    expect(tokens.verify(grant.token, randomUUID())).toEqual({ reason: 'stream token is for another session' });
  });

  it('refuse a changed payload, a changed or foreign signature, and garbage', () => {
    const tokens = new StreamTokenService(SECRET, 300);
    const session = randomUUID();
    const [body, mac] = tokens.issue(session, alice).token.split('.') as [string, string];
    const forged = Buffer.from(JSON.stringify({ s: session, p: 'jwt:root', e: 4_102_444_800 })).toString('base64url');
    expect(tokens.verify(`${forged}.${mac}`, session)).toEqual({ reason: 'invalid stream token signature' });
    const flipped = `${mac.slice(0, -2)}${mac.endsWith('AA') ? 'BB' : 'AA'}`;
    expect(tokens.verify(`${body}.${flipped}`, session)).toEqual({ reason: 'invalid stream token signature' });
    // The last character's low bits are dropped by base64url decoding: another spelling of the same MAC is refused too.
    const last = mac.at(-1)!;
    const respelled = `${mac.slice(0, -1)}${String.fromCharCode(last.charCodeAt(0) ^ 1)}`;
    expect(tokens.verify(`${body}.${respelled}`, session)).toEqual({ reason: 'invalid stream token signature' });
    const other = new StreamTokenService('another-secret-0123456789-abcdefghijkl', 300).issue(session, alice).token;
    expect(tokens.verify(other, session)).toEqual({ reason: 'invalid stream token signature' });
    for (const garbage of ['', 'x', 'a.b.c', `${body}.`, '.']) expect(tokens.verify(garbage, session)).toHaveProperty('reason');
  });

  it('are issued to the owner only, not to an admin reading the session', () => {
    const tokens = new StreamTokenService(SECRET, 300);
    const session = { id: randomUUID(), owner: alice.id };
    expect(tokens.issueFor(session, alice)).not.toBeNull();
    expect(tokens.issueFor(session, admin)).toBeNull();
  });

  it('verify on every replica of one configuration, whichever issued them', () => {
    const env = testEnv({ STREAM_TOKEN_SECRET: SECRET });
    const [replicaA, replicaB] = [StreamTokenService.fromConfig(loadConfig(env))!, StreamTokenService.fromConfig(loadConfig(env))!];
    const session = randomUUID();
    expect(replicaB.verify(replicaA.issue(session, alice).token, session)).toHaveProperty('principal');
    // The default key comes from JWT_SECRET, which replicas share too.
    const derived = testEnv();
    const token = StreamTokenService.fromConfig(loadConfig(derived))!.issue(session, alice).token;
    expect(StreamTokenService.fromConfig(loadConfig(derived))!.verify(token, session)).toHaveProperty('principal');
    // An explicit STREAM_TOKEN_SECRET replaces the derived key.
    expect(replicaA.verify(token, session)).toEqual({ reason: 'invalid stream token signature' });
  });
});

describe('stream token settings', () => {
  it('default to 300 seconds, keyed from JWT_SECRET', () => {
    const config = loadConfig(testEnv());
    expect(config.streamTokenTtlSeconds).toBe(300);
    expect(config.streamTokenSecret).toBeUndefined();
    expect(StreamTokenService.fromConfig(config)).not.toBeNull();
  });

  it('issue none without STREAM_TOKEN_SECRET or JWT_SECRET (public-key tokens, API keys only)', () => {
    const config = loadConfig(testEnv({ JWT_SECRET: undefined, JWT_JWKS_URL: 'https://issuer.example/jwks.json' }));
    expect(StreamTokenService.fromConfig(config)).toBeNull();
    const keyed = loadConfig(testEnv({ JWT_SECRET: undefined, JWT_JWKS_URL: 'https://issuer.example/jwks.json', STREAM_TOKEN_SECRET: SECRET }));
    expect(StreamTokenService.fromConfig(keyed)).not.toBeNull();
  });

  it('refuse at boot a short secret or a TTL beyond an hour, naming the variable and never the value', () => {
    const short = () => loadConfig(testEnv({ STREAM_TOKEN_SECRET: 'too-short' }));
    expect(short).toThrow(ConfigError);
    expect(short).toThrow(/STREAM_TOKEN_SECRET must be at least 32 characters/);
    expect(short).not.toThrow(/too-short/);
    expect(() => loadConfig(testEnv({ STREAM_TOKEN_TTL_SECONDS: '3601' }))).toThrow(/STREAM_TOKEN_TTL_SECONDS/);
    expect(loadConfig(testEnv({ STREAM_TOKEN_TTL_SECONDS: '60' })).streamTokenTtlSeconds).toBe(60);
    expect(TEST_JWT_SECRET.length).toBeGreaterThanOrEqual(32);
  });
});
