import type { NextFunction, Request, Response } from 'express';
import type { Logger } from '../../infra/logger.js';
import type { Config } from '../../config/config.js';
import { UnauthorizedError } from '../../errors/gateway-error.js';
import type { ApiKeyService } from '../api-keys/api-key-service.js';
import { credentialOf, type AuthFailure, type CredentialHeaders } from './credentials.js';
import { JwtVerifier } from './jwt-verifier.js';
import { VerifiedTokenCache } from './verified-token-cache.js';
import type { Principal } from './principal.js';
import type { GatewayMetrics } from '../../infra/metrics.js';

export type { AuthFailure } from './credentials.js';

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
  private readonly verifiedTokens = new VerifiedTokenCache();

  constructor(
    config: Config,
    private readonly apiKeys: ApiKeyService | null,
    private readonly metrics?: GatewayMetrics,
  ) {
    this.jwt = config.authJwtEnabled ? new JwtVerifier(config) : null;
  }

  async authenticate(headers: CredentialHeaders): Promise<Principal | AuthFailure> {
    const credential = credentialOf(headers);
    if (credential.method === 'none' && 'reason' in credential) return credential;
    if (credential.method === 'jwt') {
      if (!this.jwt) return { method: 'jwt', reason: 'JWT authentication is disabled' };
      const token = (credential as { value: string }).value;
      const known = this.verifiedTokens.get(token);
      if (known) return known;
      const outcome = await this.jwt.verify(headers);
      if (!('principal' in outcome)) return { method: 'jwt', reason: outcome.reason };
      this.verifiedTokens.set(token, outcome.principal, outcome.expiresAtMs);
      return outcome.principal;
    }
    if (!this.apiKeys) return { method: 'api-key', reason: 'API key authentication is disabled' };
    const outcome = await this.apiKeys.authenticate((credential as { value: string }).value);
    return typeof outcome === 'string' ? { method: 'api-key', reason: outcome } : outcome;
  }

  /**
   * The principal, or the failure logged (method and reason, never the
   * credential) and counted; callers answer every failure with the same
   * UnauthorizedError.
   */
  async identify(headers: CredentialHeaders, log: Logger): Promise<Principal | AuthFailure> {
    const result = await this.authenticate(headers);
    if ('reason' in result) {
      log.info('authentication failed', { authMethod: result.method, reason: result.reason });
      this.metrics?.authFailures.inc({ method: result.method, reason: reasonLabel(result.reason) });
    }
    return result;
  }

  /** Middleware: sets req.context.principal, or fails with 401 before anything else runs. */
  middleware(onFailure?: (req: Request, failure: AuthFailure) => void) {
    return (req: Request, _res: Response, next: NextFunction): void => {
      this.identify(req.headers, req.context.log).then(
        (result) => {
          if ('reason' in result) {
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
