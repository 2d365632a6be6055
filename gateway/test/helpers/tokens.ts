import { createHmac } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { TEST_JWT_SECRET } from './env.js';

export interface TokenOptions {
  secret?: string;
  sub?: string;
  scope?: string;
  expiresInSeconds?: number | null;
  issuer?: string;
  audience?: string;
}

/** A real HS256 token, as a client would hold. expiresInSeconds null leaves out `exp`. */
export function signToken(options: TokenOptions = {}): string {
  const payload: Record<string, unknown> = { scope: options.scope ?? 'inference' };
  const signOptions: jwt.SignOptions = { algorithm: 'HS256', subject: options.sub ?? 'alice' };
  if (options.expiresInSeconds !== null) signOptions.expiresIn = options.expiresInSeconds ?? 300;
  if (options.issuer) signOptions.issuer = options.issuer;
  if (options.audience) signOptions.audience = options.audience;
  return jwt.sign(payload, options.secret ?? TEST_JWT_SECRET, signOptions);
}

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** An unsigned token claiming `alg: none`. */
export function unsignedToken(): string {
  const now = Math.floor(Date.now() / 1000);
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'mallory', exp: now + 300, scope: 'admin' })}.`;
}

/** A valid token whose payload was changed after signing. */
export function tamperedToken(): string {
  const [header, , signature] = signToken().split('.');
  const now = Math.floor(Date.now() / 1000);
  return `${header}.${b64({ sub: 'mallory', exp: now + 300, scope: 'admin' })}.${signature}`;
}

/** A structurally valid HS256 token signed over hand-made claims. */
export function tokenWithClaims(claims: Record<string, unknown>, secret = TEST_JWT_SECRET): string {
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}
