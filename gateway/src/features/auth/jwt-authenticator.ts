import { createSecretKey, type KeyObject } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { Passport } from 'passport';
import { ExtractJwt, Strategy as JwtStrategy, type StrategyOptionsWithoutRequest } from 'passport-jwt';
import type { Config } from '../../config/config.js';
import { UnauthorizedError } from '../../errors/gateway-error.js';
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

/**
 * Bearer-token authentication through passport-jwt. HS256 only; the key is
 * prepared once as a KeyObject (jsonwebtoken otherwise rebuilds it on every
 * verify, several times the cost); `exp` is required; issuer and audience
 * are enforced when configured.
 */
export class JwtAuthenticator {
  private readonly passport = new Passport();
  readonly key: KeyObject;

  constructor(config: Config) {
    this.key = createSecretKey(Buffer.from(config.jwtSecret, 'utf8'));
    const options: StrategyOptionsWithoutRequest = {
      jwtFromRequest: ExtractJwt.fromAuthHeaderAsBearerToken(),
      // jsonwebtoken accepts a KeyObject; the type only lists string | Buffer.
      secretOrKey: this.key as unknown as string,
      algorithms: ['HS256'],
      ignoreExpiration: false,
      jsonWebTokenOptions: { clockTolerance: config.jwtClockToleranceSeconds },
      ...(config.jwtIssuer ? { issuer: config.jwtIssuer } : {}),
      ...(config.jwtAudience ? { audience: config.jwtAudience } : {}),
    };
    this.passport.use(
      'jwt',
      new JwtStrategy(options, (claims: Claims, done: (error: unknown, user?: Principal | false, info?: unknown) => void) => {
        // jsonwebtoken checks exp only when present; we require it.
        if (typeof claims.exp !== 'number') return done(null, false, { message: 'token has no exp claim' });
        if (typeof claims.sub !== 'string' || claims.sub.length === 0)
          return done(null, false, { message: 'token has no sub claim' });
        return done(null, { subject: claims.sub, scopes: scopesOf(claims), method: 'jwt' });
      }),
    );
  }

  /** Middleware: sets req.context.principal or fails with 401 before anything else runs. */
  middleware() {
    return (req: Request, res: Response, next: NextFunction): void => {
      const authenticate = this.passport.authenticate(
        'jwt',
        { session: false },
        (error: unknown, principal: Principal | false, info: unknown) => {
          if (error || !principal) {
            const reason = info instanceof Error ? info.message : ((info as { message?: string })?.message ?? String(error));
            req.context.log.info('authentication failed', { method: 'jwt', reason });
            next(new UnauthorizedError());
            return;
          }
          req.context.principal = principal;
          next();
        },
      ) as (req: Request, res: Response, next: NextFunction) => void;
      authenticate(req, res, next);
    };
  }
}
