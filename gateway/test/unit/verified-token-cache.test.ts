import { afterEach, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config/config.js';
import { Authenticator } from '../../src/features/auth/authenticator.js';
import { JwtVerifier } from '../../src/features/auth/jwt-verifier.js';
import { testEnv } from '../helpers/env.js';
import { signToken, tamperedToken } from '../helpers/tokens.js';

/** A bearer token is verified once per replica, then trusted until its exp (and a minute at most). */
describe('verified bearer tokens', () => {
  afterEach(() => {
    vi.restoreAllMocks();
    vi.useRealTimers();
  });

  const setup = () => {
    const verify = vi.spyOn(JwtVerifier.prototype, 'verify');
    return { verify, authenticator: new Authenticator(loadConfig(testEnv()), null) };
  };
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

  it('checks a token once, then answers its principal from memory', async () => {
    const { verify, authenticator } = setup();
    const token = signToken({ sub: 'alice', scope: 'inference' });
    const first = await authenticator.authenticate(bearer(token));
    expect(first).toEqual({ id: 'jwt:alice', subject: 'alice', scopes: ['inference'], method: 'jwt' });
    for (let i = 0; i < 5; i += 1) expect(await authenticator.authenticate(bearer(token))).toEqual(first);
    expect(verify).toHaveBeenCalledTimes(1);
  });

  it('never keeps a refusal: a bad token is checked (and refused) every time', async () => {
    const { verify, authenticator } = setup();
    const token = tamperedToken();
    for (let i = 0; i < 3; i += 1) expect(await authenticator.authenticate(bearer(token))).toMatchObject({ method: 'jwt', reason: expect.any(String) });
    expect(verify).toHaveBeenCalledTimes(3);
  });

  it('refuses a cached token once its exp has passed', async () => {
    const { authenticator } = setup();
    const token = signToken({ expiresInSeconds: 30 });
    expect(await authenticator.authenticate(bearer(token))).toMatchObject({ subject: 'alice' });
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + 31_000 + 30_000 });
    expect(await authenticator.authenticate(bearer(token))).toMatchObject({ reason: 'jwt expired' });
  });

  it('the principal it shares between requests cannot be changed by one of them', async () => {
    const { authenticator } = setup();
    const token = signToken();
    await authenticator.authenticate(bearer(token));
    const cached = await authenticator.authenticate(bearer(token));
    expect(() => (cached as unknown as { scopes: string[] }).scopes.push('admin')).toThrow(TypeError);
  });
});
