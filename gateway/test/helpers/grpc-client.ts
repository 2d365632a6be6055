import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoRoot } from '../../src/infra/paths.js';

/**
 * A caller of the gateway's public gRPC API as an internal service writes
 * one: stubs generated here from proto/ with proto-loader and its usual
 * options (not the gateway's own loading code), plain grpc-js calls.
 */
export type GatewayClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

let constructor: (new (address: string, credentials: grpc.ChannelCredentials) => GatewayClient) | undefined;

export function gatewayClient(address: string): GatewayClient {
  if (!constructor) {
    const definition = protoLoader.loadSync(join(protoRoot, 'device_ops/gateway/v1/gateway_service.proto'), {
      keepCase: false,
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
      includeDirs: [protoRoot],
    });
    const loaded = grpc.loadPackageDefinition(definition) as unknown as {
      device_ops: { gateway: { v1: { DeviceOperations: typeof constructor } } };
    };
    constructor = loaded.device_ops.gateway.v1.DeviceOperations;
  }
  return new constructor!(address, grpc.credentials.createInsecure());
}

export function metadataOf(headers: Record<string, string>): grpc.Metadata {
  const metadata = new grpc.Metadata();
  for (const [key, value] of Object.entries(headers)) metadata.set(key.toLowerCase(), value);
  return metadata;
}

export interface UnaryOutcome<T = Record<string, any>> {
  response?: T;
  error?: grpc.ServiceError;
  trailers?: grpc.Metadata;
}

/** One unary call; never throws: the response, or the error with its code, details and trailers. */
export function unary<T = Record<string, any>>(
  client: GatewayClient,
  method: string,
  request: unknown,
  headers: Record<string, string> = {},
): Promise<UnaryOutcome<T>> {
  return new Promise((resolve) => {
    let trailers: grpc.Metadata | undefined;
    const call = (client[method] as (r: unknown, m: grpc.Metadata, cb: (e: grpc.ServiceError | null, v?: T) => void) => grpc.ClientUnaryCall)(
      request,
      metadataOf(headers),
      (error, response) => {
        // The status (with its trailers) comes after the callback on success; wait for it.
        setImmediate(() => resolve(error ? { error, trailers: error.metadata } : { response: response!, ...(trailers ? { trailers } : {}) }));
      },
    );
    call.on('status', (status: grpc.StatusObject) => {
      trailers = status.metadata;
    });
  });
}

export interface StreamOutcome {
  events: Record<string, any>[];
  status: grpc.StatusObject;
}

/**
 * A server-streaming call read to its end. `onEvent` sees each message and
 * may return 'cancel' to cancel the call there (as a client that goes away).
 */
export function serverStream(
  client: GatewayClient,
  method: string,
  request: unknown,
  headers: Record<string, string> = {},
  onEvent?: (event: Record<string, any>) => 'cancel' | void,
): Promise<StreamOutcome> {
  return new Promise((resolve) => {
    const events: Record<string, any>[] = [];
    const call = (client[method] as (r: unknown, m: grpc.Metadata) => grpc.ClientReadableStream<Record<string, any>>)(request, metadataOf(headers));
    call.on('data', (event: Record<string, any>) => {
      events.push(event);
      if (onEvent?.(event) === 'cancel') call.cancel();
    });
    call.on('error', () => undefined);
    call.on('status', (status: grpc.StatusObject) => resolve({ events, status }));
  });
}

/** A Struct as the plain JSON it carries. */
export function fromStruct(struct: { fields?: Record<string, any> } | null | undefined): Record<string, unknown> | null {
  if (!struct) return null;
  return Object.fromEntries(Object.entries(struct.fields ?? {}).map(([k, v]) => [k, fromValue(v)]));
}

function fromValue(value: Record<string, any>): unknown {
  switch (value.kind) {
    case 'nullValue':
      return null;
    case 'numberValue':
    case 'stringValue':
    case 'boolValue':
      return value[value.kind];
    case 'structValue':
      return fromStruct(value.structValue);
    case 'listValue':
      return (value.listValue.values ?? []).map(fromValue);
    default:
      return undefined;
  }
}

/** grpc.health.v1 Check on the same address. */
export function healthCheck(address: string, service = ''): Promise<string> {
  const definition = protoLoader.loadSync(join(protoRoot, 'grpc/health/v1/health.proto'), { enums: String, includeDirs: [protoRoot] });
  const Health = (grpc.loadPackageDefinition(definition) as any).grpc.health.v1.Health;
  const client = new Health(address, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) =>
    client.check({ service }, (error: grpc.ServiceError | null, response: { status: string }) => {
      client.close();
      if (error) reject(error);
      else resolve(response.status);
    }),
  );
}
