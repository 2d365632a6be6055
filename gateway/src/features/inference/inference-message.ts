import { ValidationError } from '../../errors/gateway-error.js';
import { protoFieldPath } from '../../grpc/rpc.js';
import { structOrNull, toStruct } from '../../grpc/struct.js';
import type { SessionBody } from '../sessions/session-schemas.js';

/** Which parameters message of a gRPC InferenceRequest names which REST task. */
const TASK_OF_FIELD: Readonly<Record<string, string>> = Object.freeze({
  textToImage: 'text-to-image',
  imageToImage: 'image-to-image',
  inpainting: 'inpainting',
  textEmbedding: 'text-embedding',
  tensor: 'tensor',
});
const ONEOF_NAMES = Object.keys(TASK_OF_FIELD).map(protoFieldPath).join(', ');

/**
 * A decoded gRPC InferenceRequest as the REST body it stands for (validated
 * next by InferenceRequestSchema): the task from which parameters message is
 * set, images already base64 (the loader's `bytes: String`).
 */
export function inferenceBody(message: Record<string, unknown>, field = 'parameters'): Record<string, unknown> {
  const { model, deviceId, dtype, ...rest } = message;
  const set = Object.keys(TASK_OF_FIELD).filter((key) => rest[key] !== undefined);
  if (set.length !== 1) {
    throw new ValidationError([{ field: `body.${field}`, message: `set exactly one of ${ONEOF_NAMES}` }]);
  }
  const member = set[0]!;
  let parameters = rest[member] as Record<string, unknown>;
  if (member === 'textEmbedding' && Array.isArray(parameters.tokenIds)) {
    // Each TokenIds message as its list (an empty message sends no ids).
    parameters = { ...parameters, tokenIds: (parameters.tokenIds as { ids?: number[] }[]).map((entry) => entry.ids ?? []) };
  }
  if (member === 'tensor') {
    // A scalar's shape is empty: proto3 does not send empty repeated fields.
    const inputs = (parameters.inputs ?? {}) as Record<string, Record<string, unknown>>;
    parameters = { inputs: Object.fromEntries(Object.entries(inputs).map(([name, t]) => [name, { shape: [], ...t }])) };
  }
  return {
    task: TASK_OF_FIELD[member],
    ...(model !== undefined ? { model } : {}),
    ...(deviceId !== undefined ? { deviceId } : {}),
    ...(dtype !== undefined ? { dtype } : {}),
    parameters,
  };
}

/** REST's "body.parameters.steps" as the message's field: "text_to_image.steps". */
export function inferenceField(restField: string, message: Record<string, unknown>): string {
  const member = Object.keys(TASK_OF_FIELD).find((key) => message[key] !== undefined);
  const path = protoFieldPath(restField);
  return member && (path === 'parameters' || path.startsWith('parameters.')) ? protoFieldPath(member) + path.slice('parameters'.length) : path;
}

/** A REST session body as the Session message: its free-form members as Structs. */
export function sessionMessage(session: SessionBody): Record<string, unknown> {
  return { ...session, parameters: toStruct(session.parameters), result: structOrNull(session.result) };
}
