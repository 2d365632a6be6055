import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { repoRoot } from '../infra/paths.js';

/**
 * One schema for every setting: its environment variable, what it does, its
 * default (secrets have none), and how it is parsed. Parsed once at boot,
 * frozen, and passed down; nothing else reads process.env.
 */
interface Setting<S extends z.ZodType> {
  env: string;
  doc: string;
  schema: S;
  secret?: boolean;
}

const setting = <S extends z.ZodType>(env: string, doc: string, schema: S, secret = false): Setting<S> => ({
  env,
  doc,
  schema,
  secret,
});

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const bool = (fallback: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no'], { error: 'must be true or false' })
    .default(fallback ? 'true' : 'false')
    .transform((value) => value === 'true' || value === '1' || value === 'yes');
const optionalText = z.string().trim().min(1).optional();
const hostPort = z
  .string()
  .trim()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must be host:port')
  .refine((value) => Number(value.slice(value.lastIndexOf(':') + 1)) <= 65535, 'port must be at most 65535');
const directory = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .transform((value) => (isAbsolute(value) ? value : resolve(repoRoot, value)));
const commaList = <S extends z.ZodType<unknown, string>>(item: S) =>
  z
    .string()
    .transform((value) => value.split(',').map((part) => part.trim()).filter(Boolean))
    .pipe(z.array(item));

export const settings = {
  port: setting('PORT', 'HTTP port the gateway listens on (0 picks a free port).', int(0, 65535).default(8080)),
  grpcPort: setting(
    'GRPC_PORT',
    "Port of the gateway's public gRPC API (device_ops.gateway.v1, for internal services), on HOST; 0 picks a free port.",
    int(0, 65535).default(50051),
  ),
  host: setting('HOST', 'Address the gateway listens on.', z.string().trim().min(1).default('0.0.0.0')),
  logLevel: setting(
    'LOG_LEVEL',
    'error (someone must act), warn (self-healing trouble), info or debug.',
    z.enum(['error', 'warn', 'info', 'debug']).default('info'),
  ),
  authJwtEnabled: setting('AUTH_JWT_ENABLED', 'Accept JWT bearer tokens.', bool(true)),
  authApiKeysEnabled: setting('AUTH_API_KEYS_ENABLED', 'Accept API keys (X-API-Key or Authorization: ApiKey).', bool(true)),
  apiKeyCacheSeconds: setting(
    'API_KEY_CACHE_SECONDS',
    'How long a verified API key is trusted without reading its row again (0: read every time). Revocation reaches every replica at once over the bus; this bounds what a lost notification could leave.',
    int(0, 300).default(30),
  ),
  jwtSecret: setting(
    'JWT_SECRET',
    'HMAC key for bearer tokens (HS256); at least 32 characters. Required unless JWT_PUBLIC_KEY or JWT_JWKS_URL is set.',
    z.string().min(32, 'must be at least 32 characters').optional(),
    true,
  ),
  jwtPublicKey: setting(
    'JWT_PUBLIC_KEY',
    'PEM public key (or the path of a PEM file) verifying RS256/ES256 tokens.',
    optionalText,
  ),
  jwtJwksUrl: setting('JWT_JWKS_URL', 'JWKS URL of the token issuer, for RS256/ES256 tokens.', z.url().optional()),
  jwtAlgorithms: setting(
    'JWT_ALGORITHMS',
    'Allowed token algorithms, comma-separated (default HS256 with JWT_SECRET, RS256 and ES256 with a public key or JWKS).',
    commaList(z.enum(['HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'PS256'])).optional(),
  ),
  jwtIssuer: setting('JWT_ISSUER', 'When set, tokens must carry this `iss`.', optionalText),
  jwtAudience: setting('JWT_AUDIENCE', 'When set, tokens must carry this `aud`.', optionalText),
  jwtClockToleranceSeconds: setting(
    'JWT_CLOCK_TOLERANCE_SECONDS',
    'Seconds of clock skew allowed when checking exp and nbf.',
    int(0, 300).default(5),
  ),
  adminApiKey: setting(
    'ADMIN_API_KEY',
    'Bootstrap admin API key (at least 32 characters) to create the first keys; hashed at startup, never stored.',
    z.string().min(32, 'must be at least 32 characters').optional(),
    true,
  ),
  rateLimitWindowSeconds: setting('RATE_LIMIT_WINDOW_SECONDS', 'Window of every rate limit.', int(1, 3600).default(60)),
  rateLimitPerPrincipal: setting(
    'RATE_LIMIT_PER_PRINCIPAL',
    'Requests per window for one principal (API key or JWT subject).',
    int(1, 1_000_000).default(600),
  ),
  rateLimitInferencePerPrincipal: setting(
    'RATE_LIMIT_INFERENCE_PER_PRINCIPAL',
    'Inference requests (execute, sessions, postprocessing, batches) per window for one principal.',
    int(1, 1_000_000).default(60),
  ),
  rateLimitPerIp: setting(
    'RATE_LIMIT_PER_IP',
    'Requests per window from one client address, checked before any credential is verified.',
    int(1, 1_000_000).default(1200),
  ),
  redisUrl: setting(
    'REDIS_URL',
    'Redis for rate-limit counters shared by gateway replicas (redis://…); empty keeps them in memory.',
    z.string().trim().regex(/^rediss?:\/\//, 'must start with redis:// or rediss://').optional(),
    true,
  ),
  trustProxy: setting(
    'TRUST_PROXY',
    'Proxy hops to trust for X-Forwarded-For: false (default), a hop count, or comma-separated addresses/CIDRs of the proxies.',
    z
      .string()
      .default('false')
      .transform((value): boolean | number | string[] => {
        if (value === 'false') return false;
        if (/^\d+$/.test(value)) return Number(value);
        return value.split(',').map((part) => part.trim()).filter(Boolean);
      }),
  ),
  corsOrigins: setting(
    'CORS_ORIGINS',
    'Origins allowed by CORS, comma-separated full origins (no wildcard); empty allows none.',
    commaList(
      z
        .string()
        .regex(/^https?:\/\/[^/*\s]+$/, 'must be origins like https://app.example.com (no wildcard, no path)'),
    ).optional(),
  ),
  internalAllowList: setting(
    'INTERNAL_ALLOW_LIST',
    'Client addresses or CIDRs (comma-separated) that may read /health/detailed and /metrics without credentials, e.g. the compose network.',
    commaList(z.string().min(1)).optional(),
  ),
  metricsPublic: setting('METRICS_PUBLIC', 'Serve /metrics and /health/detailed to anyone (not recommended).', bool(false)),
  workerToken: setting(
    'WORKER_TOKEN',
    'Shared secret sent to remote workers in gRPC metadata (at least 32 characters); local workers get a random one.',
    z.string().min(32, 'must be at least 32 characters').optional(),
    true,
  ),
  workerTlsCa: setting('WORKER_TLS_CA', 'CA certificate (PEM path) that signed remote workers\' certificates; enables TLS.', optionalText),
  workerTlsCert: setting('WORKER_TLS_CERT', 'Client certificate (PEM path) for mutual TLS with workers.', optionalText),
  workerTlsKey: setting('WORKER_TLS_KEY', 'Client private key (PEM path) for mutual TLS with workers.', optionalText, true),
  seqServerUrl: setting('SEQ_SERVER_URL', 'Seq server to ship logs to, e.g. http://seq:5341; empty: stdout only.', z.url().optional()),
  seqApiKey: setting('SEQ_API_KEY', 'API key for Seq ingestion, when Seq requires one.', optionalText, true),
  seqMaxBufferedEvents: setting(
    'SEQ_MAX_BUFFERED_EVENTS',
    'Log events held while Seq is slow or down; beyond it new ones are dropped and counted.',
    int(10, 1_000_000).default(10_000),
  ),
  workerCount: setting(
    'WORKER_COUNT',
    'Local worker processes to start when WORKER_ADDRESSES is empty.',
    int(1, 64).default(1),
  ),
  workerAddresses: setting(
    'WORKER_ADDRESSES',
    'Comma-separated host:port of remote workers; when set, no local worker is started.',
    commaList(hostPort).optional(),
  ),
  workerPython: setting(
    'WORKER_PYTHON',
    "Python interpreter for local workers (default: the project's python-workers/.venv).",
    z
      .string()
      .default('python-workers/.venv/bin/python')
      .transform((value) => (isAbsolute(value) || !value.includes('/') ? value : resolve(repoRoot, value))),
  ),
  workerStartTimeoutMs: setting(
    'WORKER_START_TIMEOUT_MS',
    'How long a local worker may take to report SERVING before it is killed and restarted.',
    int(1000, 600_000).default(120_000),
  ),
  workerRestartBackoffMs: setting(
    'WORKER_RESTART_BACKOFF_MS',
    'First delay before restarting a local worker that exited; doubles per consecutive failure.',
    int(10, 60_000).default(500),
  ),
  workerRestartBackoffMaxMs: setting(
    'WORKER_RESTART_BACKOFF_MAX_MS',
    'Longest delay between restarts of a failing local worker.',
    int(100, 600_000).default(30_000),
  ),
  modelDirectory: setting(
    'MODEL_DIRECTORY',
    'Model repository local workers serve (one folder or file per model); relative to the repository root.',
    directory('var/models'),
  ),
  outputDirectory: setting(
    'OUTPUT_DIRECTORY',
    'Where local workers write generated files; relative to the repository root.',
    directory('var/outputs'),
  ),
  cacheDirectory: setting(
    'CACHE_DIRECTORY',
    'Library caches of local workers (Hugging Face); relative to the repository root.',
    directory('var/cache'),
  ),
  databaseUrl: setting(
    'DATABASE_URL',
    'PostgreSQL connection string; empty selects the embedded SQLite file under DATA_DIRECTORY.',
    z
      .string()
      .trim()
      .regex(/^postgres(ql)?:\/\//, 'must start with postgres:// or postgresql://')
      .optional(),
    true,
  ),
  dataDirectory: setting(
    'DATA_DIRECTORY',
    'Gateway state (the embedded SQLite database); relative to the repository root.',
    directory('var/data'),
  ),
  workerCrashLoopFailures: setting(
    'WORKER_CRASH_LOOP_FAILURES',
    'Exits of a local worker within WORKER_CRASH_LOOP_WINDOW_SECONDS that mark it crash-looping (then retried every WORKER_RESTART_BACKOFF_MAX_MS).',
    int(2, 100).default(5),
  ),
  workerCrashLoopWindowSeconds: setting('WORKER_CRASH_LOOP_WINDOW_SECONDS', 'Window of WORKER_CRASH_LOOP_FAILURES.', int(1, 3600).default(120)),
  workerHealthIntervalMs: setting(
    'WORKER_HEALTH_INTERVAL_MS',
    "How often each worker's health is checked (a worker that misses HEALTH_CHECK_DEADLINE_MS is unreachable).",
    int(100, 600_000).default(2_000),
  ),
  workerDnsRefreshSeconds: setting(
    'WORKER_DNS_REFRESH_SECONDS',
    'How often host names in WORKER_ADDRESSES are resolved again, so a scaled worker set is followed.',
    int(1, 3600).default(30),
  ),
  maxInflightPerWorker: setting(
    'MAX_INFLIGHT_PER_WORKER',
    'Jobs in flight on one worker — as the worker reports them (every replica\'s) or as this gateway counts them, whichever is more; beyond it on every worker, execute gets 503 at once and queued work waits.',
    int(1, 100_000).default(64),
  ),
  maxActiveSessions: setting(
    'MAX_ACTIVE_SESSIONS',
    'Jobs this gateway process relays at once, all workers together (its own resources); beyond it execute gets 503 at once and queued work waits for an instance with room.',
    int(1, 1_000_000).default(1024),
  ),
  sessionLeaseSeconds: setting(
    'SESSION_LEASE_SECONDS',
    'How long a gateway instance holds the sessions it relays without renewing its lease; past it (it died), a live instance takes them over.',
    int(2, 300).default(10),
  ),
  queueTimeoutSeconds: setting(
    'QUEUE_TIMEOUT_SECONDS',
    'How long a background session may wait in the queue for a worker with room; past it, it fails (QUEUE_TIMEOUT).',
    int(1, 7 * 24 * 3600).default(3600),
  ),
  maxSseStreams: setting('MAX_SSE_STREAMS', 'Event streams open at once in this process; beyond it 503.', int(1, 1_000_000).default(2000)),
  maxSseStreamsPerPrincipal: setting(
    'MAX_SSE_STREAMS_PER_PRINCIPAL',
    'Event streams one principal may hold open at once; beyond it 429.',
    int(1, 100_000).default(100),
  ),
  streamTokenSecret: setting(
    'STREAM_TOKEN_SECRET',
    "Key (at least 32 characters, the same on every replica) of the stream tokens that let a browser's EventSource follow a session (ADR 0028); default: derived from JWT_SECRET; with neither, no stream tokens are issued.",
    z.string().min(32, 'must be at least 32 characters').optional(),
    true,
  ),
  streamTokenTtlSeconds: setting(
    'STREAM_TOKEN_TTL_SECONDS',
    "How long a session's stream token opens its event stream (checked when the stream opens; a reconnect after it needs a new token).",
    int(1, 3600).default(300),
  ),
  sseMaxBufferedBytes: setting(
    'SSE_MAX_BUFFERED_BYTES',
    'Bytes an event stream may have waiting for a slow reader before it is disconnected.',
    int(1024, 1024 * 1024 * 1024).default(1024 * 1024),
  ),
  grpcDeadlineMs: setting(
    'GRPC_DEADLINE_MS',
    'Deadline of every unary call to a worker.',
    int(50, 600_000).default(10_000),
  ),
  modelLoadDeadlineMs: setting(
    'MODEL_LOAD_DEADLINE_MS',
    'Deadline of loading one model on a worker (reading weights, moving them to the device, warm-up).',
    int(1000, 3600 * 1000).default(300_000),
  ),
  inferenceDeadlineMs: setting(
    'INFERENCE_DEADLINE_MS',
    'Deadline of one inference job on a worker, queue wait included; past it the job ends DEADLINE_EXCEEDED.',
    int(1000, 24 * 3600 * 1000).default(600_000),
  ),
  requestBodyLimitBytes: setting(
    'REQUEST_BODY_LIMIT_BYTES',
    'Largest JSON request body (base64 images included); larger ones get 413.',
    int(1024, 256 * 1024 * 1024).default(16 * 1024 * 1024),
  ),
  healthCheckDeadlineMs: setting(
    'HEALTH_CHECK_DEADLINE_MS',
    'Deadline of the health and info calls behind /health/detailed.',
    int(50, 60_000).default(2_000),
  ),
  shutdownGraceSeconds: setting(
    'SHUTDOWN_GRACE_SECONDS',
    'On SIGTERM, how long in-flight requests get to finish before connections are closed.',
    int(0, 3600).default(10),
  ),
} as const;

type Settings = typeof settings;
export type Config = Readonly<{ [K in keyof Settings]: z.output<Settings[K]['schema']> }>;

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration: ${problems.join('; ')}`);
    this.name = 'ConfigError';
  }
}

/** Parse the environment into a frozen Config, or throw ConfigError naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv | Record<string, string | undefined>): Config {
  const problems: string[] = [];
  const values: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(settings) as [string, Setting<z.ZodType>][]) {
    const raw = env[spec.env];
    const result = spec.schema.safeParse(raw === '' ? undefined : raw);
    if (result.success) {
      values[key] = result.data;
    } else {
      // Name the variable and the rule, never the value: it may be a secret.
      const reason = result.error.issues[0]?.message ?? 'is invalid';
      problems.push(`${spec.env} ${reason.startsWith('is ') || reason.startsWith('must ') ? reason : `is invalid: ${reason}`}`);
    }
  }
  if (problems.length === 0) problems.push(...crossChecks(values as Config));
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(values) as Config;
}

const isHmac = (algorithm: string) => algorithm.startsWith('HS');

/** Rules that involve several settings. */
function crossChecks(config: Config): string[] {
  const problems: string[] = [];
  const publicKeyed = config.jwtPublicKey !== undefined || config.jwtJwksUrl !== undefined;
  if (!config.authJwtEnabled && !config.authApiKeysEnabled) {
    problems.push('AUTH_JWT_ENABLED must be true when AUTH_API_KEYS_ENABLED is false (no way to authenticate)');
  }
  if (config.authJwtEnabled && config.jwtSecret === undefined && !publicKeyed) {
    problems.push('JWT_SECRET is required (at least 32 characters) unless JWT_PUBLIC_KEY or JWT_JWKS_URL is set');
  }
  const algorithms = config.jwtAlgorithms ?? [];
  if (algorithms.some(isHmac) && algorithms.some((a) => !isHmac(a))) {
    // One verifier for both would let a token signed with the public key as an HMAC secret pass.
    problems.push('JWT_ALGORITHMS must not mix HMAC (HS*) and public-key algorithms');
  } else if (algorithms.some(isHmac) && config.jwtSecret === undefined) {
    problems.push('JWT_ALGORITHMS lists an HS algorithm, which needs JWT_SECRET');
  } else if (algorithms.some((a) => !isHmac(a)) && !publicKeyed) {
    problems.push('JWT_ALGORITHMS lists a public-key algorithm, which needs JWT_PUBLIC_KEY or JWT_JWKS_URL');
  }
  if (config.jwtSecret !== undefined && publicKeyed && config.jwtAlgorithms === undefined) {
    problems.push('JWT_ALGORITHMS must say which to use when both JWT_SECRET and a public key are set');
  }
  if ((config.workerTlsCert === undefined) !== (config.workerTlsKey === undefined)) {
    problems.push('WORKER_TLS_CERT and WORKER_TLS_KEY must be set together');
  }
  if (config.workerTlsCert !== undefined && config.workerTlsCa === undefined) {
    problems.push('WORKER_TLS_CA is required with WORKER_TLS_CERT');
  }
  return problems;
}

/** Every setting with its variable and doc, for .env.example checks and docs. */
export function describeSettings(): { key: string; env: string; doc: string; secret: boolean }[] {
  return Object.entries(settings).map(([key, spec]) => ({ key, env: spec.env, doc: spec.doc, secret: spec.secret ?? false }));
}
