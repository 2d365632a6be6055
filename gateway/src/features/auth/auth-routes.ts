import { z } from 'zod';
import { defineRoute, type RouteSpec } from '../../http/route.js';
import { NEEDS_CREDENTIAL } from './scopes.js';

const WhoAmISchema = z
  .object({
    id: z.string().meta({ description: 'Stable principal id: jwt:<sub> or key:<key id>.' }),
    subject: z.string(),
    method: z.enum(['jwt', 'api-key']),
    scopes: z.array(z.string()),
  })
  .meta({ id: 'WhoAmI' });

export function authRoutes(): RouteSpec[] {
  return [
    defineRoute({
      method: 'get',
      path: '/api/auth/whoami',
      operationId: 'whoAmI',
      summary: 'The principal your credentials stand for, and its scopes',
      tags: ['Auth'],
      auth: NEEDS_CREDENTIAL,
      responses: { 200: { description: 'You.', schema: WhoAmISchema } },
      handler: async ({ context }) => {
        const { id, subject, method, scopes } = context.principal!;
        return { status: 200, body: { id, subject, method, scopes } };
      },
    }),
  ];
}
