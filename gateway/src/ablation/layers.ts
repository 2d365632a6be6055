/**
 * The layers of an authenticated request that the bench's layer ablation
 * (gateway/bench/ablation.ts) removes one at a time, to measure what each
 * costs: the gateway's CPU per request with every layer, minus the same
 * without that one. Production never removes a layer: `AppDeps.ablate` is
 * absent there, and every choice it drives is made once, when the app is
 * built, never per request. Removing a layer keeps the request working
 * (GET /api/device/list still answers 200 with the same body shape).
 */
export const LAYERS = {
  context: 'request context: the correlation id (X-Request-Id, traceparent or a new UUID) and the logger bound to it',
  'access-log': 'the access-log line written when the exchange ends',
  metrics: 'per-request metrics: in-flight gauge, HTTP duration histogram and counter, worker-call histogram',
  helmet: 'the security headers (helmet)',
  cors: 'CORS (runs on every request, though a same-origin one gets no CORS headers)',
  draining: 'the draining guard that refuses new work with 503 during shutdown',
  'client-limit': 'the per-client-address rate limiter',
  'principal-limit': 'the per-principal rate limiters (the default one and the inference one)',
  auth: 'authentication (JWT or API key); removed, every request is one fixed principal holding every scope, so scope checks still pass',
  'body-parsing': 'JSON body parsing, on routes that take a body',
  validation: "params, query and body checked against the route's zod schemas; removed, handlers get the raw values",
  handler: "the handler's own work besides the worker call (for the device list: mapping each worker's answer); removed, the worker is still called and the first list is answered again",
  grpc: "the gRPC call to the worker (ListDevices); removed, each worker's first answer is used again without a call",
  'problem-writer': 'the error middleware that writes problem+json (on error paths only)',
} as const;

export type LayerName = keyof typeof LAYERS;

export const LAYER_NAMES = Object.keys(LAYERS) as LayerName[];

export const isLayerName = (name: string): name is LayerName => Object.hasOwn(LAYERS, name);

/** What production removes: nothing. */
export const NONE_REMOVED: ReadonlySet<LayerName> = new Set();
