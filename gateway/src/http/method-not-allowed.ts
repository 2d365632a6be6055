import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { MethodNotAllowedError } from '../errors/gateway-error.js';

/** One declared operation: its method and OpenAPI-style path (/api/device/{deviceId}). */
export interface DeclaredOperation {
  method: string;
  path: string;
}

interface KnownPath {
  pattern: RegExp;
  allowed: string[];
}

const ORDER = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

function knownPaths(operations: readonly DeclaredOperation[]): KnownPath[] {
  const byPath = new Map<string, Set<string>>();
  for (const { method, path } of operations) {
    const methods = byPath.get(path) ?? new Set<string>();
    methods.add(method.toUpperCase());
    // Express answers HEAD from GET handlers and OPTIONS itself (CORS preflight included).
    if (method.toUpperCase() === 'GET') methods.add('HEAD');
    methods.add('OPTIONS');
    byPath.set(path, methods);
  }
  return [...byPath].map(([path, methods]) => ({
    pattern: new RegExp(`^${path.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{\w+\}/g, '[^/]+')}/?$`),
    allowed: ORDER.filter((m) => methods.has(m)),
  }));
}

/**
 * RFC 9110 §15.5.6: a request for a known path with a method it does not
 * declare is 405 with `Allow`, not 404. Mounted after every router, before
 * the not-found handler, so it sees only requests no route answered.
 */
export function methodNotAllowed(operations: readonly DeclaredOperation[]): RequestHandler {
  const paths = knownPaths(operations);
  return (req: Request, _res: Response, next: NextFunction) => {
    const known = paths.find((candidate) => candidate.pattern.test(req.path));
    if (known && !known.allowed.includes(req.method)) {
      next(new MethodNotAllowedError(req.method, req.path, known.allowed));
      return;
    }
    next();
  };
}
