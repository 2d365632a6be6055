import type { Request, Response } from 'express';
import { ValidationError, type GatewayError } from '../../errors/gateway-error.js';
import type { ErrorBodyWriter } from '../../http/problem-middleware.js';

/** The OpenAI-compatible routes: everything under /v1. */
export const OPENAI_PREFIX = '/v1';

/**
 * OpenAI's error `type` per status. The status itself is the gateway's (one
 * status table for every front); only the body's shape is OpenAI's.
 */
const TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'invalid_request_error',
  405: 'invalid_request_error',
  409: 'invalid_request_error',
  413: 'invalid_request_error',
  415: 'invalid_request_error',
  422: 'invalid_request_error',
  429: 'rate_limit_error',
};

/** Stable codes where OpenAI has one for the same refusal; otherwise the problem type. */
function codeOf(problem: GatewayError): string {
  if (problem.status === 401) return 'invalid_api_key';
  if (problem.status === 429) return 'rate_limit_exceeded';
  if (problem.status === 404 && problem.detail.startsWith('model:')) return 'model_not_found';
  return problem.type;
}

/** A worker's field name ("text_embedding.dimensions: …") → the OpenAI request field. */
const WORKER_FIELDS: Record<string, string> = {
  texts: 'input',
  token_ids: 'input',
  dimensions: 'dimensions',
  prompt: 'prompt',
  negative_prompt: 'negative_prompt',
  steps: 'steps',
  seed: 'seed',
  guidance_scale: 'guidance_scale',
  width: 'size',
  height: 'size',
  images_per_prompt: 'n',
};

/** Which request field the error is about, when one is: OpenAI's `param`. */
function paramOf(problem: GatewayError): string | null {
  if (problem instanceof ValidationError) {
    const field = problem.problems[0]?.field ?? '';
    const [location, name] = field.split('.');
    return location === 'body' && name ? name : null;
  }
  if (problem.detail.startsWith('model:')) return 'model';
  const worker = /^(?:text_embedding|image_generation)\.(\w+)/.exec(problem.detail);
  return worker ? (WORKER_FIELDS[worker[1]!] ?? null) : null;
}

/** Errors on /v1 routes as OpenAI's clients read them: `{ "error": { message, type, param, code } }`. */
export const openAiErrorBody: ErrorBodyWriter = {
  matches: (req: Request) => req.path === OPENAI_PREFIX || req.path.startsWith(`${OPENAI_PREFIX}/`),
  write(problem: GatewayError, _req: Request, res: Response) {
    const sessionId = problem.extensions.sessionId;
    if (typeof sessionId === 'string') res.setHeader('X-Session-Id', sessionId);
    // OpenAI's SDKs retry 408, 409, 429 and 5xx unless told otherwise: a
    // refusal that the same request would meet again (a 409 here is a model
    // that does not run the task) is marked final.
    if (problem.status < 500 && problem.status !== 408 && problem.status !== 429) res.setHeader('x-should-retry', 'false');
    res.json({
      error: {
        message: problem.detail,
        type: TYPES[problem.status] ?? (problem.status === 503 ? 'service_unavailable' : 'server_error'),
        param: paramOf(problem),
        code: codeOf(problem),
      },
    });
  },
};
