import { OpenAPIRegistry, OpenApiGeneratorV31 } from '@asteasolutions/zod-to-openapi';

export function createRegistry(): OpenAPIRegistry {
  const registry = new OpenAPIRegistry();
  registry.registerComponent('securitySchemes', 'bearerAuth', {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
    description: 'JWT (HS256 with JWT_SECRET, or RS256/ES256 with JWT_PUBLIC_KEY / JWT_JWKS_URL); `exp` and `sub` required. `npm run token` prints one.',
  });
  registry.registerComponent('securitySchemes', 'apiKeyAuth', {
    type: 'apiKey',
    in: 'header',
    name: 'X-API-Key',
    description: 'An API key from POST /api/admin/keys (also accepted as `Authorization: ApiKey <key>`).',
  });
  return registry;
}

export type OpenApiDocument = ReturnType<OpenApiGeneratorV31['generateDocument']>;

/** The OpenAPI 3.1 document of every mounted route, generated from their schemas. */
export function generateDocument(registry: OpenAPIRegistry, version: string): OpenApiDocument {
  return new OpenApiGeneratorV31(registry.definitions).generateDocument({
    openapi: '3.1.0',
    info: {
      title: 'device-operations gateway',
      version,
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
      description:
        'Device discovery, model management and inference on Python/PyTorch workers. ' +
        'Errors are application/problem+json (RFC 9457) with a correlation id, also returned in X-Request-Id.',
    },
    // Relative: the document is served by the gateway it describes, behind NGINX or not.
    servers: [{ url: '/', description: 'This gateway (the origin that served this document).' }],
  });
}
