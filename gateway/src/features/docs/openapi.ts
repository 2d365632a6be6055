import { OpenAPIRegistry, OpenApiGeneratorV31 } from '@asteasolutions/zod-to-openapi';

export function createRegistry(): OpenAPIRegistry {
  const registry = new OpenAPIRegistry();
  registry.registerComponent('securitySchemes', 'bearerAuth', {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
    description: 'HS256 JWT signed with JWT_SECRET; `exp` and `sub` required. `npm run token` prints one.',
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
      description:
        'Device discovery, model management and inference on Python/PyTorch workers. ' +
        'Errors are application/problem+json (RFC 9457) with a correlation id, also returned in X-Request-Id.',
    },
  });
}
