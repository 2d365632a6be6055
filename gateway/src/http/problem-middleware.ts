import type { NextFunction, Request, Response } from 'express';
import { isDatabaseUnavailable } from '../infra/database/database-errors.js';
import type { GatewayMetrics } from '../infra/metrics.js';
import {
  DatabaseUnavailableError,
  ForbiddenError,
  GatewayError,
  InternalError,
  ServiceUnavailableError,
  TooManyRequestsError,
  MalformedBodyError,
  NotFoundError,
  PayloadTooLargeError,
  UnsupportedMediaTypeError,
} from '../errors/gateway-error.js';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/** body-parser errors carry a `type`; turn the ones a client causes into ours. */
function fromBodyParser(error: unknown): GatewayError | null {
  const type = (error as { type?: unknown }).type;
  if (type === 'entity.parse.failed') return new MalformedBodyError('The request body is not valid JSON.');
  if (type === 'entity.too.large') return new PayloadTooLargeError('The request body exceeds the size limit.');
  if (type === 'charset.unsupported' || type === 'encoding.unsupported')
    return new UnsupportedMediaTypeError('The request body encoding is not supported.');
  return null;
}

export function toGatewayError(error: unknown): GatewayError {
  if (error instanceof GatewayError) return error;
  if (isDatabaseUnavailable(error)) return new DatabaseUnavailableError(error);
  return fromBodyParser(error) ?? new InternalError(error);
}

/** Refusals that metrics count: rate limits, capacity, missing scopes. */
function count(problem: GatewayError, req: Request, metrics: GatewayMetrics): void {
  if (problem instanceof TooManyRequestsError) metrics.rateLimitRejections.inc({ limiter: problem.limiter });
  else if (problem instanceof ServiceUnavailableError) metrics.backpressureRejections.inc({ reason: problem.reason });
  else if (problem instanceof ForbiddenError) {
    metrics.authFailures.inc({ method: req.context?.principal?.method ?? 'none', reason: 'scope' });
  } else {
    // A worker at capacity: refused at the call (WorkerCallError) or as the job's end (SessionFailedError).
    const code = (problem as { grpcCode?: string }).grpcCode ?? problem.extensions.code;
    if (code === 'RESOURCE_EXHAUSTED') metrics.backpressureRejections.inc({ reason: 'worker-capacity' });
  }
}

/**
 * How errors are written on the routes of one front that has its own error
 * shape (the OpenAI-compatible routes): status and headers are set already;
 * `write` sends the body. Everything else (status table, logging, metrics) is
 * the same for every front.
 */
export interface ErrorBodyWriter {
  matches(req: Request): boolean;
  write(problem: GatewayError, req: Request, res: Response): void;
}

/**
 * The one place that writes errors: RFC 9457 problem+json, no stack traces
 * (or a front's own shape, from `writers`, for the routes it matches).
 */
export function problemMiddleware(metrics?: GatewayMetrics, writers: readonly ErrorBodyWriter[] = []) {
  return (error: unknown, req: Request, res: Response, next: NextFunction): void => {
    const problem = toGatewayError(error);
    if (metrics) count(problem, req, metrics);
    const log = req.context?.log;
    const fields = { errorId: problem.id, status: problem.status, type: problem.type, err: error };
    const refusal = { errorId: problem.id, status: problem.status, type: problem.type, detail: problem.detail };
    if (problem instanceof DatabaseUnavailableError) {
      const cause = [(error as { code?: string }).code, (error as Error)?.message].filter(Boolean).join(': ');
      log?.warn('request refused: database unavailable', { ...refusal, cause });
    } else if (problem.isRefusal()) {
      // Client mistakes and capacity refusals (ours or a worker's) are not faults: no stack, and no error-level flood under overload.
      log?.info('request refused', refusal);
    } else log?.error('request failed', fields);
    if (res.headersSent) {
      next(error);
      return;
    }
    res.status(problem.status);
    for (const [name, value] of Object.entries(problem.headers)) res.setHeader(name, value);
    const writer = writers.find((candidate) => candidate.matches(req));
    if (writer) {
      writer.write(problem, req, res);
      return;
    }
    res.type(PROBLEM_CONTENT_TYPE).send(
      JSON.stringify({
        type: `/problems/${problem.type}`,
        title: problem.title,
        status: problem.status,
        detail: problem.detail,
        instance: req.originalUrl.split('?')[0],
        errorId: problem.id,
        correlationId: req.context?.correlationId,
        ...problem.extensions,
      }),
    );
  };
}

export function notFoundHandler() {
  return (req: Request, _res: Response, next: NextFunction): void => {
    next(new NotFoundError(`No route for ${req.method} ${req.path}.`));
  };
}
