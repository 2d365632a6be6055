import { createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { passportJwtSecret } from 'jwks-rsa';
import { Passport } from 'passport';
import { ExtractJwt, Strategy as JwtStrategy, type StrategyOptionsWithoutRequest } from 'passport-jwt';
import type { Config } from '../../config/config.js';
import type { CredentialHeaders } from './credentials.js';
import type { Principal } from './principal.js';

interface Claims {
  sub?: unknown;
  exp?: unknown;
  scope?: unknown;
  scopes?: unknown;
}

function scopesOf(claims: Claims): string[] {
  if (Array.isArray(claims.scopes)) return claims.scopes.filter((s): s is string => typeof s === 'string');
  if (typeof claims.scope === 'string') return claims.scope.split(' ').filter(Boolean);
  return [];
}

/** The algorithm allow-list: configured, or the one family the configured key serves. */
export function allowedAlgorithms(config: Config): string[] {
  if (config.jwtAlgorithms) return [...config.jwtAlgorithms];
  return config.jwtSecret !== undefined ? ['HS256'] : ['RS256', 'ES256'];
}

/** JWT_PUBLIC_KEY holds a PEM, or the path of one. */
function publicKey(value: string): KeyObject {
  const pem = value.includes('-----BEGIN') ? value.replace(/\\n/g, '\n') : existsSync(value) ? readFileSync(value, 'utf8') : value;
  return createPublicKey(pem);
}

/**
 * The key tokens are verified with, prepared once: a KeyObject for an HMAC
 * secret or a configured public key (a string would be re-imported on every
 * verification); undefined when keys come from a JWKS.
 */
export function verificationKey(config: Config): KeyObject | undefined {
  if (allowedAlgorithms(config).every((a) => a.startsWith('HS'))) return createSecretKey(Buffer.from(config.jwtSecret ?? '', 'utf8'));
  return config.jwtJwksUrl ? undefined : publicKey(config.jwtPublicKey!);
}

/** A verified token's principal and when the token expires (ms), or why it was refused. */
export type JwtOutcome = { principal: Principal; expiresAtMs: number } | { reason: string };

/**
 * Bearer tokens through passport-jwt: an explicit algorithm allow-list (so
 * `alg: none` and HMAC/RSA confusion fail), the key prepared once as a
 * KeyObject (a string secret is re-imported on every verify, several times
 * the cost) or fetched from a JWKS, `exp` and `sub` required, `nbf`, `iss`
 * and `aud` enforced when configured, a small clock tolerance.
 */
export class JwtVerifier {
  private readonly passport = new Passport();

  constructor(config: Config) {
    const algorithms = allowedAlgorithms(config);
    const key = verificationKey(config);
    const keyOptions = key
      ? { secretOrKey: key as unknown as string }
      : {
          secretOrKeyProvider: passportJwtSecret({
            jwksUri: config.jwtJwksUrl!,
            cache: true,
            cacheMaxAge: 10 * 60_000,
            rateLimit: true,
            jwksRequestsPerMinute: 10,
          }),
        };
    const options: StrategyOptionsWithoutRequest = {
      jwtFromRequest: ExtractJwt.fromAuthHeaderAsBearerToken(),
      ...keyOptions,
      algorithms: algorithms as StrategyOptionsWithoutRequest['algorithms'],
      ignoreExpiration: false,
      jsonWebTokenOptions: { clockTolerance: config.jwtClockToleranceSeconds },
      ...(config.jwtIssuer ? { issuer: config.jwtIssuer } : {}),
      ...(config.jwtAudience ? { audience: config.jwtAudience } : {}),
    } as StrategyOptionsWithoutRequest;
    this.passport.use(
      'jwt',
      new JwtStrategy(options, (claims: Claims, done: (error: unknown, user?: Principal | false, info?: unknown) => void) => {
        // jsonwebtoken checks exp only when present; we require it.
        if (typeof claims.exp !== 'number') return done(null, false, { message: 'token has no exp claim' });
        if (typeof claims.sub !== 'string' || claims.sub.length === 0) return done(null, false, { message: 'token has no sub claim' });
        const principal: Principal = { id: `jwt:${claims.sub}`, subject: claims.sub, scopes: scopesOf(claims), method: 'jwt' };
        return done(null, principal, { expiresAtMs: claims.exp * 1000 });
      }),
    );
  }

  /** Verify the bearer token of these headers (HTTP headers or gRPC metadata); passport reads only `headers`. */
  verify(headers: CredentialHeaders): Promise<JwtOutcome> {
    const req = { headers };
    return new Promise((resolve) => {
      const authenticate = this.passport.authenticate(
        'jwt',
        { session: false },
        (error: unknown, principal: Principal | false, info: unknown) => {
          if (error || !principal) {
            const reason = info instanceof Error ? info.message : ((info as { message?: string })?.message ?? String(error));
            resolve({ reason });
          } else resolve({ principal, expiresAtMs: (info as { expiresAtMs: number }).expiresAtMs });
        },
      ) as (req: { headers: CredentialHeaders }, res: unknown, next: (error?: unknown) => void) => void;
      authenticate(req, {}, (error) => resolve({ reason: String(error) }));
    });
  }
}
