import type { RouteInputValues } from '../http/route.js';
import type { RequestContext } from '../http/request-context.js';

/** Who is calling over gRPC: the REST request context, plus the client address REST reads from req.ip. */
export interface RpcContext extends RequestContext {
  clientAddress: string;
}

export interface RpcInput {
  params: Record<string, unknown>;
  query: Record<string, unknown>;
  body: unknown;
  context: RpcContext;
}

/** A server stream's writer: messages until end(); onCancel runs when the caller goes away first. */
export interface RpcStream {
  write(message: unknown): void;
  end(): void;
  onCancel(fn: () => void): void;
  readonly cancelled: boolean;
}

/**
 * One method of the gateway's public gRPC service, as a thin adapter over
 * the REST operation it mirrors (`operationId`): that route's auth, scope,
 * rate limit, schemas, drain rule and audit apply unchanged (grpc-front.ts
 * takes them from the route); the rpc only converts the message into the
 * route's input, calls the same service and converts the answer back.
 */
export interface RpcSpec {
  /** The rpc in proto/device_ops/gateway/v1/gateway_service.proto. */
  name: string;
  operationId: string;
  /** The route's params, query and body from the decoded message (REST's JSON names). */
  input?: (message: Record<string, unknown>) => RouteInputValues;
  /** A REST field path of a validation problem ("body.parameters.steps") as the message's field ("text_to_image.steps"). */
  field?: (restField: string, message: Record<string, unknown>) => string;
  unary?: (input: RpcInput) => Promise<unknown>;
  stream?: (input: RpcInput, out: RpcStream) => Promise<void>;
}

export function defineRpc(spec: RpcSpec): RpcSpec {
  return spec;
}

const snake = (name: string) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** The default field naming: the REST location dropped, each segment in the proto's snake_case. */
export function protoFieldPath(restField: string): string {
  const segments = restField.split('.');
  if (['params', 'query', 'body'].includes(segments[0]!)) segments.shift();
  return segments.map(snake).join('.');
}
