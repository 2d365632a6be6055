import { createServer, type Server } from 'node:http';
import type { Express } from 'express';

/**
 * The HTTP server around the app, with timeouts of seconds instead of
 * Node's defaults: a client that dribbles its headers (slowloris) is cut off
 * after 5 s, a request body must arrive within 60 s, and the checks run
 * every second rather than every 30 s.
 */
export function createHttpServer(app: Express): Server {
  return createServer(
    {
      headersTimeout: 5_000,
      requestTimeout: 60_000,
      keepAliveTimeout: 5_000,
      connectionsCheckingInterval: 1_000,
    },
    app,
  );
}
