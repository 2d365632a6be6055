import protobuf from 'protobufjs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { GATEWAY_PROTO_FILE, GATEWAY_SERVICE_NAME } from '../../src/grpc/gateway-protos.js';
import type { RouteSpec } from '../../src/http/route.js';
import type { RpcSpec } from '../../src/grpc/rpc.js';
import { protoRoot } from '../../src/infra/paths.js';
import { startFakeGateway, type FakeGateway } from '../helpers/fake-app.js';

/**
 * The drift test of docs/adr/0026: every rpc of the public gRPC service
 * mirrors a REST operation, and its messages carry exactly the fields of
 * that operation's zod schemas — the schemas REST validates with and
 * documents in OpenAPI. A field added on one side only fails here.
 */

type Shape = string | { [field: string]: Shape } | { map: Shape };

/** A zod schema's field tree: objects by key, arrays by element, records as maps, scalars as their kind. */
function zodShape(schema: z.ZodType): Shape {
  const def = (schema as unknown as { _zod: { def: Record<string, unknown> & { type: string } } })._zod.def;
  switch (def.type) {
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
    case 'readonly':
      return zodShape(def.innerType as z.ZodType);
    case 'pipe':
      return zodShape(def.in as z.ZodType);
    case 'array':
      return zodShape(def.element as z.ZodType);
    case 'object':
      return Object.fromEntries(Object.entries(def.shape as Record<string, z.ZodType>).map(([k, v]) => [k, zodShape(v)]));
    case 'record':
      return (def.valueType as { _zod: { def: { type: string } } })._zod.def.type === 'unknown' ? 'json' : { map: zodShape(def.valueType as z.ZodType) };
    case 'union': {
      const options = (def.options as z.ZodType[]).map(zodShape);
      return options.every((o) => typeof o === 'string') ? 'scalar' : options[0]!;
    }
    default:
      return 'scalar';
  }
}

function protoShape(type: protobuf.Type): Shape {
  const fields: Record<string, Shape> = {};
  for (const field of type.fieldsArray) {
    field.resolve();
    const resolved = field.resolvedType;
    let shape: Shape = 'scalar';
    if (resolved instanceof protobuf.Type) shape = resolved.fullName === '.google.protobuf.Struct' ? 'json' : protoShape(resolved);
    fields[field.name] = field.map ? { map: shape } : shape;
  }
  return fields;
}

/** The shapes compared as field names, level by level (scalar kinds are the serializer's business). */
function names(shape: Shape, prefix = ''): string[] {
  if (typeof shape === 'string') return [];
  if ('map' in shape && Object.keys(shape).length === 1) return names(shape.map, `${prefix}{}.`);
  return Object.entries(shape).flatMap(([k, v]) => [`${prefix}${k}`, ...names(v, `${prefix}${k}.`)]);
}

let gateway: FakeGateway;
let root: protobuf.Root;
let service: protobuf.Service;
let routes: Map<string, RouteSpec>;
let rpcs: readonly RpcSpec[];

beforeAll(async () => {
  gateway = await startFakeGateway();
  root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (target.startsWith('/') ? target : `${protoRoot}/${target}`);
  root.loadSync(GATEWAY_PROTO_FILE, { keepCase: false });
  service = root.lookupService(GATEWAY_SERVICE_NAME);
  routes = new Map(gateway.gateway.operations.routes.map((r) => [r.operationId, r]));
  rpcs = gateway.gateway.operations.rpcs;
  return () => gateway.close();
});

const successSchema = (route: RouteSpec): z.ZodType => {
  const response = route.responses[200] ?? route.responses[202];
  return response!.schema!;
};

/** Request fields of the route: params, query and body merged, as one message carries them. */
function requestShape(route: RouteSpec): Record<string, Shape> {
  const merged: Record<string, Shape> = {};
  for (const part of [route.request?.params, route.request?.query, route.request?.body]) {
    if (part) Object.assign(merged, zodShape(part) as Record<string, Shape>);
  }
  return merged;
}

