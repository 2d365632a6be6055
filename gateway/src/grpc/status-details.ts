import { join } from 'node:path';
import { createRequire } from 'node:module';
import protobuf from 'protobufjs';

/**
 * google.rpc.Status with its standard details (google/rpc/status.proto and
 * error_details.proto from google-proto-files, the googleapis definitions),
 * the rich error model gRPC clients decode from `grpc-status-details-bin`.
 */
export type StatusDetail =
  | { kind: 'BadRequest'; fieldViolations: { field: string; description: string }[] }
  | { kind: 'RetryInfo'; retryDelaySeconds: number }
  | { kind: 'ErrorInfo'; reason: string; domain: string; metadata: Record<string, string> };

const require = createRequire(import.meta.url);

let root: protobuf.Root | undefined;
function rpcRoot(): protobuf.Root {
  if (!root) {
    const base = join(require.resolve('google-proto-files/package.json'), '..');
    root = new protobuf.Root();
    root.resolvePath = (_origin, target) => join(base, target);
    root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: false });
  }
  return root;
}

function pack(type: string, value: Record<string, unknown>) {
  const message = rpcRoot().lookupType(`google.rpc.${type}`);
  // google.protobuf.Any comes from protobufjs' bundled definition, which keeps the proto's snake_case names.
  return { type_url: `type.googleapis.com/google.rpc.${type}`, value: message.encode(message.fromObject(value)).finish() };
}

export function encodeStatusDetails(code: number, message: string, details: readonly StatusDetail[]): Buffer {
  const any = details.map((detail) => {
    switch (detail.kind) {
      case 'BadRequest':
        return pack('BadRequest', { fieldViolations: detail.fieldViolations });
      case 'RetryInfo':
        return pack('RetryInfo', { retryDelay: { seconds: detail.retryDelaySeconds, nanos: 0 } });
      case 'ErrorInfo':
        return pack('ErrorInfo', { reason: detail.reason, domain: detail.domain, metadata: detail.metadata });
    }
  });
  const status = rpcRoot().lookupType('google.rpc.Status');
  return Buffer.from(status.encode(status.fromObject({ code, message, details: any })).finish());
}

/** Decode `grpc-status-details-bin` (tests, clients written in TypeScript). */
export function decodeStatusDetails(bytes: Buffer): { code: number; message: string; details: Record<string, unknown>[] } {
  const status = rpcRoot().lookupType('google.rpc.Status');
  const decoded = status.toObject(status.decode(bytes), { longs: Number }) as { code: number; message: string; details?: { type_url: string; value: Uint8Array }[] };
  return {
    code: decoded.code,
    message: decoded.message,
    details: (decoded.details ?? []).map((any) => {
      const type = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
      const message = rpcRoot().lookupType(type);
      return { '@type': type, ...message.toObject(message.decode(any.value), { longs: Number }) };
    }),
  };
}
