import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Logger } from '../../infra/logger.js';
import type { Principal } from '../auth/principal.js';
import { VerifiedKeyCache } from './verified-key-cache.js';
import type { ApiKey, ApiKeyScope, ApiKeyStore } from './api-key-types.js';

/** How revocations travel between gateway instances (the session bus). */
export interface RevocationChannel {
  publishKeyRevoked(keyId: string): void;
  onKeyRevoked(listener: (keyId: string | null) => void): () => void;
}

export interface ApiKeyServiceOptions {
  /** The bootstrap admin key (ADMIN_API_KEY), hashed at once and not kept. */
  bootstrapAdminKey?: string | undefined;
  /** API_KEY_CACHE_SECONDS: 0 reads the key's row on every request. */
  cacheSeconds?: number;
  /** Revocations to and from the other instances; this instance only when absent. */
  revocations?: RevocationChannel;
}

/** Keys look like dok_<12 prefix chars>_<43 secret chars>: the prefix finds the row, the whole key is hashed. */
const KEY_PATTERN = /^dok_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$/;
/** last_used_at is written at most this often per key, not on every request (the store's update is conditional too). */
export const TOUCH_INTERVAL_MS = 60_000;
const BOOTSTRAP_ID = 'bootstrap-admin';

const sha256 = (value: string): Buffer => createHash('sha256').update(value).digest();

/** Why a key was refused; logged and counted, never returned to the client. */
export type ApiKeyRefusal = 'malformed' | 'unknown' | 'mismatch' | 'revoked' | 'expired';

/**
 * API keys: created (shown once), listed, revoked, and checked on every
 * request. A verified key is trusted from memory for API_KEY_CACHE_SECONDS,
 * so a request costs a hash rather than a database read; a revocation is
 * pushed to every instance (and any gap in those notifications empties the
 * cache), so a revoked key is refused everywhere at once (ADR 0030).
 */
export class ApiKeyService {
  private readonly bootstrapHash: Buffer | null;
  private readonly verified: VerifiedKeyCache | null;
  private readonly revocations: RevocationChannel | undefined;

  constructor(
    private readonly store: ApiKeyStore,
    private readonly logger: Logger,
    options: ApiKeyServiceOptions = {},
  ) {
    // Hashed once at startup; the clear key is not kept.
    this.bootstrapHash = options.bootstrapAdminKey ? sha256(options.bootstrapAdminKey) : null;
    const seconds = options.cacheSeconds ?? 0;
    this.verified = seconds > 0 ? new VerifiedKeyCache(seconds * 1000) : null;
    this.revocations = options.revocations;
    this.revocations?.onKeyRevoked((keyId) => this.verified?.forget(keyId));
  }

  /** A new key: shown once in the response, stored only as its hash. */
  async create(request: { name: string; scopes: ApiKeyScope[]; expiresAt?: Date }, createdBy: string): Promise<{ key: string; record: ApiKey }> {
    const prefix = randomBytes(9).toString('base64url').replace(/[-_]/g, 'x').slice(0, 12);
    const key = `dok_${prefix}_${randomBytes(32).toString('base64url')}`;
    const record: ApiKey = {
      id: randomUUID(),
      name: request.name,
      prefix,
      scopes: [...new Set(request.scopes)],
      createdBy,
      createdAt: new Date(),
      expiresAt: request.expiresAt ?? null,
      lastUsedAt: null,
      revokedAt: null,
    };
    await this.store.create({ ...record, keyHash: sha256(key).toString('hex') });
    return { key, record };
  }

  list(): Promise<ApiKey[]> {
    return this.store.list();
  }

  async revoke(id: string): Promise<ApiKey | undefined> {
    const key = await this.store.revoke(id, new Date());
    // After the row says so, so an instance that reads it again sees it revoked.
    this.verified?.forget(id);
    this.revocations?.publishKeyRevoked(id);
    return key;
  }

  /** The principal a presented key stands for, or why it is refused. Constant-time comparison. */
  async authenticate(presented: string): Promise<Principal | ApiKeyRefusal> {
    const hash = sha256(presented);
    if (this.bootstrapHash && timingSafeEqual(hash, this.bootstrapHash)) {
      return { id: `key:${BOOTSTRAP_ID}`, subject: BOOTSTRAP_ID, scopes: ['admin'], method: 'api-key' };
    }
    const now = new Date();
    const cached = this.verified?.get(hash);
    if (cached) {
      if (cached.expiresAt && cached.expiresAt <= now) return 'expired';
      this.touchIfDue(cached.keyId, cached.usedAt, now, (at) => (cached.usedAt = at));
      return cached.principal;
    }
    const match = KEY_PATTERN.exec(presented);
    if (!match) return 'malformed';
    // A revocation heard while the row is read must win over what the read returns.
    const epoch = this.verified?.epoch;
    const stored = await this.store.findByPrefix(match[1]!);
    if (!stored) return 'unknown';
    if (!timingSafeEqual(hash, Buffer.from(stored.keyHash, 'hex'))) return 'mismatch';
    if (stored.revokedAt) return 'revoked';
    if (stored.expiresAt && stored.expiresAt <= now) return 'expired';
    // Shared by every request that presents the key while cached: frozen, so none can change it for the others.
    const principal = Object.freeze({ id: `key:${stored.id}`, subject: stored.name, scopes: Object.freeze([...stored.scopes]), method: 'api-key' }) as Principal;
    const entry = { keyId: stored.id, principal, expiresAt: stored.expiresAt, usedAt: stored.lastUsedAt?.getTime() ?? 0 };
    this.touchIfDue(stored.id, entry.usedAt, now, (at) => (entry.usedAt = at));
    this.verified?.set(hash, entry, epoch!);
    return principal;
  }

  /** last_used_at, written behind: at most once a minute per key, never awaited by the request. */
  private touchIfDue(keyId: string, usedAt: number, now: Date, touched: (at: number) => void): void {
    if (now.getTime() - usedAt <= TOUCH_INTERVAL_MS) return;
    touched(now.getTime());
    this.store
      .touch(keyId, now, TOUCH_INTERVAL_MS)
      .catch((error: unknown) => this.logger.warn('could not record key use', { keyId, err: error }));
  }
}
