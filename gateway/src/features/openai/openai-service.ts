import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NotFoundError, ValidationError } from '../../errors/gateway-error.js';
import type { Principal } from '../auth/principal.js';
import type { InferenceService } from '../inference/inference-service.js';
import { InferenceRequestSchema, type InferenceRequest } from '../inference/inference-schemas.js';
import type { ModelService } from '../models/model-service.js';
import type { SessionService } from '../sessions/session-service.js';
import { succeeded } from '../sessions/session-streaming.js';
import type { Session } from '../sessions/session-types.js';
import type { EmbeddingsRequest, ImagesRequest } from './openai-schemas.js';

/** What a route answers: the body, and the session that produced it (X-Session-Id). */
export interface OpenAiAnswer<T> {
  body: T;
  sessionId: string;
  headers?: Record<string, string>;
}

/** Native request fields → the OpenAI request field they came from, for error `param`s (longest prefix wins). */
const EMBEDDING_FIELDS: Record<string, string> = {
  model: 'model',
  parameters: 'input',
  'parameters.texts': 'input',
  'parameters.tokenIds': 'input',
  'parameters.dimensions': 'dimensions',
};
const IMAGE_FIELDS: Record<string, string> = {
  model: 'model',
  parameters: 'prompt',
  'parameters.prompt': 'prompt',
  'parameters.negativePrompt': 'negative_prompt',
  'parameters.steps': 'steps',
  'parameters.seed': 'seed',
  'parameters.guidanceScale': 'guidance_scale',
  'parameters.width': 'size',
  'parameters.height': 'size',
  'parameters.imagesPerPrompt': 'n',
};

/**
 * The native request an OpenAI-compatible one stands for, through the
 * native schema (the same limits as /api/inference), its problems named by
 * the OpenAI field ("body.input", "body.size").
 */
function nativeRequest(body: unknown, fields: Record<string, string>): InferenceRequest {
  const parsed = InferenceRequestSchema.safeParse(body);
  if (parsed.success) return parsed.data;
  throw new ValidationError(
    parsed.error.issues.map((issue) => {
      const path = issue.path.map(String);
      for (let length = path.length; length > 0; length -= 1) {
        const field = fields[path.slice(0, length).join('.')];
        if (field) return { field: `body.${field}`, message: issue.message };
      }
      return { field: `body.${path.join('.')}`, message: issue.message };
    }),
  );
}

/** Little-endian float32 bytes, base64: what OpenAI's `encoding_format: base64` returns and its SDKs decode. */
function base64Floats(values: readonly number[]): string {
  const bytes = Buffer.allocUnsafe(values.length * 4);
  for (let i = 0; i < values.length; i += 1) bytes.writeFloatLE(values[i]!, i * 4);
  return bytes.toString('base64');
}

interface ResultFile {
  name: string;
  url: string;
}

/**
 * The OpenAI-compatible operations over the native services: each call is a
 * native inference session (the same scheduling, limits and records), its
 * result put in OpenAI's shape.
 */
export class OpenAiService {
  constructor(
    private readonly deps: {
      inference: InferenceService;
      sessions: SessionService;
      models: ModelService;
      outputDirectory: string;
    },
  ) {}

  private async run(request: InferenceRequest, principal: Principal, correlationId: string, abandon: AbortSignal): Promise<Session> {
    const running = await this.deps.inference.start(request, principal, correlationId);
    // The client left before the end: nobody waits for the result.
    abandon.addEventListener('abort', () => this.deps.sessions.abandon(running.session.id), { once: true });
    return succeeded(running.done);
  }

  async embeddings(request: EmbeddingsRequest, principal: Principal, correlationId: string, abandon: AbortSignal) {
    const { input } = request;
    const inputs = typeof input === 'string' ? [input] : input;
    const tokens = inputs.length > 0 && typeof inputs[0] !== 'string';
    const parameters = tokens
      ? { tokenIds: typeof inputs[0] === 'number' ? [inputs as number[]] : (inputs as number[][]) }
      : { texts: inputs as string[] };
    const native = nativeRequest(
      {
        task: 'text-embedding',
        model: request.model,
        // OpenAI's embeddings are unit length; so are these.
        parameters: { ...parameters, normalize: true, ...(request.dimensions !== undefined ? { dimensions: request.dimensions } : {}) },
      },
      EMBEDDING_FIELDS,
    );
    const session = await this.run(native, principal, correlationId, abandon);
    const result = session.result as { embeddings?: number[][]; promptTokens?: number; model?: string | null };
    const vectors = result.embeddings ?? [];
    const usage = result.promptTokens ?? 0;
    return {
      sessionId: session.id,
      body: {
        object: 'list' as const,
        data: vectors.map((embedding, index) => ({
          object: 'embedding' as const,
          index,
          embedding: request.encoding_format === 'base64' ? base64Floats(embedding) : embedding,
        })),
        model: result.model ?? request.model,
        usage: { prompt_tokens: usage, total_tokens: usage },
      },
    };
  }

  async images(request: ImagesRequest, principal: Principal, correlationId: string, baseUrl: string, abandon: AbortSignal) {
    const [width, height] = request.size ? request.size.split('x').map(Number) : [undefined, undefined];
    const native = nativeRequest(
      {
        task: 'text-to-image',
        model: request.model,
        parameters: {
          prompt: request.prompt,
          ...(request.negative_prompt !== undefined ? { negativePrompt: request.negative_prompt } : {}),
          ...(request.n !== undefined ? { imagesPerPrompt: request.n } : {}),
          ...(width !== undefined ? { width, height } : {}),
          ...(request.seed !== undefined ? { seed: request.seed } : {}),
          ...(request.steps !== undefined ? { steps: request.steps } : {}),
          ...(request.guidance_scale !== undefined ? { guidanceScale: request.guidance_scale } : {}),
        },
      },
      IMAGE_FIELDS,
    );
    const session = await this.run(native, principal, correlationId, abandon);
    const result = session.result as { files?: ResultFile[]; seed?: number };
    const files = result.files ?? [];
    const data =
      request.response_format === 'b64_json'
        ? await Promise.all(
            files.map(async (file) => ({ b64_json: (await readFile(join(this.deps.outputDirectory, session.id, file.name))).toString('base64') })),
          )
        : files.map((file) => ({ url: `${baseUrl}${file.url}` }));
    const parameters = native.parameters as { width?: number; height?: number };
    return {
      sessionId: session.id,
      headers: result.seed !== undefined ? { 'X-Seed': String(result.seed) } : undefined,
      body: {
        created: Math.floor((session.finishedAt ?? new Date()).getTime() / 1000),
        data,
        output_format: 'png' as const,
        size: `${parameters.width ?? 512}x${parameters.height ?? 512}`,
      },
    };
  }

  async listModels(correlationId: string) {
    const { models } = await this.deps.models.available(correlationId);
    return {
      object: 'list' as const,
      data: models.map((model) => ({ id: model.name, object: 'model' as const, created: 0, owned_by: 'device-operations', tasks: model.tasks })),
    };
  }

  async getModel(name: string, correlationId: string) {
    const found = (await this.listModels(correlationId)).data.find((model) => model.id === name);
    if (!found) throw new NotFoundError(`model: no model '${name}' on the serving workers.`);
    return found;
  }
}
