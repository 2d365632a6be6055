/** Who is calling, once authenticated. */
export interface Principal {
  /** Stable id for limits and audit: "key:<api key id>" or "jwt:<subject>". */
  id: string;
  /** JWT `sub`, or the API key's name. */
  subject: string;
  /** Scopes granted: from the token's `scope`/`scopes` claim, or the API key's scopes. */
  scopes: readonly string[];
  /** 'stream-token': a session's stream token (ADR 0028), accepted on that session's events route only. */
  method: 'jwt' | 'api-key' | 'stream-token';
}

export const isAdmin = (principal: Principal): boolean => principal.scopes.includes('admin');
