/** Where a request's credential is, on either front (HTTP headers or gRPC metadata). */

export interface AuthFailure {
  method: 'jwt' | 'api-key' | 'stream-token' | 'none';
  /** Why, for logs and metrics only; the client always gets the same 401. */
  reason: string;
}

type Credential = { method: 'jwt'; value: string } | { method: 'api-key'; value: string } | AuthFailure;

/**
 * Where a credential travels: HTTP headers, or gRPC metadata (the same two
 * keys, lower-case), so both fronts authenticate alike.
 */
export interface CredentialHeaders {
  authorization?: string | undefined;
  'x-api-key'?: string | string[] | undefined;
}

// A JWT in compact serialization: three base64url segments. API keys never have dots.
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/**
 * Where the credential is: X-API-Key, Authorization: ApiKey …, or
 * Authorization: Bearer … — a JWT, or an API key sent the way OpenAI-style
 * SDKs send theirs (told apart by shape: a JWT has three dot-separated parts).
 */
export function credentialOf(headers: CredentialHeaders): Credential {
  const apiKey = headers['x-api-key'];
  if (typeof apiKey === 'string' && apiKey.length > 0) return { method: 'api-key', value: apiKey };
  const header = headers.authorization;
  if (!header) return { method: 'none', reason: 'no credentials' };
  const space = header.indexOf(' ');
  const scheme = space > 0 ? header.slice(0, space).toLowerCase() : header.toLowerCase();
  const value = space > 0 ? header.slice(space + 1).trim() : '';
  if (scheme === 'bearer' && value) return JWT_SHAPE.test(value) ? { method: 'jwt', value } : { method: 'api-key', value };
  if (scheme === 'apikey' && value) return { method: 'api-key', value };
  return { method: 'none', reason: 'unsupported Authorization scheme' };
}
