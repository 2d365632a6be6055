import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ApiKeyService, TOUCH_INTERVAL_MS } from '../../src/features/api-keys/api-key-service.js';
import { FakeApiKeyStore } from '../../src/features/api-keys/api-key-store.js';
import { LocalSessionBus } from '../../src/infra/bus/session-bus.js';
import { createLogger } from '../../src/infra/logger.js';

/** The store, counting the reads authentication makes and able to hold one read until released. */
class CountingStore extends FakeApiKeyStore {
  reads = 0;
  touches = 0;
  hold: Promise<void> | null = null;

  override async findByPrefix(prefix: string) {
    this.reads += 1;
    const row = await super.findByPrefix(prefix);
    if (this.hold) await this.hold;
    return row;
  }

  override async touch(id: string, at: Date, minIntervalMs: number) {
    this.touches += 1;
    return super.touch(id, at, minIntervalMs);
  }
}

const logger = () => createLogger({ level: 'error', stream: new PassThrough() });

async function setup(cacheSeconds: number) {
  const store = new CountingStore();
  const bus = new LocalSessionBus();
  const service = new ApiKeyService(store, logger(), { cacheSeconds, revocations: bus });
  const { key, record } = await service.create({ name: 'ci', scopes: ['inference'] }, 'admin');
  return { store, bus, service, key, record };
}

describe('verified API keys cache', () => {
  afterEach(() => vi.useRealTimers());

  it('reads a key once, then answers from memory with the same principal', async () => {
    const { store, service, key, record } = await setup(30);
    const first = await service.authenticate(key);
    for (let i = 0; i < 10; i += 1) expect(await service.authenticate(key)).toEqual(first);
    expect(first).toEqual({ id: `key:${record.id}`, subject: 'ci', scopes: ['inference'], method: 'api-key' });
    expect(store.reads).toBe(1);
  });

  it('with API_KEY_CACHE_SECONDS=0 reads the row on every request', async () => {
    const { store, service, key } = await setup(0);
    for (let i = 0; i < 3; i += 1) await service.authenticate(key);
    expect(store.reads).toBe(3);
  });

  it('a wrong secret with a known prefix is never answered from the cache', async () => {
    const { service, key } = await setup(30);
    await service.authenticate(key);
    const forged = key.slice(0, -4) + (key.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    expect(await service.authenticate(forged)).toBe('mismatch');
  });

  it('reads again after the cache time, and honours an expiry inside it', async () => {
    vi.useFakeTimers({ now: new Date('2026-12-03T12:00:00Z'), toFake: ['Date', 'performance'] });
    const { store, service } = await setup(30);
    const { key } = await service.create({ name: 'short', scopes: ['inference'], expiresAt: new Date('2026-12-03T12:00:10Z') }, 'admin');
    expect(await service.authenticate(key)).toMatchObject({ subject: 'short' });
    vi.setSystemTime(new Date('2026-12-03T12:00:11Z'));
    expect(await service.authenticate(key)).toBe('expired');
    expect(store.reads).toBe(1);
  });

  it('a revocation empties the key from this instance at once, and from others through the bus', async () => {
    const { store, bus, service, key, record } = await setup(30);
    await service.authenticate(key);
    await service.revoke(record.id);
    expect(await service.authenticate(key)).toBe('revoked');

    // Another instance sharing the store hears the revocation on the bus.
    const { key: other, record: otherRecord } = await service.create({ name: 'other', scopes: ['inference'] }, 'admin');
    const elsewhere = new ApiKeyService(store, logger(), { cacheSeconds: 30, revocations: bus });
    expect(await elsewhere.authenticate(other)).toMatchObject({ subject: 'other' });
    await store.revoke(otherRecord.id, new Date());
    expect(await elsewhere.authenticate(other)).toMatchObject({ subject: 'other' }); // still its cached copy
    bus.publishKeyRevoked(otherRecord.id);
    expect(await elsewhere.authenticate(other)).toBe('revoked');
  });

  it('a verification that read the row before a revocation was heard is not cached', async () => {
    const { store, bus, service, key, record } = await setup(30);
    let release!: () => void;
    store.hold = new Promise((resolve) => (release = resolve));
    const racing = service.authenticate(key);
    await new Promise((resolve) => setImmediate(resolve));
    // The row is revoked and announced while the read above is in flight (it saw the key valid).
    await store.revoke(record.id, new Date());
    bus.publishKeyRevoked(record.id);
    release();
    store.hold = null;
    expect(await racing).toMatchObject({ subject: 'ci' });
    expect(await service.authenticate(key)).toBe('revoked');
  });

  it('a gap in revocations (null) forgets every key', async () => {
    const store = new CountingStore();
    let hear: (keyId: string | null) => void = () => undefined;
    const channel = { publishKeyRevoked: () => undefined, onKeyRevoked: (listener: typeof hear) => ((hear = listener), () => undefined) };
    const service = new ApiKeyService(store, logger(), { cacheSeconds: 30, revocations: channel });
    const { key } = await service.create({ name: 'ci', scopes: ['inference'] }, 'admin');
    await service.authenticate(key);
    await service.authenticate(key);
    hear(null);
    await service.authenticate(key);
    expect(store.reads).toBe(2);
  });

  it('writes last_used_at at most once a minute per key', async () => {
    vi.useFakeTimers({ now: new Date('2026-12-03T12:00:00Z'), toFake: ['Date', 'performance'] });
    const { store, service, key, record } = await setup(300);
    for (let i = 0; i < 20; i += 1) await service.authenticate(key);
    expect(store.touches).toBe(1);
    vi.setSystemTime(new Date(Date.now() + TOUCH_INTERVAL_MS + 1));
    await service.authenticate(key);
    expect(store.touches).toBe(2);
    expect(store.rows.get(record.id)!.lastUsedAt).toEqual(new Date(Date.now()));
  });
});
