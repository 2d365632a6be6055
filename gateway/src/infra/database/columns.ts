/**
 * How domain values are written to and read from columns, the same on both
 * dialects. Stores use these in their one `mapRow` and when building rows.
 *
 * Timestamps are written as ISO-8601 UTC strings: PostgreSQL parses them into
 * timestamptz (and node-postgres reads Dates back); SQLite keeps the text,
 * whose fixed width makes text order the same as time order. Never bind a
 * Date directly: knex's SQLite driver would store epoch milliseconds, which
 * SQLite sorts before every string.
 */
export function toDbTimestamp(date: Date): string {
  return date.toISOString();
}

export function toDbTimestampOrNull(date: Date | null): string | null {
  return date === null ? null : toDbTimestamp(date);
}

export type DbTimestamp = Date | string | number;

export function fromDbTimestamp(value: DbTimestamp): Date {
  const date = value instanceof Date ? new Date(value.getTime()) : new Date(value);
  if (Number.isNaN(date.getTime())) throw new Error(`unreadable timestamp in the database: ${String(value)}`);
  return date;
}

export function fromDbTimestampOrNull(value: DbTimestamp | null): Date | null {
  return value === null ? null : fromDbTimestamp(value);
}

/**
 * JSON columns are jsonb on PostgreSQL (read back parsed by node-postgres) and
 * text on SQLite (parsed here). Always bind the serialised string: node-postgres
 * would turn a JS array into a PostgreSQL array, not JSON.
 */
export function toDbJson(value: unknown): string {
  return JSON.stringify(value);
}

export function toDbJsonOrNull(value: unknown): string | null {
  return value === null || value === undefined ? null : toDbJson(value);
}

export function fromDbJson<T>(value: unknown): T {
  return (typeof value === 'string' ? JSON.parse(value) : value) as T;
}

export function fromDbJsonOrNull<T>(value: unknown): T | null {
  return value === null || value === undefined ? null : fromDbJson<T>(value);
}

/** count(*) is a bigint on PostgreSQL, which node-postgres returns as a string. */
export function fromDbCount(rows: readonly Record<string, unknown>[], column = 'total'): number {
  return Number(rows[0]?.[column] ?? 0);
}
