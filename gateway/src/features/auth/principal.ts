/** Who is calling, once authenticated. */
export interface Principal {
  /** Stable id for limits and audit: "key:<api key id>" or "jwt:<subject>". */
  id: string;
  /** JWT `sub`, or the API key's name. */
  subject: string;
  /** Scopes granted: from the token's `scope`/`scopes` claim, or the API key's scopes. */
  scopes: readonly string[];
  method: 'jwt' | 'api-key';
}

export const isAdmin = (principal: Principal): boolean => principal.scopes.includes('admin');
