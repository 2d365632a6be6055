import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { MemoryStore, rateLimit, type AugmentedRequest, type Options, type Store } from 'express-rate-limit';
import { RedisStore } from 'rate-limit-redis';
import type { Config } from '../../config/config.js';
import { TooManyRequestsError } from '../../errors/gateway-error.js';
import type { Logger } from '../../infra/logger.js';
import { clientAddressKey } from './client-address.js';
import { FailoverStore } from './failover-store.js';
import { RedisConnection } from './redis-connection.js';

/** Where the counters live now; reported by /health/detailed. */
export interface RateLimitStatus {
  store: 'redis' | 'memory';
  /** False while REDIS_URL is set but Redis cannot be used (counters are then per replica). */
  healthy: boolean;
  /** Why not healthy, e.g. "redis unreachable: connect ECONNREFUSED 10.0.0.5:6379"; never the password. */
  detail: string | null;
}

/**
 * The gateway's rate limits, as Express middleware. Each answers a request
 * over its limit with `next(new TooManyRequestsError(…))`, so the problem
 * middleware writes the 429 (problem+json, Retry-After); every response
 * that passes a limiter carries the standard `RateLimit` and
 * `RateLimit-Policy` headers (IETF draft 8), one entry per limiter, named
 * "client", "principal" and "inference".
 */
export interface RateLimits {
  /** Before any credential is checked or body parsed: per client address (config.rateLimitPerIp). */
  perClient: RequestHandler;
  /** After authentication, before body parsing: per principal (req.context.principal!.id), config.rateLimitPerPrincipal. */
  perPrincipal: RequestHandler;
  /** Same, stricter, for inference routes (config.rateLimitInferencePerPrincipal); a separate counter. */
  inference: RequestHandler;
  /**
   * The same limits for a caller that is not an Express request (the gRPC
   * front): counts one request against `limiter`'s counter for `key` — the
   * very counter its middleware uses, so a client's REST and gRPC calls add
   * up — and throws TooManyRequestsError when over the limit.
   */
  consume(limiter: LimiterName, key: string): Promise<void>;
  /** For /health/detailed: redis unreachable → { store: 'memory', healthy: false, detail: 'redis unreachable: …' }. */
  status(): RateLimitStatus;
  /** Quit the Redis client and stop the local counters' timers. */
  close(): Promise<void>;
}

export type LimiterName = 'client' | 'principal' | 'inference';

/** What the limit counts, for the 429 detail. */
const COUNTED: Record<LimiterName, string> = {
  client: 'requests from this address',
  principal: 'requests',
  inference: 'inference requests',
};

/** Redis keys: one namespace per limiter, so the same principal has separate counters. */
const REDIS_PREFIX = 'device-ops:rate-limit:';

const MEMORY_HEALTHY: RateLimitStatus = Object.freeze({ store: 'memory', healthy: true, detail: null });

// On a route without authentication (a wiring mistake) this still limits,
// by address, rather than failing the request.
const principalKey = (req: Request): string => req.context.principal?.id ?? `address:${clientAddressKey(req)}`;

/**
 * Build the limiters from config. With REDIS_URL the counters live in Redis
 * (shared by every replica) and fall back to local counters while Redis is
 * unreachable; this waits briefly for Redis at startup but never fails
 * because of it. Without REDIS_URL the counters are local.
 */
