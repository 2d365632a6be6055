import type { RequestHandler } from 'express';
import type { Principal } from '../features/auth/principal.js';
import { SCOPES } from '../features/auth/scopes.js';

// Every scope, so that a route's scope check passes as it would for a caller allowed there.
const PRINCIPAL: Principal = Object.freeze({ id: 'jwt:ablated', subject: 'ablated', scopes: Object.freeze([...SCOPES]), method: 'jwt' });

/** In place of authentication when the bench removes that layer: every request is the same principal, with no credential checked. */
export const fixedPrincipal = (): RequestHandler => (req, _res, next) => {
  req.context.principal = PRINCIPAL;
  next();
};
