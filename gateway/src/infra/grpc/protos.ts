import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType as WorkerProto } from '../../generated/worker_service.js';
import type { ProtoGrpcType as HealthProto } from '../../generated/health.js';
import { protoRoot } from '../paths.js';

/**
 * The one loader option set. scripts/gen-proto.mjs passes the same flags to
 * proto-loader-gen-types, so the generated types describe what we decode:
 * 64-bit integers as numbers (byte counts stay below 2^53), enums as names,
 * defaults for plain fields, and `optional` fields absent when unset (their
 * synthetic oneofs are not defaulted).
 */
export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [protoRoot],
};

export type Protos = WorkerProto & HealthProto;

let cached: Protos | undefined;

/** Load the worker contract and the health service once per process. */
export function loadProtos(): Protos {
  if (!cached) {
    const definition = protoLoader.loadSync(
      [join(protoRoot, 'device_ops/v1/worker_service.proto'), join(protoRoot, 'grpc/health/v1/health.proto')],
      PROTO_LOADER_OPTIONS,
    );
    cached = grpc.loadPackageDefinition(definition) as unknown as Protos;
  }
  return cached;
}
