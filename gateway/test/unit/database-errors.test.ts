import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import express from 'express';
import type { Knex } from 'knex';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { problemMiddleware, toGatewayError } from '../../src/http/problem-middleware.js';
import { requestContext } from '../../src/http/request-context.js';
import { isDatabaseUnavailable } from '../../src/infra/database/database-errors.js';
import { createLogger } from '../../src/infra/logger.js';
import { GatewayMetrics } from '../../src/infra/metrics.js';
import { LogCapture } from '../helpers/log-capture.js';

// knex and pg are CommonJS without usable named exports under ESM: take their real error classes this way.
const require = createRequire(import.meta.url);
const knex = require('knex') as { (config: Knex.Config): Knex; KnexTimeoutError: new (message: string) => Error };
const { DatabaseError } = require('pg') as { DatabaseError: new (message: string, length: number, name: string) => Error & { code?: string } };

/** An error as pg raises it for a server-side SQLSTATE. */
function pgError(code: string, message: string): Error {
  const error = new DatabaseError(message, message.length, 'error');
  error.code = code;
  return error;
}

const quiet = { warn() {}, error() {}, deprecate() {}, debug() {} };

/** What the pg driver really raises when nothing listens at the database's address. */
async function refusedByPostgres(): Promise<Error> {
  const db = knex({ client: 'pg', connection: 'postgres://gateway:secret@127.0.0.1:1/gateway', pool: { min: 0, max: 1 }, acquireConnectionTimeout: 5000, log: quiet });
  try {
    await db.raw('select 1');
    throw new Error('expected the connection to be refused');
  } catch (error) {
    return error as Error;
  } finally {
    await db.destroy();
  }
}

describe('isDatabaseUnavailable', () => {
  let sqlite: Knex;
  beforeAll(async () => {
    sqlite = knex({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true, log: quiet });
    await sqlite.schema.createTable('t', (table) => table.string('k').unique());
    await sqlite('t').insert({ k: 'a' });
  });
  afterAll(() => sqlite.destroy());

  it('is true for a refused connection, as the pg driver raises it', async () => {
    const error = await refusedByPostgres();
    expect((error as { code?: string }).code).toBe('ECONNREFUSED');
    expect(isDatabaseUnavailable(error)).toBe(true);
  });

  it.each([
    ['ECONNREFUSED', Object.assign(new Error('connect ECONNREFUSED 10.0.0.5:5432'), { code: 'ECONNREFUSED' })],
    ['57P01 admin shutdown', pgError('57P01', 'terminating connection due to administrator command')],
    ['08006 connection failure', pgError('08006', 'connection failure')],
    ['KnexTimeoutError', new knex.KnexTimeoutError('Knex: Timeout acquiring a connection. The pool is probably full.')],
    ['a connection that went away', new Error('Connection terminated unexpectedly')],
    ['SQLITE_BUSY', Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' })],
    ['refused on every address (AggregateError)', new AggregateError([Object.assign(new Error('connect ECONNREFUSED ::1:5432'), { code: 'ECONNREFUSED' })], 'connect failed')],
  ])('is true for %s', (_name, error) => {
    expect(isDatabaseUnavailable(error)).toBe(true);
  });

  it.each([
    ['42601 syntax error', pgError('42601', 'syntax error at or near "selec"')],
    ['23505 unique violation', pgError('23505', 'duplicate key value violates unique constraint "sessions_pkey"')],
    ['a plain Error', new Error('something broke')],
    ['a non-Error', { code: 'ECONNREFUSED' }],
  ])('is false for %s', (_name, error) => {
    expect(isDatabaseUnavailable(error)).toBe(false);
  });

  it('is false for a real SQLite syntax error and unique violation', async () => {
    const syntax = await sqlite.raw('selec 1').then(
      () => null,
      (error: unknown) => error,
    );
    const unique = await sqlite('t').insert({ k: 'a' }).then(
      () => null,
      (error: unknown) => error,
    );
    expect(syntax).toMatchObject({ code: 'SQLITE_ERROR' });
    expect(unique).toMatchObject({ code: 'SQLITE_CONSTRAINT_UNIQUE' });
    expect(isDatabaseUnavailable(syntax)).toBe(false);
    expect(isDatabaseUnavailable(unique)).toBe(false);
  });

  it('is what toGatewayError maps to 503 database-unavailable, and nothing else', () => {
    expect(toGatewayError(pgError('57P01', 'terminating connection'))).toMatchObject({ status: 503, type: 'database-unavailable' });
    expect(toGatewayError(pgError('23505', 'duplicate key'))).toMatchObject({ status: 500, type: 'internal' });
  });
});

describe('a database outage as the client sees it', () => {
  let server: Server;
  let url: string;
  const logs = new LogCapture();
  const metrics = new GatewayMetrics();

  beforeAll(async () => {
    const app = express();
    app.use(requestContext(createLogger({ level: 'debug', stream: logs }), metrics));
    app.get('/refused', () => {
      throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED', address: '127.0.0.1', port: 5432 });
    });
    app.get('/real-refusal', async () => {
      throw await refusedByPostgres();
    });
    app.get('/syntax', () => {
      throw pgError('42601', 'syntax error at or near "selec" in select * from sessions');
    });
    app.use(problemMiddleware(metrics));
    server = createServer(app).listen(0, '127.0.0.1');
    await once(server, 'listening');
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it.each(['/refused', '/real-refusal'])('%s → 503 problem+json database-unavailable with Retry-After, no driver detail', async (path) => {
    const response = await fetch(`${url}${path}`);
    const text = await response.text();
    expect(response.status).toBe(503);
    expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
    const body = JSON.parse(text) as Record<string, unknown>;
    expect(body).toMatchObject({ type: '/problems/database-unavailable', status: 503, instance: path });
    expect(body.errorId).toEqual(expect.any(String));
    // Host, port, driver code and message stay out of the body…
    expect(text).not.toMatch(/127\.0\.0\.1|:5432|:1\/|ECONNREFUSED|connect |postgres|secret|at .*\.js:\d+/);
    // …and go to the log, under the same error id, for the operator.
    const line = logs.find((l) => l.errorId === body.errorId)[0];
    // An outage is logged once per refusal at warn, with the driver's cause but no stack.
    expect(line).toMatchObject({ level: 'warn', status: 503, type: 'database-unavailable' });
    expect(String(line!.cause)).toMatch(/ECONNREFUSED/);
    expect(line!.err).toBeUndefined();
  });

  it('a wrong query is still a 500, not "retry later"', async () => {
    const response = await fetch(`${url}/syntax`);
    const text = await response.text();
    expect(response.status).toBe(500);
    expect(response.headers.get('retry-after')).toBeNull();
    expect(JSON.parse(text)).toMatchObject({ type: '/problems/internal' });
    expect(text).not.toMatch(/selec|sessions|42601/);
  });
});
