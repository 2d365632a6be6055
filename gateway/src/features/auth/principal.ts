/** Who is calling, once authenticated. */
export interface Principal {
  /** JWT `sub`. */
  subject: string;
  /** Scopes granted, from the token's `scope` (space-separated) or `scopes` claim. */
  scopes: readonly string[];
  method: 'jwt';
}
