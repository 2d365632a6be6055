import { MemoryStore, type ClientRateLimitInfo, type Options, type Store } from 'express-rate-limit';

/** The shared store (rate-limit-redis's RedisStore), as the failover store uses it. */
export interface SharedStore {
  readonly prefix?: string;
  /** Loads what the store needs on the server (Lua scripts); called again after each reconnect. */
  init(options: Options): Promise<void> | void;
  get?(key: string): Promise<ClientRateLimitInfo | undefined>;
  increment(key: string): Promise<ClientRateLimitInfo>;
  decrement(key: string): Promise<void>;
  resetKey(key: string): Promise<void>;
}

/** Whether the shared store may be used, and where its failures are reported. */
export interface SharedStoreHealth {
  /** True while Redis answers; a plain field read on every request. */
  readonly up: boolean;
  /**
   * The call's result, or a rejection as soon as Redis is judged down (a
   * stalled server never answers, and node-redis has no deadline on a
   * command already written).
   */
  guard<T>(call: Promise<T>): Promise<T>;
  /** A call to the shared store failed: every store switches to local counters until Redis is back. */
  reportFailure(error: unknown): void;
}

/**
 * An express-rate-limit Store that keeps counters in the shared store
 * (Redis) while it works and in a local MemoryStore while it does not, so a
 * request is never failed, or held up for long, because of Redis. Whether
 * Redis works is decided by the `SharedStoreHealth` all limiters share (one
 * warning when it goes, one info when it comes back); this store only reads
 * `health.up` and reports the failures it sees.
 *
 * While Redis is away each replica counts on its own, so a client can get up
 * to one limit per replica; the counts taken locally are not carried over when
 * Redis returns.
 */
export class FailoverStore implements Store {
  /** Counters are meant to be shared between replicas (it tells express-rate-limit's double-count check). */
  readonly localKeys = false;
  readonly prefix: string;
  private readonly local = new MemoryStore();
  private options: Options | null = null;

  constructor(
    private readonly shared: SharedStore,
    private readonly health: SharedStoreHealth,
  ) {
    this.prefix = shared.prefix ?? '';
  }

  /** Called once by express-rate-limit when the limiter is created. */
  init(options: Options): void {
    this.options = options;
    this.local.init(options);
  }

  /** Prepare the shared store; called each time Redis becomes reachable, before `health.up` turns true. */
  async prepare(): Promise<void> {
    if (!this.options) throw new Error('FailoverStore.prepare() before the limiter initialised it');
    await this.shared.init(this.options);
  }

  increment(key: string): Promise<ClientRateLimitInfo> {
    return this.health.up ? this.incrementShared(key) : this.local.increment(key);
  }

  private async incrementShared(key: string): Promise<ClientRateLimitInfo> {
    try {
      return await this.health.guard(this.shared.increment(key));
    } catch (error) {
      this.health.reportFailure(error);
      return this.local.increment(key);
    }
  }

  async get(key: string): Promise<ClientRateLimitInfo | undefined> {
    if (this.health.up && this.shared.get) {
      try {
        return await this.health.guard(this.shared.get(key));
      } catch (error) {
        this.health.reportFailure(error);
      }
    }
    return this.local.get(key);
  }

  async decrement(key: string): Promise<void> {
    if (this.health.up) {
      try {
        await this.health.guard(this.shared.decrement(key));
        return;
      } catch (error) {
        this.health.reportFailure(error);
      }
    }
    await this.local.decrement(key);
  }

  /** Forgets the key everywhere, so a reset also clears what was counted during an outage. */
  async resetKey(key: string): Promise<void> {
    await this.local.resetKey(key);
    if (!this.health.up) return;
    try {
      await this.health.guard(this.shared.resetKey(key));
    } catch (error) {
      this.health.reportFailure(error);
    }
  }

  /** Local counters only: the Redis store cannot list its keys. */
  async resetAll(): Promise<void> {
    await this.local.resetAll();
  }

  shutdown(): void {
    this.local.shutdown();
  }
}
