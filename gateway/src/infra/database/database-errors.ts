/** Network-level failures: the database is not there (down, restarting, unreachable). */
const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * PostgreSQL SQLSTATEs meaning "not now" rather than "wrong query":
 * class 08 (connection exception) and 57P01–57P03 (shutdown, crash,
 * cannot connect now). SQLite's busy/locked means another writer holds it.
 */
const UNAVAILABLE_STATES = new Set(['57P01', '57P02', '57P03', 'SQLITE_BUSY', 'SQLITE_LOCKED']);

/** Whether an error from knex/pg/better-sqlite3 means the database is unavailable (answer 503), not that the request was wrong. */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && (CONNECTION_CODES.has(code) || UNAVAILABLE_STATES.has(code) || code.startsWith('08'))) return true;
  if (error.name === 'KnexTimeoutError') return true;
  // pg's messages for a connection that went away under it carry no code.
  if (/Connection terminated|connection timeout|Client has encountered a connection error/i.test(error.message)) return true;
  if (error instanceof AggregateError) return error.errors.some(isDatabaseUnavailable);
  return false;
}