/** Where the two fronts name a request field differently, on purpose (ADR 0026). */
const REQUEST_RENAMES: Record<string, Record<string, string>> = {
  WatchSession: { lastEventId: 'afterSequence' },
};

/** REST request fields that are credentials, which gRPC carries in metadata: a browser's stream token (ADR 0028). */
const REST_ONLY_CREDENTIALS: Record<string, string[]> = { WatchSession: ['access_token'] };

/** A list of lists in REST is a repeated message wrapping a list in proto (proto has no repeated repeated): its inner field. */
const WRAPPED_LISTS = ['textEmbedding.tokenIds.ids'];

const INFERENCE_MESSAGES: Record<string, string> = {
  'text-to-image': 'textToImage',
  'image-to-image': 'imageToImage',
  inpainting: 'inpainting',
  'text-embedding': 'textEmbedding',
  tensor: 'tensor',
};

/** REST's inference body (task + parameters) as the message carries it (one parameters message per task). */
function inferenceShape(schema: z.ZodType): Record<string, Shape> {
  const options = (schema as unknown as { _zod: { def: { options: z.ZodType[] } } })._zod.def.options;
  const shape: Record<string, Shape> = {};
  for (const option of options) {
    const { task: _task, parameters, ...common } = zodShape(option) as Record<string, Shape>;
    const taskName = ((option as unknown as { shape: { task: { value: string } } }).shape.task.value);
    Object.assign(shape, common, { [INFERENCE_MESSAGES[taskName]!]: parameters! });
  }
  return shape;
}

describe('the gRPC API and the REST API stay in step', () => {
  it('serves every rpc of the proto service, each mirroring an authenticated REST operation', () => {
    expect(rpcs.map((r) => r.name).sort()).toEqual(service.methodsArray.map((m) => m.name).sort());
    for (const rpc of rpcs) {
      const route = routes.get(rpc.operationId);
      expect(route, rpc.name).toBeDefined();
      expect(typeof route!.auth, rpc.name).toBe('object');
      const method = service.methods[rpc.name]!;
      expect(Boolean(method.responseStream), `${rpc.name} streams`).toBe(Boolean(rpc.stream));
    }
  });

  it('answers with exactly the fields of the REST response', () => {
    for (const rpc of rpcs) {
      const method = service.methods[rpc.name]!;
      method.resolve();
      const route = routes.get(rpc.operationId)!;
      const proto = names(protoShape(method.resolvedResponseType!));
      // A stream carries the SSE events: sequence (the SSE id), type (the event name) and data.
      const rest = rpc.stream ? ['sequence', 'type', 'data'] : names(zodShape(successSchema(route)));
      expect(proto.sort(), rpc.name).toEqual(rest.sort());
    }
  });

  it('takes exactly the fields of the REST request', () => {
    for (const rpc of rpcs) {
      const method = service.methods[rpc.name]!;
      method.resolve();
      const route = routes.get(rpc.operationId)!;
      const body = route.request?.body;
      let rest: Record<string, Shape>;
      if (body && route.operationId !== 'createBatch' && (body as unknown as { _zod: { def: { type: string } } })._zod.def.type === 'union') {
        rest = inferenceShape(body);
      } else {
        rest = requestShape(route);
        if (route.operationId === 'createBatch') rest.items = inferenceShape((body as unknown as { shape: { items: { element: z.ZodType } } }).shape.items.element);
      }
      for (const [from, to] of Object.entries(REQUEST_RENAMES[rpc.name] ?? {})) {
        rest[to] = rest[from]!;
        delete rest[from];
      }
      for (const field of REST_ONLY_CREDENTIALS[rpc.name] ?? []) delete rest[field];
      const proto = names(protoShape(method.resolvedRequestType!)).filter((name) => !WRAPPED_LISTS.some((wrapper) => name.endsWith(wrapper)));
      expect(proto.sort(), rpc.name).toEqual(names(rest).sort());
    }
  });
});
