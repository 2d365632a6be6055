import { z } from 'zod';
import { NotFoundError } from '../../errors/gateway-error.js';
import { defineRoute, type RouteSpec } from '../../http/route.js';
import type { ApiKeyService } from '../api-keys/api-key-service.js';
import { API_KEY_SCOPES, type ApiKey } from '../api-keys/api-key-types.js';
import type { AuditService } from '../audit/audit-service.js';
import { NEEDS_ADMIN } from '../auth/scopes.js';


const ApiKeySchema = z
  .object({
    id: z.string(),
    name: z.string(),
    prefix: z.string().meta({ description: 'Non-secret start of the key, to recognise it.' }),
    scopes: z.array(z.enum(API_KEY_SCOPES)),
    createdBy: z.string(),
    createdAt: z.iso.datetime(),
    expiresAt: z.iso.datetime().nullable(),
    lastUsedAt: z.iso.datetime().nullable().meta({ description: 'Updated at most once a minute.' }),
    revokedAt: z.iso.datetime().nullable(),
  })
  .meta({ id: 'ApiKey' });
const CreatedKeySchema = ApiKeySchema.extend({
  key: z.string().meta({ description: 'The key itself. Shown once; only its hash is stored.' }),
}).meta({ id: 'CreatedApiKey' });

const CreateKeyBody = z.strictObject({
  name: z.string().trim().min(1).max(100),
  scopes: z.array(z.enum(API_KEY_SCOPES)).min(1),
  // A lifetime rather than a date: "in the future" is not a rule a schema can state, a lifetime is.
  expiresInSeconds: z
    .number()
    .int()
    .min(1)
    .max(10 * 365 * 24 * 3600)
    .optional()
    .meta({ description: 'Lifetime of the key; without it the key lasts until revoked. The answer says when it expires (`expiresAt`).' }),
});
const KeyIdParams = z.strictObject({ id: z.uuid({ error: 'must be a key id (UUID)' }) });

const AuditEntrySchema = z
  .object({
    id: z.string(),
    at: z.iso.datetime(),
    actor: z.string(),
    action: z.string(),
    target: z.string().nullable(),
    clientAddress: z.string().nullable(),
    outcome: z.enum(['success', 'failure', 'denied']),
    details: z.record(z.string(), z.unknown()).nullable(),
  })
  .meta({ id: 'AuditEntry' });
const AuditQuery = z.strictObject({
  actor: z.string().min(1).max(200).optional(),
  action: z.string().min(1).max(100).optional(),
  from: z.iso.datetime().optional(),
  to: z.iso.datetime().optional(),
  limit: z.coerce.number().int().min(1).max(500).default(100),
  offset: z.coerce.number().int().min(0).max(1_000_000_000).default(0),
});

const present = (key: ApiKey) => ({
  id: key.id,
  name: key.name,
  prefix: key.prefix,
  scopes: key.scopes,
  createdBy: key.createdBy,
  createdAt: key.createdAt.toISOString(),
  expiresAt: key.expiresAt?.toISOString() ?? null,
  lastUsedAt: key.lastUsedAt?.toISOString() ?? null,
  revokedAt: key.revokedAt?.toISOString() ?? null,
});

export function adminRoutes(apiKeys: ApiKeyService, audit: AuditService): RouteSpec[] {
  return [
    defineRoute({
      method: 'post',
      path: '/api/admin/keys',
      operationId: 'createApiKey',
      summary: 'Create a scoped API key (shown once)',
      tags: ['Admin'],
      auth: NEEDS_ADMIN,
      audit: { action: 'key.create', target: ({ body }) => body.name },
      request: { body: CreateKeyBody },
      responses: {
        201: {
          description: 'The key; store it now, it cannot be shown again.',
          schema: CreatedKeySchema,
          links: { RevokeApiKey: { operationId: 'revokeApiKey', parameters: { id: '$response.body#/id' }, description: 'Revoke this key.' } },
        },
      },
      handler: async ({ body, context }) => {
        const { key, record } = await apiKeys.create(
          { name: body.name, scopes: body.scopes, ...(body.expiresInSeconds ? { expiresAt: new Date(Date.now() + body.expiresInSeconds * 1000) } : {}) },
          context.principal!.id,
        );
        return { status: 201, body: { ...present(record), key }, headers: { 'Cache-Control': 'no-store' } };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/admin/keys',
      operationId: 'listApiKeys',
      summary: 'Every API key (never the keys themselves)',
      tags: ['Admin'],
      auth: NEEDS_ADMIN,
      responses: { 200: { description: 'Keys, newest first.', schema: z.object({ keys: z.array(ApiKeySchema) }) } },
      handler: async () => ({ status: 200, body: { keys: (await apiKeys.list()).map(present) } }),
    }),
    defineRoute({
      method: 'delete',
      path: '/api/admin/keys/{id}',
      operationId: 'revokeApiKey',
      summary: 'Revoke an API key; the next request with it fails',
      tags: ['Admin'],
      auth: NEEDS_ADMIN,
      audit: { action: 'key.revoke', target: ({ params }) => params.id },
      request: { params: KeyIdParams },
      responses: { 200: { description: 'The revoked key.', schema: ApiKeySchema }, 404: { description: 'No such key.' } },
      handler: async ({ params }) => {
        const key = await apiKeys.revoke(params.id);
        if (!key) throw new NotFoundError(`No API key '${params.id}'.`);
        return { status: 200, body: present(key) };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/admin/audit',
      operationId: 'listAudit',
      summary: 'The audit log of management actions, newest first',
      tags: ['Admin'],
      auth: NEEDS_ADMIN,
      request: { query: AuditQuery },
      responses: {
        200: {
          description: 'One page.',
          schema: z.object({ items: z.array(AuditEntrySchema), total: z.number().int(), limit: z.number().int(), offset: z.number().int() }),
        },
      },
      handler: async ({ query }) => {
        const page = await audit.list({
          ...(query.actor ? { actor: query.actor } : {}),
          ...(query.action ? { action: query.action } : {}),
          ...(query.from ? { from: new Date(query.from) } : {}),
          ...(query.to ? { to: new Date(query.to) } : {}),
          limit: query.limit,
          offset: query.offset,
        });
        return {
          status: 200,
          body: { items: page.items.map((e) => ({ ...e, at: e.at.toISOString() })), total: page.total, limit: query.limit, offset: query.offset },
        };
      },
    }),
  ];
}
