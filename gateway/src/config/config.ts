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
  host: setting('HOST', 'Address the gateway listens on.', z.string().trim().min(1).default('0.0.0.0')),
  logLevel: setting(
    'LOG_LEVEL',
    'error (someone must act), warn (self-healing trouble), info or debug.',
    z.enum(['error', 'warn', 'info', 'debug']).default('info'),
  ),
  jwtSecret: setting(
    'JWT_SECRET',
    'HS256 key for bearer tokens; at least 32 characters. Required, no default.',
    z.string({ error: 'is required (at least 32 characters)' }).min(32, 'must be at least 32 characters'),
    true,
  ),
  jwtIssuer: setting('JWT_ISSUER', 'When set, tokens must carry this `iss`.', optionalText),
  jwtAudience: setting('JWT_AUDIENCE', 'When set, tokens must carry this `aud`.', optionalText),
  jwtClockToleranceSeconds: setting(
    'JWT_CLOCK_TOLERANCE_SECONDS',
    'Seconds of clock skew allowed when checking exp and nbf.',
    int(0, 300).default(5),
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
  grpcDeadlineMs: setting(
    'GRPC_DEADLINE_MS',
    'Deadline of every unary call to a worker.',
    int(50, 600_000).default(10_000),
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
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(values) as Config;
}

/** Every setting with its variable and doc, for .env.example checks and docs. */
export function describeSettings(): { key: string; env: string; doc: string; secret: boolean }[] {
  return Object.entries(settings).map(([key, spec]) => ({ key, env: spec.env, doc: spec.doc, secret: spec.secret ?? false }));
}
