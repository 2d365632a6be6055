import { Router } from 'express';
import swaggerUi from 'swagger-ui-express';
import type { OpenApiDocument } from './openapi.js';

/** What docsRouter answers, for the 405 handler (Swagger UI's own assets are under /api-docs/). */
export const DOCS_OPERATIONS = [
  { method: 'get', path: '/api-docs/openapi.json' },
  { method: 'get', path: '/api-docs' },
] as const;

/**
 * Public: GET /api-docs (Swagger UI) and GET /api-docs/openapi.json. Mounted
 * outside mountRoutes because they serve the document itself rather than an
 * API operation.
 */
export function docsRouter(document: OpenApiDocument): Router {
  const router = Router();
  router.get('/api-docs/openapi.json', (_req, res) => {
    res.json(document);
  });
  router.use(
    '/api-docs',
    swaggerUi.serve,
    swaggerUi.setup(undefined, {
      customSiteTitle: 'device-operations API',
      swaggerOptions: { url: '/api-docs/openapi.json' },
    }),
  );
  return router;
}
