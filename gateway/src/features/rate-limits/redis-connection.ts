import { createClient } from 'redis';
import type { RedisReply } from 'rate-limit-redis';
import type { Logger } from '../../infra/logger.js';
import type { SharedStoreHealth } from './failover-store.js';

/** A store whose server-side state (scripts) must be loaded before it is used. */
export interface PreparedStore {
  prepare(): Promise<void>;
}

export interface RedisConnectionTimings {
  /** A TCP connect (and handshake) slower than this counts as a failure. */
  connectTimeoutMs: number;
  /**
   * Calls waiting this long with no reply at all from Redis mean it has
   * stalled: pending calls go to local counters. Checked by one timer, so
   * detection takes between one and two periods.
   */
  replyTimeoutMs: number;
  /** While down, how often to check whether Redis answers again (besides the client's 'ready' event). */
  probeIntervalMs: number;
  /** Longest wait at startup for Redis before serving with local counters. */
  startupWaitMs: number;
  /** Longest reconnect delay; attempts back off exponentially up to it. */
  maxReconnectDelayMs: number;
}

export const DEFAULT_REDIS_TIMINGS: RedisConnectionTimings = Object.freeze({
  connectTimeoutMs: 1000,
  replyTimeoutMs: 500,
  probeIntervalMs: 1000,
  startupWaitMs: 1500,
  maxReconnectDelayMs: 2000,
});

type State = 'starting' | 'up' | 'down' | 'closed';

/**
 * The one Redis client behind every limiter, and the judgement of whether
 * Redis works. It goes down on the first failure (a client 'error' event, a
 * failed call reported by a store, or calls left without a reply) and logs
 * one warning; it comes back up only after every store has reloaded its
 * scripts on a ready connection, and logs one info. Nothing is logged per
 * request.
 *
 * The URL may hold a password: only host:port is ever logged, and the
 * password is cut out of error messages that reach the log or health detail.
 */
export class RedisConnection implements SharedStoreHealth {
  /** Read on every request by the stores; written only here. */
  up = false;
  /** host:port, safe to log. */
  readonly address: string;
  private state: State = 'starting';
  private detail: string | null = null;
  private readonly client: ReturnType<typeof createClient>;
  private readonly password: string | null;
  private readonly stores: PreparedStore[] = [];
  /** Bumped on every failure, so a recovery that raced one does not declare Redis up. */
  private failures = 0;
  private recovering = false;
  private probe: NodeJS.Timeout | null = null;
  private settleStartup: (() => void) | null = null;
  // Stall detection without a timer per call: guard() counts calls, one
  // interval timer checks that replies keep coming while calls wait.
  private inFlight = 0;
  private replies = 0;
  private waitingAtLastCheck = false;
  private repliesAtLastCheck = 0;
  private watchdog: NodeJS.Timeout | null = null;
  /** Rejected when Redis goes down, releasing every guarded call at once. */
  private down!: Promise<never>;
  private release!: (error: unknown) => void;

