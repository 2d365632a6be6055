import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Principal } from './principal.js';

/** More distinct live tokens than one replica sees; a flood of them only evicts the oldest. */
const MAX_TOKENS = 10_000;
/** Even a long-lived token is verified again this often (a JWKS key may have been withdrawn). */
const MAX_TRUST_MS = 60_000;

/**
 * Bearer tokens this instance has verified, by their SHA-256 (the token is
 * not kept), each until the earlier of its own `exp` and a minute — as
 * Envoy's jwt_authn caches verified tokens. A JWT cannot be revoked, so a
 * verified one stays valid until it expires; the signature check, claim
 * parsing and passport's chain then run once per token rather than per
 * request. Only successes are kept.
 */
export class VerifiedTokenCache {
  private readonly tokens = new LRUCache<string, { principal: Principal; expiresAtMs: number }>({ max: MAX_TOKENS, ttl: MAX_TRUST_MS, ttlAutopurge: false });

  get(token: string): Principal | undefined {
    const known = this.tokens.get(digest(token));
    // The cache's own clock is monotonic; exp is wall-clock time, checked on each use too.
    return known && Date.now() < known.expiresAtMs ? known.principal : undefined;
  }

  /** `expiresAtMs`: the token's exp; a token about to expire is not worth keeping. */
  set(token: string, principal: Principal, expiresAtMs: number): void {
    const ttl = Math.min(MAX_TRUST_MS, expiresAtMs - Date.now());
    // Shared by every request that presents the token: frozen, so none can change it for the others.
    const frozen = Object.freeze({ ...principal, scopes: Object.freeze([...principal.scopes]) }) as Principal;
    if (ttl > 1_000) this.tokens.set(digest(token), { principal: frozen, expiresAtMs }, { ttl });
  }
}

const digest = (token: string) => createHash('sha256').update(token).digest('base64');
