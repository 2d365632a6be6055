/**
 * The scopes a credential can hold, and the route declarations that need
 * them (README, Security): `inference` for jobs, sessions and outputs,
 * `models:manage` to load, unload, validate and clear memory,
 * `operations:read` for operators' routes (/health/detailed, /metrics*)
 * from outside INTERNAL_ALLOW_LIST, `admin` for everything, keys and audit.
 */
export const SCOPES = ['inference', 'models:manage', 'operations:read', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

export const NEEDS_INFERENCE = Object.freeze({ scope: 'inference' as const });
export const NEEDS_MODELS_MANAGE = Object.freeze({ scope: 'models:manage' as const });
/** Operators' routes from outside the allow-list: worker addresses, process ids and metrics are not for every caller. */
export const OPERATIONS_SCOPE = 'operations:read' as const;
export const NEEDS_ADMIN = Object.freeze({ scope: 'admin' as const });
/** Any valid credential, whatever its scopes. */
export const NEEDS_CREDENTIAL = Object.freeze({ scope: null });
