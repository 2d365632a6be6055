import { LRUCache } from 'lru-cache';
import type { Principal } from '../auth/principal.js';

export interface VerifiedKey {
  keyId: string;
  principal: Principal;
  expiresAt: Date | null;
  /** When last_used_at was last written (ms), so it is written at most once a minute. */
  usedAt: number;
}

/** More distinct keys than any deployment holds; a flood of them only evicts the oldest. */
const MAX_KEYS = 10_000;

/**
 * API keys verified against their rows, by the hash of the presented key
 * (the key itself is never kept), each trusted for a bounded time. A
 * revocation removes its key; `forget(null)` removes all of them, for when
 * revocations may have been missed. Each removal starts a new epoch, and a
 * verification that began in an earlier epoch is not stored: it may have
 * read the row before the revocation committed.
 */
export class VerifiedKeyCache {
  private readonly keys: LRUCache<string, VerifiedKey>;
  private currentEpoch = 0;

  constructor(ttlMs: number) {
    this.keys = new LRUCache<string, VerifiedKey>({ max: MAX_KEYS, ttl: ttlMs, ttlAutopurge: false });
  }

  get epoch(): number {
    return this.currentEpoch;
  }

  get(hash: Buffer): VerifiedKey | undefined {
    return this.keys.get(hash.toString('hex'));
  }

  set(hash: Buffer, key: VerifiedKey, startedInEpoch: number): void {
    if (startedInEpoch === this.currentEpoch) this.keys.set(hash.toString('hex'), key);
  }

  forget(keyId: string | null): void {
    this.currentEpoch += 1;
    if (keyId === null) {
      this.keys.clear();
      return;
    }
    for (const [hash, key] of this.keys.entries()) if (key.keyId === keyId) this.keys.delete(hash);
  }
}
