import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Logger } from '../../infra/logger.js';
import type { Principal } from '../auth/principal.js';
import type { ApiKey, ApiKeyScope, ApiKeyStore } from './api-key-types.js';

/** Keys look like dok_<12 prefix chars>_<43 secret chars>: the prefix finds the row, the whole key is hashed. */
const KEY_PATTERN = /^dok_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$/;
/** last_used_at is written at most this often per key, not on every request. */
const TOUCH_INTERVAL_MS = 60_000;
const BOOTSTRAP_ID = 'bootstrap-admin';

const sha256 = (value: string): Buffer => createHash('sha256').update(value).digest();

/** Why a key was refused; logged and counted, never returned to the client. */
export type ApiKeyRefusal = 'malformed' | 'unknown' | 'mismatch' | 'revoked' | 'expired';

export class ApiKeyService {
  private readonly bootstrapHash: Buffer | null;

  constructor(
    private readonly store: ApiKeyStore,
    private readonly logger: Logger,
    bootstrapAdminKey?: string,
  ) {
    // Hashed once at startup; the clear key is not kept.
    this.bootstrapHash = bootstrapAdminKey ? sha256(bootstrapAdminKey) : null;
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

  revoke(id: string): Promise<ApiKey | undefined> {
    return this.store.revoke(id, new Date());
  }

  /** The principal a presented key stands for, or why it is refused. Constant-time comparison. */
  async authenticate(presented: string): Promise<Principal | ApiKeyRefusal> {
    if (this.bootstrapHash && timingSafeEqual(sha256(presented), this.bootstrapHash)) {
      return { id: `key:${BOOTSTRAP_ID}`, subject: BOOTSTRAP_ID, scopes: ['admin'], method: 'api-key' };
    }
    const match = KEY_PATTERN.exec(presented);
    if (!match) return 'malformed';
    const stored = await this.store.findByPrefix(match[1]!);
    if (!stored) return 'unknown';
    if (!timingSafeEqual(sha256(presented), Buffer.from(stored.keyHash, 'hex'))) return 'mismatch';
    const now = new Date();
    if (stored.revokedAt) return 'revoked';
    if (stored.expiresAt && stored.expiresAt <= now) return 'expired';
    if (!stored.lastUsedAt || now.getTime() - stored.lastUsedAt.getTime() > TOUCH_INTERVAL_MS) {
      this.store.touch(stored.id, now).catch((error: unknown) => this.logger.warn('could not record key use', { keyId: stored.id, err: error }));
    }
    return { id: `key:${stored.id}`, subject: stored.name, scopes: stored.scopes, method: 'api-key' };
  }
}
