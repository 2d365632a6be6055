import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Dialect } from '../../src/infra/database/database.js';
import { dialectAvailable } from '../helpers/databases.js';
import { bearer } from '../helpers/http.js';
import { samples } from '../helpers/metrics.js';
import { startRealGatewayOn, type GatewayOnDatabase } from '../helpers/real-gateway.js';
import { signToken } from '../helpers/tokens.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Who may call each route, checked by calling it: the OpenAPI document is
 * walked, and every operation that is not public is called without
 * credentials (401) and, where it needs a scope, with a valid token that
 * lacks it (403) — through the real gateway and worker, with nothing
 * reaching the worker and nothing written but the audit log's record of
 * refused admin access. No client address is allow-listed here, so the
 * operators' routes need credentials too.
 */
interface Operation {
  operationId: string;
  security?: Record<string, string[]>[];
  parameters?: { in: string; name: string }[];
  requestBody?: unknown;
}

const SCOPES = ['inference', 'models:manage', 'operations:read', 'admin'];

/**
 * The scope each operation must need, from the README's security model,
 * written here independently of the routes' own declarations: 'public',
 * null (any valid credential), or a scope.
 */
function expectedAuth(method: string, path: string): 'public' | string | null {
  if (['/health', '/health/ready'].includes(path)) return 'public';
  // Operators' routes show worker addresses and process ids: not for every credential.
  if (path === '/health/detailed' || path.startsWith('/metrics')) return 'operations:read';
  if (path.startsWith('/api/admin/')) return 'admin';
  if (method === 'post' && (path.startsWith('/api/model/') || path === '/api/memory/clear')) return 'models:manage';
  if (path === '/api/inference/capabilities') return null;
  if (/^\/api\/(inference|processing|postprocessing)\//.test(path)) return 'inference';
  // OpenAI-compatible: running jobs (embeddings, images) is inference; listing models is a read.
  if (method === 'post' && path.startsWith('/v1/')) return 'inference';
  return null;
}
const TABLES = ['sessions', 'session_events', 'batches', 'api_keys'];

/** A plausible value for each path parameter: auth comes before anything looks at it. */
const PARAMETER_VALUES: Record<string, () => string> = {
  id: () => randomUUID(),
  sessionId: () => randomUUID(),
  deviceId: () => encodeURIComponent('worker-0:cpu'),
  workerId: () => 'worker-0',
  file: () => 'image-0.png',
};

describe.each(['sqlite', 'postgres'] as Dialect[])('every non-public route refuses callers without its credentials, on %s', (dialect) => {
  let real: GatewayOnDatabase;
  let operations: { method: string; path: string; operation: Operation }[] = [];

  // Calls the gateway made to workers, by rpc; the health monitor's own checks left out.
  const workerCalls = async () => {
    const text = await (await fetch(`${real.url}/metrics`, { headers: bearer(signToken({ sub: 'metrics-reader', scope: 'operations:read' })) })).text();
    return samples(text, 'device_ops_gateway_grpc_client_duration_seconds_count')
      .filter((s) => s.labels.rpc !== 'Health/Check')
      .reduce((sum, s) => sum + s.value, 0);
  };
  const rowCounts = async () => {
    const knex = real.gateway.database.knex;
    return Object.fromEntries(await Promise.all(TABLES.map(async (t) => [t, Number(((await knex(t).count({ n: '*' })) as { n: unknown }[])[0]!.n)])));
  };
  const call = (method: string, path: string, headers: Record<string, string> = {}, hasBody = false) => {
    const url = path.replace(/\{(\w+)\}/g, (_m, name: string) => (PARAMETER_VALUES[name] ?? (() => 'x'))());
    return fetch(`${real.url}${url}`, {
      method: method.toUpperCase(),
      headers: { ...headers, ...(hasBody ? { 'content-type': 'application/json' } : {}) },
      ...(hasBody ? { body: '{}' } : {}),
    });
  };

  beforeAll(async () => {
    if (!dialectAvailable(dialect)) return;
    real = await startRealGatewayOn(dialect, {
      MODEL_DIRECTORY: inject('demoModels'),
      OUTPUT_DIRECTORY: mkdtempSync(join(tmpdir(), 'route-auth-out-')),
      // Nobody is on the allow-list: /health/detailed and /metrics need credentials.
      INTERNAL_ALLOW_LIST: '',
      RATE_LIMIT_PER_IP: '100000',
      RATE_LIMIT_PER_PRINCIPAL: '100000',
      LOG_LEVEL: 'warn',
    });
    const document = (await (await fetch(`${real.url}/api-docs/openapi.json`)).json()) as { paths: Record<string, Record<string, Operation>> };
    operations = Object.entries(document.paths).flatMap(([path, methods]) =>
      Object.entries(methods).map(([method, operation]) => ({ method, path, operation })),
    );
  });

  afterAll(() => real?.close());

  it.skipIf(!dialectAvailable(dialect))('documents every route the app mounts, each with its security', () => {
    const documented = new Set(operations.map((o) => `${o.method} ${o.path.replace(/\{(\w+)\}/g, ':$1')}`));
    const mounted: string[] = [];
    const walk = (stack: { route?: { path: string; methods: Record<string, boolean> }; handle?: { stack?: unknown[] } }[]) => {
      for (const layer of stack) {
        if (layer.route) for (const method of Object.keys(layer.route.methods)) mounted.push(`${method} ${layer.route.path}`);
        else if (layer.handle?.stack) walk(layer.handle.stack as never);
      }
    };
    walk((real.gateway.server.listeners('request')[0] as unknown as { router: { stack: never[] } }).router.stack);
    expect(mounted.length).toBeGreaterThan(30);
    // The documentation's own routes are the only ones outside the document.
    expect(mounted.filter((route) => !documented.has(route))).toEqual(['get /api-docs/openapi.json']);
    for (const { method, path, operation } of operations) {
      const security = operation.security;
      const declared = security === undefined ? undefined : security.length === 0 ? 'public' : (security[0]!.bearerAuth?.[0] ?? null);
      expect(declared, `${method} ${path}`).toBe(expectedAuth(method, path));
      // Both schemes ask for the same scope.
      if (security && security.length > 0) expect(security[1]!.apiKeyAuth, `${method} ${path}`).toEqual(security[0]!.bearerAuth);
    }
  });

  it.skipIf(!dialectAvailable(dialect))('answers 401 without credentials and 403 without the scope, calling no worker and writing nothing', async () => {
    const guarded = operations.filter((o) => (o.operation.security ?? []).length > 0);
    expect(guarded.length).toBeGreaterThan(25);
    const callsBefore = await workerCalls();
    const rowsBefore = await rowCounts();
    const auditBefore = Number(((await real.gateway.database.knex('audit_log').count({ n: '*' })) as { n: unknown }[])[0]!.n);
    let scoped = 0;
    let adminRefusals = 0;
    for (const { method, path, operation } of guarded) {
      const hasBody = operation.requestBody !== undefined;
      const anonymous = await call(method, path, {}, hasBody);
      expect(anonymous.status, `${method} ${path} without credentials`).toBe(401);
      // Problem+json, or OpenAI's error shape on the OpenAI-compatible routes.
      if (path.startsWith('/v1/')) {
        expect(((await anonymous.json()) as { error: { code: string } }).error.code, `${method} ${path}`).toBe('invalid_api_key');
      } else {
        expect(anonymous.headers.get('content-type'), `${method} ${path}`).toMatch(/^application\/problem\+json/);
        await anonymous.body?.cancel();
      }
      const bad = await call(method, path, bearer(`${signToken()}x`), hasBody);
      expect(bad.status, `${method} ${path} with a tampered token`).toBe(401);
      await bad.body?.cancel();

      const scope = operation.security![0]!.bearerAuth?.[0];
      if (scope === 'admin') adminRefusals += 3;
      if (!scope) continue;
      scoped += 1;
      expect(SCOPES, `${method} ${path} names a known scope`).toContain(scope);
      const others = SCOPES.filter((s) => s !== scope && s !== 'admin').join(' ');
      const lacking = await call(method, path, bearer(signToken({ sub: 'lacking', scope: others })), hasBody);
      expect(lacking.status, `${method} ${path} without '${scope}'`).toBe(403);
      const refusal = (await lacking.json()) as { detail?: string; error?: { message: string } };
      expect(refusal.detail ?? refusal.error?.message).toContain(`'${scope}'`);
    }
    expect(scoped).toBeGreaterThan(10);
    expect(await workerCalls()).toBe(callsBefore);
    expect(await rowCounts()).toEqual(rowsBefore);
    // Only refused admin access is recorded: a failure (no or bad credentials) or a denial (no scope).
    // Audit entries are written behind the response: wait for all of them.
    const audit = () => real.gateway.database.knex('audit_log').select('action', 'outcome').orderBy('id') as Promise<{ action: string; outcome: string }[]>;
    await waitFor(async () => ((await audit()).length >= auditBefore + adminRefusals ? true : undefined), { what: 'audit entries of refused admin access' });
    const added = (await audit()).slice(auditBefore);
    expect(added.length).toBe(adminRefusals);
    for (const entry of added) {
      expect(entry.action).toBe('auth.admin');
      expect(['failure', 'denied']).toContain(entry.outcome);
    }
  });
});
