import type { Request } from 'express';
import type { ClientRateLimitInfo, Options } from 'express-rate-limit';
import { describe, expect, it } from 'vitest';
import { clientAddressKey } from '../../src/features/rate-limits/client-address.js';
import { FailoverStore, type SharedStore, type SharedStoreHealth } from '../../src/features/rate-limits/failover-store.js';

const withIp = (ip: string | undefined) => ({ ip }) as Request;

describe('clientAddressKey', () => {
  it('keys IPv4 as is and IPv4-mapped IPv6 as the IPv4 address', () => {
    expect(clientAddressKey(withIp('203.0.113.7'))).toBe('203.0.113.7');
    expect(clientAddressKey(withIp('::ffff:203.0.113.7'))).toBe('203.0.113.7');
  });

  it('groups IPv6 addresses by /56, so one subscriber cannot rotate addresses', () => {
    const key = clientAddressKey(withIp('2001:db8:1:2a00::1'));
    expect(clientAddressKey(withIp('2001:db8:1:2aff:ffff::9'))).toBe(key);
    expect(clientAddressKey(withIp('2001:db8:1:2b00::1'))).not.toBe(key);
  });

  it('gives requests whose socket is gone one shared key', () => {
    expect(clientAddressKey(withIp(undefined))).toBe('unknown');
  });
});

class FakeHealth implements SharedStoreHealth {
  up = true;
  readonly failures: unknown[] = [];

  guard<T>(call: Promise<T>): Promise<T> {
    return call;
  }

  reportFailure(error: unknown): void {
    this.failures.push(error);
    this.up = false;
  }
}

class FakeShared implements SharedStore {
  readonly prefix = 'rl:test:';
  readonly counts = new Map<string, number>();
  initialisedWith: Options | null = null;
  failing = false;

  init(options: Options): void {
    this.initialisedWith = options;
  }

  async increment(key: string): Promise<ClientRateLimitInfo> {
    if (this.failing) throw new Error('connection lost');
    const totalHits = (this.counts.get(key) ?? 0) + 1;
    this.counts.set(key, totalHits);
    return { totalHits, resetTime: new Date(Date.now() + 60_000) };
  }

  async decrement(key: string): Promise<void> {
    this.counts.set(key, (this.counts.get(key) ?? 1) - 1);
  }

  async resetKey(key: string): Promise<void> {
    this.counts.delete(key);
  }
}

function failoverStore() {
  const shared = new FakeShared();
  const health = new FakeHealth();
  const store = new FailoverStore(shared, health);
  store.init({ windowMs: 60_000 } as Options);
  return { shared, health, store };
}

describe('FailoverStore', () => {
  it('counts in the shared store while it is up', async () => {
    const { shared, store } = failoverStore();
    expect((await store.increment('alice')).totalHits).toBe(1);
    expect((await store.increment('alice')).totalHits).toBe(2);
    expect(shared.counts.get('alice')).toBe(2);
    expect(store.prefix).toBe('rl:test:');
    store.shutdown();
  });

  it('answers from local counters when a shared call fails, and reports the failure once per call', async () => {
    const { shared, health, store } = failoverStore();
    await store.increment('alice');
    shared.failing = true;
    expect((await store.increment('alice')).totalHits).toBe(1);
    expect(health.failures).toHaveLength(1);
    // Down: the shared store is not tried again until the health says up.
    expect((await store.increment('alice')).totalHits).toBe(2);
    expect(health.failures).toHaveLength(1);
    store.shutdown();
  });

  it('goes back to the shared counters when the health is up again', async () => {
    const { shared, health, store } = failoverStore();
    health.up = false;
    await store.increment('alice');
    expect(shared.counts.size).toBe(0);
    health.up = true;
    expect((await store.increment('alice')).totalHits).toBe(1);
    expect(shared.counts.get('alice')).toBe(1);
    store.shutdown();
  });

  it('prepares the shared store with the options the limiter gave it', async () => {
    const { shared, store } = failoverStore();
    await store.prepare();
    expect(shared.initialisedWith).toMatchObject({ windowMs: 60_000 });
    await expect(new FailoverStore(new FakeShared(), new FakeHealth()).prepare()).rejects.toThrow(/before the limiter/);
    store.shutdown();
  });

  it('resets a key in both stores', async () => {
    const { shared, health, store } = failoverStore();
    health.up = false;
    await store.increment('alice');
    health.up = true;
    await store.increment('alice');
    await store.resetKey('alice');
    expect(shared.counts.has('alice')).toBe(false);
    health.up = false;
    expect((await store.increment('alice')).totalHits).toBe(1);
    store.shutdown();
  });
});