export async function createRateLimits(config: Config, logger: Logger): Promise<RateLimits> {
  const log = logger.child({ component: 'rate-limits' });
  const windowMs = config.rateLimitWindowSeconds * 1000;
  const redis = config.redisUrl ? new RedisConnection(config.redisUrl, log) : null;
  const stores: (FailoverStore | MemoryStore)[] = [];
  const byName = new Map<LimiterName, { store: Store; limit: number }>();

  const storeFor = (name: LimiterName): Store => {
    let store: FailoverStore | MemoryStore;
    if (redis) {
      const shared = new RedisStore({ sendCommand: redis.sendCommand, prefix: `${REDIS_PREFIX}${name}:` });
      store = new FailoverStore(shared, redis);
      redis.register(store);
    } else {
      store = new MemoryStore();
    }
    stores.push(store);
    return store;
  };

  const limiter = (name: LimiterName, limit: number, keyGenerator: (req: Request) => string): RequestHandler => {
    const store = storeFor(name);
    byName.set(name, { store, limit });
    return rateLimit({
      windowMs,
      limit,
      standardHeaders: 'draft-8',
      legacyHeaders: false,
      // The policy's name in the RateLimit headers; a constant, where the
      // default recomputes "600-in-1min" on every request.
      identifier: name,
      keyGenerator,
      store,
      handler: refuse(name, COUNTED[name], limit, config.rateLimitWindowSeconds),
      // FailoverStore never throws; should a store fail anyway, let the request through.
      passOnStoreError: true,
      logger: libraryLogger(log),
      // express-rate-limit's checks each run once per limiter and catch real
      // misconfigurations (a store shared by two limiters, a key counted
      // twice per request, a bad store reply), so they stay on. Off: the
      // check that reads the keyGenerator's source text for "req.ip" — ours
      // handles IPv6 on purpose (client-address.ts). Its client-address checks
      // (trust proxy, X-Forwarded-For) belong to the default keyGenerator,
      // which is replaced: TRUST_PROXY cannot parse to `true`, and a spoofed
      // X-Forwarded-For is client traffic that must not write to the log.
      validate: { keyGeneratorIpFallback: false },
    });
  };

  const limits = {
    perClient: limiter('client', config.rateLimitPerIp, clientAddressKey),
    perPrincipal: limiter('principal', config.rateLimitPerPrincipal, principalKey),
    inference: limiter('inference', config.rateLimitInferencePerPrincipal, principalKey),
  };
  // After the limiters exist: each store must have its window before Redis scripts load.
  await redis?.start();

  const consume = async (name: LimiterName, key: string): Promise<void> => {
    const { store, limit } = byName.get(name)!;
    let hits: { totalHits: number; resetTime?: Date | undefined };
    try {
      hits = await store.increment(key);
    } catch {
      return; // as passOnStoreError: a failing store lets the request through
    }
    if (hits.totalHits <= limit) return;
    const seconds = retryAfterSeconds(hits.resetTime, config.rateLimitWindowSeconds);
    throw new TooManyRequestsError(overLimitDetail(limit, COUNTED[name], config.rateLimitWindowSeconds, seconds), seconds, name);
  };

  return {
    ...limits,
    consume,
    status: () => redis?.status() ?? MEMORY_HEALTHY,
    close: async () => {
      await redis?.close();
      for (const store of stores) store.shutdown();
    },
  };
}

/**
 * The limiter's answer when over the limit: hand a TooManyRequestsError to
 * the gateway's error middleware. Built once per limiter.
 */
function refuse(name: string, counted: string, limit: number, windowSeconds: number) {
  return (req: Request, _res: Response, next: NextFunction, used: Options): void => {
    const seconds = retryAfterSeconds((req as AugmentedRequest)[used.requestPropertyName]?.resetTime, windowSeconds);
    next(new TooManyRequestsError(overLimitDetail(limit, counted, windowSeconds, seconds), seconds, name));
  };
}

const retryAfterSeconds = (resetTime: Date | undefined, windowSeconds: number): number =>
  Math.max(1, Math.ceil(resetTime ? (resetTime.getTime() - Date.now()) / 1000 : windowSeconds));

const overLimitDetail = (limit: number, counted: string, windowSeconds: number, retryAfter: number): string =>
  `Rate limit of ${limit} ${counted} per ${windowSeconds} s reached; retry in ${retryAfter} s.`;

/** express-rate-limit's logger (error first, message second) onto ours; it logs only misconfigurations. */
function libraryLogger(log: Logger) {
  return {
    warn: (error: unknown, message?: string) => log.warn(message ?? 'rate limiter configuration warning', { err: error }),
    error: (error: unknown, message?: string) => log.error(message ?? 'rate limiter misconfigured', { err: error }),
  };
}
