/**
 * The scopes a credential can hold, and the route declarations that need
 * them (README, Security): `inference` for jobs, sessions and outputs,
 * `models:manage` to load, unload, validate and clear memory, `admin` for
 * everything, keys and audit.
 */
export const SCOPES = ['inference', 'models:manage', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

export const NEEDS_INFERENCE = Object.freeze({ scope: 'inference' as const });
export const NEEDS_MODELS_MANAGE = Object.freeze({ scope: 'models:manage' as const });
export const NEEDS_ADMIN = Object.freeze({ scope: 'admin' as const });
/** Any valid credential, whatever its scopes. */
export const NEEDS_CREDENTIAL = Object.freeze({ scope: null });
