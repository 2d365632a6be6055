import type { NextFunction, Request, Response } from 'express';
import type { Config } from '../../config/config.js';
import { UnauthorizedError } from '../../errors/gateway-error.js';
import type { ApiKeyService } from '../api-keys/api-key-service.js';
import { JwtVerifier } from './jwt-verifier.js';
import type { Principal } from './principal.js';
import type { GatewayMetrics } from '../../infra/metrics.js';

export interface AuthFailure {
  method: 'jwt' | 'api-key' | 'none';
  /** Why, for logs and metrics only; the client always gets the same 401. */
  reason: string;
}

type Credential = { method: 'jwt'; value: string } | { method: 'api-key'; value: string } | AuthFailure;

/** Where the credential is: X-API-Key, Authorization: ApiKey …, or Authorization: Bearer …. */
function credentialOf(req: Request): Credential {
  const apiKey = req.headers['x-api-key'];
  if (typeof apiKey === 'string' && apiKey.length > 0) return { method: 'api-key', value: apiKey };
  const header = req.headers.authorization;
  if (!header) return { method: 'none', reason: 'no credentials' };
  const space = header.indexOf(' ');
  const scheme = space > 0 ? header.slice(0, space).toLowerCase() : header.toLowerCase();
  const value = space > 0 ? header.slice(space + 1).trim() : '';
  if (scheme === 'bearer' && value) return { method: 'jwt', value };
  if (scheme === 'apikey' && value) return { method: 'api-key', value };
  return { method: 'none', reason: 'unsupported Authorization scheme' };
}

/** A bounded metrics label for a failure reason (the reasons themselves are free text from libraries). */
export function reasonLabel(reason: string): string {
  const text = reason.toLowerCase();
  if (text === 'no credentials') return 'missing';
  if (text.includes('disabled')) return 'disabled';
  if (text.includes('expired')) return 'expired';
  if (text === 'revoked') return 'revoked';
  if (text === 'unknown') return 'unknown-key';
  if (text.includes('malformed') || text.includes('scheme') || text.includes('no auth token')) return 'malformed';
  return 'invalid';
}

/**
 * The gateway's authentication: JWT bearer tokens and API keys, each enabled
 * by config. Any failure is the same 401 problem for the client; the method
 * and reason go to the log (and to `onFailure`, for audit and metrics).
 */
export class Authenticator {
  private readonly jwt: JwtVerifier | null;

  constructor(
    config: Config,
    private readonly apiKeys: ApiKeyService | null,
    private readonly metrics?: GatewayMetrics,
  ) {
    this.jwt = config.authJwtEnabled ? new JwtVerifier(config) : null;
  }

  async authenticate(req: Request): Promise<Principal | AuthFailure> {
    const credential = credentialOf(req);
    if (credential.method === 'none' && 'reason' in credential) return credential;
    if (credential.method === 'jwt') {
      if (!this.jwt) return { method: 'jwt', reason: 'JWT authentication is disabled' };
      const outcome = await this.jwt.verify(req);
      return 'principal' in outcome ? outcome.principal : { method: 'jwt', reason: outcome.reason };
    }
    if (!this.apiKeys) return { method: 'api-key', reason: 'API key authentication is disabled' };
    const outcome = await this.apiKeys.authenticate((credential as { value: string }).value);
    return typeof outcome === 'string' ? { method: 'api-key', reason: outcome } : outcome;
  }

  /** Middleware: sets req.context.principal, or fails with 401 before anything else runs. */
  middleware(onFailure?: (req: Request, failure: AuthFailure) => void) {
    return (req: Request, _res: Response, next: NextFunction): void => {
      this.authenticate(req).then(
        (result) => {
          if ('reason' in result) {
            req.context.log.info('authentication failed', { authMethod: result.method, reason: result.reason });
            this.metrics?.authFailures.inc({ method: result.method, reason: reasonLabel(result.reason) });
            onFailure?.(req, result);
            next(new UnauthorizedError());
            return;
          }
          req.context.principal = result;
          next();
        },
        (error: unknown) => next(error),
      );
    };
  }
}
