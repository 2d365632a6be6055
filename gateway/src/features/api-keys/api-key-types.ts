import { SCOPES, type Scope } from '../auth/scopes.js';

/** An API key holds any of the gateway's scopes. */
export const API_KEY_SCOPES = SCOPES;
export type ApiKeyScope = Scope;

/** An API key as stored: never the key itself, only its hash. */
export interface ApiKey {
  id: string;
  name: string;
  /** Non-secret start of the key, used to find its row. */
  prefix: string;
  scopes: ApiKeyScope[];
  createdBy: string;
  createdAt: Date;
  expiresAt: Date | null;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
}

export interface StoredApiKey extends ApiKey {
  /** Hex SHA-256 of the whole key. */
  keyHash: string;
}

export interface ApiKeyStore {
  create(key: StoredApiKey): Promise<void>;
  findByPrefix(prefix: string): Promise<StoredApiKey | undefined>;
  get(id: string): Promise<ApiKey | undefined>;
  list(): Promise<ApiKey[]>;
  /** Returns the key after revocation; undefined when unknown. */
  revoke(id: string, at: Date): Promise<ApiKey | undefined>;
  /** Records a use, unless one was recorded less than minIntervalMs before `at`. */
  touch(id: string, at: Date, minIntervalMs: number): Promise<void>;
}