  constructor(
    url: string,
    private readonly log: Logger,
    private readonly timings: RedisConnectionTimings = DEFAULT_REDIS_TIMINGS,
  ) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      // Node's URL error carries the input, password included: never rethrow it.
      throw new Error('REDIS_URL is not a valid URL');
    }
    this.address = `${parsed.hostname}:${parsed.port || '6379'}`;
    this.password = parsed.password ? safeDecode(parsed.password) : null;
    this.armRelease();
    this.client = createClient({
      url,
      // Reject commands at once while disconnected rather than queue them
      // behind a request until Redis returns.
      disableOfflineQueue: true,
      // Covers only commands not yet written (node-redis drops the deadline
      // once a command is on the wire); guard() covers the rest.
      commandOptions: { timeout: timings.replyTimeoutMs },
      socket: {
        connectTimeout: timings.connectTimeoutMs,
        // Never give up (the default stops after a socket timeout); back off
        // 50 ms, 100 ms, … up to the cap, with jitter so replicas spread out.
        reconnectStrategy: (retries) =>
          Math.min(50 * 2 ** Math.min(retries, 16), timings.maxReconnectDelayMs) + Math.floor(Math.random() * 100),
      },
    });
    // Without an 'error' listener node-redis would throw from its emitter.
    this.client.on('error', (error: unknown) => this.reportFailure(error));
    this.client.on('ready', () => void this.recover());
  }

  /** For rate-limit-redis: one function for all stores, bound once. */
  readonly sendCommand = (...args: string[]): Promise<RedisReply> => this.client.sendCommand<RedisReply>(args);

  /** Stores to prepare each time Redis becomes reachable; register before start(). */
  register(store: PreparedStore): void {
    this.stores.push(store);
  }

  /**
   * Connect, and wait (at most `startupWaitMs`) until Redis is in use or has
   * failed once; never throws. The client keeps reconnecting in the background.
   */
  async start(): Promise<void> {
    const settled = new Promise<void>((resolve) => {
      this.settleStartup = resolve;
    });
    // Failures arrive as 'error' events; the promise only rejects when closed.
    this.client.connect().catch(() => undefined);
    const timer = setTimeout(() => this.settleStartup?.(), this.timings.startupWaitMs);
    await settled;
    clearTimeout(timer);
    this.settleStartup = null;
    if (this.state === 'starting') this.reportFailure(new Error(`no answer within ${this.timings.startupWaitMs} ms`));
  }

  status(): { store: 'redis' | 'memory'; healthy: boolean; detail: string | null } {
    return this.up ? { store: 'redis', healthy: true, detail: null } : { store: 'memory', healthy: false, detail: this.detail };
  }

  async guard<T>(call: Promise<T>): Promise<T> {
    this.inFlight += 1;
    try {
      return await Promise.race([call, this.down]);
    } finally {
      this.inFlight -= 1;
      this.replies += 1;
    }
  }

  reportFailure(error: unknown): void {
    if (this.state === 'closed') return;
    this.failures += 1;
    this.up = false;
    if (this.state === 'down') return;
    this.state = 'down';
    this.stopWatchdog();
    this.release(error);
    const reason = this.describe(error);
    this.detail = `redis unreachable: ${reason}`;
    this.log.warn('rate limits switched to local counters: Redis unreachable', { redis: this.address, reason });
    this.probe ??= setInterval(() => void this.recover(), this.timings.probeIntervalMs);
    this.probe.unref();
    this.settleStartup?.();
  }

  /** Load every store's scripts on a ready connection, then route counters to Redis again. */
  private async recover(): Promise<void> {
    if (this.state === 'up' || this.state === 'closed' || this.recovering || !this.client.isReady) return;
    this.recovering = true;
    const failuresBefore = this.failures;
    try {
      await this.withinReplyTimeout(Promise.all(this.stores.map((store) => store.prepare())));
    } catch (error) {
      this.reportFailure(error);
      return;
    } finally {
      this.recovering = false;
    }
    // A failure during preparation (or close) wins; the probe will try again.
    if (this.failures !== failuresBefore || (this.state as State) === 'closed') return;
    const wasDown = this.state === 'down';
    this.state = 'up';
    this.armRelease();
    this.startWatchdog();
    this.up = true;
    this.detail = null;
    if (this.probe) clearInterval(this.probe);
    this.probe = null;
    if (wasDown) this.log.info('rate limits shared through Redis again', { redis: this.address });
    else this.log.info('rate-limit counters shared through Redis', { redis: this.address });
    this.settleStartup?.();
  }

  /** Quit the client: pending commands get a moment to finish, then the socket is cut. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.up = false;
    this.detail = 'closed';
    this.release(new Error('rate limits closed'));
    this.stopWatchdog();
    if (this.probe) clearInterval(this.probe);
    this.probe = null;
    this.settleStartup?.();
    if (this.client.isOpen) await this.withinReplyTimeout(this.client.close()).catch(() => undefined);
    this.client.destroy();
  }

  private armRelease(): void {
    this.down = new Promise<never>((_resolve, reject) => {
      this.release = reject;
    });
    // Nobody may be waiting when it is rejected.
    this.down.catch(() => undefined);
  }

  private startWatchdog(): void {
    this.waitingAtLastCheck = false;
    this.repliesAtLastCheck = this.replies;
    this.watchdog = setInterval(() => this.checkReplies(), this.timings.replyTimeoutMs);
    this.watchdog.unref();
  }

  private stopWatchdog(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
  }

  /** Calls were waiting at the last check and still are, with no reply since: Redis has stalled. */
  private checkReplies(): void {
    const waiting = this.inFlight > 0;
    const stalled = waiting && this.waitingAtLastCheck && this.replies === this.repliesAtLastCheck;
    this.waitingAtLastCheck = waiting;
    this.repliesAtLastCheck = this.replies;
    if (stalled) this.reportFailure(new Error(`no reply within ${this.timings.replyTimeoutMs} ms`));
  }

  private withinReplyTimeout<T>(work: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no reply within ${this.timings.replyTimeoutMs} ms`)), this.timings.replyTimeoutMs);
    });
    return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
  }

  /** The error's message (or code: connection errors can have an empty message), without the password. */
  private describe(error: unknown): string {
    const text =
      error instanceof Error
        ? error.message || String((error as NodeJS.ErrnoException).code ?? error.name)
        : String(error);
    return this.password ? text.split(this.password).join('***') : text;
  }
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}
