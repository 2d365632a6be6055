import type { Knex } from 'knex';
import { ApiKeyDbStore, FakeApiKeyStore } from './features/api-keys/api-key-store.js';
import type { ApiKeyStore } from './features/api-keys/api-key-types.js';
import { AuditDbStore, FakeAuditStore } from './features/audit/audit-store.js';
import type { AuditStore } from './features/audit/audit-types.js';
import { createFakeSessionStores, type FakeSessionStores } from './features/sessions/fake-session-stores.js';
import { createSessionStores, type SessionStores } from './features/sessions/session-store.js';

/** Every store the gateway uses. */
export interface GatewayStores extends SessionStores {
  apiKeys: ApiKeyStore;
  audit: AuditStore;
}

/** The real wiring, over the gateway's database. */
export function createStores(db: Knex): GatewayStores {
  return { ...createSessionStores(db), apiKeys: new ApiKeyDbStore(db), audit: new AuditDbStore(db) };
}

export interface FakeGatewayStores extends FakeSessionStores {
  apiKeys: FakeApiKeyStore;
  audit: FakeAuditStore;
}

/** In-memory twins, for unit tests of logic. */
export function createFakeStores(): FakeGatewayStores {
  return { ...createFakeSessionStores(), apiKeys: new FakeApiKeyStore(), audit: new FakeAuditStore() };
}
