import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoRoot } from '../infra/paths.js';

/** The public service, as callers name it (grpc.health.v1 and reflection use this name). */
export const GATEWAY_SERVICE_NAME = 'device_ops.gateway.v1.DeviceOperations';

export const GATEWAY_PROTO_FILE = join(protoRoot, 'device_ops/gateway/v1/gateway_service.proto');
/** Served on the same port; loaded with the service so reflection lists it too (grpcurl … grpc.health.v1.Health/Check). */
const HEALTH_PROTO_FILE = join(protoRoot, 'grpc/health/v1/health.proto');

/**
 * How the gRPC front decodes requests: as the JSON a REST body would be, so
 * the route's own zod schemas validate it — only fields the caller set
 * (no defaults, no virtual oneof members), bytes as base64 strings, enums
 * and 64-bit integers as in JSON. Responses are encoded from the REST
 * response bodies the same way (protobufjs fromObject: base64 strings for
 * bytes, nulls and unknown members dropped).
 */
export const GATEWAY_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  bytes: String,
  defaults: false,
  arrays: false,
  objects: false,
  oneofs: false,
  includeDirs: [protoRoot],
};

export interface GatewayProtos {
  /** For server reflection. */
  definition: protoLoader.PackageDefinition;
  service: grpc.ServiceDefinition;
}

let cached: GatewayProtos | undefined;

export function loadGatewayProtos(): GatewayProtos {
  if (!cached) {
    const definition = protoLoader.loadSync([GATEWAY_PROTO_FILE, HEALTH_PROTO_FILE], GATEWAY_LOADER_OPTIONS);
    cached = { definition, service: definition[GATEWAY_SERVICE_NAME] as grpc.ServiceDefinition };
  }
  return cached;
}
