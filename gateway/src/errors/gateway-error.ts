import { randomUUID } from 'node:crypto';

/**
 * The gateway's one error hierarchy. Each error knows its HTTP status and a
 * machine-readable type, and gets an id that is returned to the client and
 * logged, so a report can be matched with its log line. `detail` is shown to
 * the client: it names what was wrong and never carries secrets.
 * problem-middleware.ts is the one place that writes them as responses.
 */
export abstract class GatewayError extends Error {
  abstract readonly status: number;
  /** Short, stable slug; the problem `type` is /problems/<type>. */
  abstract readonly type: string;
  abstract readonly title: string;
  readonly id = randomUUID();
  /** Extra members of the problem body (e.g. `errors`, `retryAfterSeconds`). */
  readonly extensions: Record<string, unknown> = {};
  /** Response headers that belong to this error (e.g. Retry-After). */
  readonly headers: Record<string, string> = {};

  constructor(readonly detail: string, options?: { cause?: unknown }) {
    super(detail, options);
    this.name = new.target.name;
  }

  /**
   * A refusal rather than a fault: the client's mistake (4xx) or capacity
   * it can retry for (503 with Retry-After). Logged at info, without a stack;
   * faults (other 5xx) at error.
   */
  isRefusal(): boolean {
    return this.status < 500;
  }
}

export interface FieldProblem {
  /** Where the problem is: "body.steps", "query.limit", "params.deviceId". */
  field: string;
  message: string;
}

export class ValidationError extends GatewayError {
  readonly status: number = 400;
  readonly type: string = 'validation-failed';
  readonly title: string = 'Request validation failed';

  constructor(readonly problems: FieldProblem[]) {
    super(problems.map((p) => `${p.field}: ${p.message}`).join('; '));
    this.extensions.errors = problems;
  }
}

/**
 * The request matches the API's schema, but not what it names: a dtype the
 * chosen device lacks, a batch item whose model or device does not exist, an
 * input the model cannot read (a worker's INVALID_ARGUMENT). 400 stays the
 * answer for schema violations only, so a request valid by the OpenAPI
 * document is never answered 400. Same `errors` list as ValidationError.
 */
export class UnprocessableContentError extends ValidationError {
  override readonly status = 422;
  override readonly type = 'unprocessable-content';
  override readonly title = 'Request cannot be processed';
}

export class MalformedBodyError extends GatewayError {
  readonly status = 400;
  readonly type = 'malformed-body';
  readonly title = 'Malformed request body';
}

export class UnauthorizedError extends GatewayError {
  readonly status = 401;
  readonly type = 'unauthorized';
  readonly title = 'Unauthorized';

  constructor() {
    // Deliberately the same text for every cause, so a caller cannot probe
    // which check failed; the cause goes to the log only.
    super('A valid bearer token or API key is required.');
    this.headers['WWW-Authenticate'] = 'Bearer, ApiKey';
  }
}

export class ForbiddenError extends GatewayError {
  readonly status = 403;
  readonly type = 'forbidden';
  readonly title = 'Forbidden';
}

export class NotFoundError extends GatewayError {
  readonly status = 404;
  readonly type = 'not-found';
  readonly title = 'Not found';
}

export class MethodNotAllowedError extends GatewayError {
  readonly status = 405;
  readonly type = 'method-not-allowed';
  readonly title = 'Method not allowed';

  constructor(method: string, path: string, allowed: readonly string[]) {
    super(`${path} does not answer ${method}; it answers ${allowed.join(', ')}.`);
    this.headers.Allow = allowed.join(', ');
    this.extensions.allowed = [...allowed];
  }
}

export class ConflictError extends GatewayError {
  readonly status = 409;
  readonly type = 'conflict';
  readonly title = 'Conflict';
}

export class PayloadTooLargeError extends GatewayError {
  readonly status = 413;
  readonly type = 'payload-too-large';
  readonly title = 'Payload too large';
}

export class UnsupportedMediaTypeError extends GatewayError {
  readonly status = 415;
  readonly type = 'unsupported-media-type';
  readonly title = 'Unsupported media type';
}

export class TooManyRequestsError extends GatewayError {
  readonly status = 429;
  readonly type = 'rate-limited';
  readonly title = 'Too many requests';

  constructor(
    detail: string,
    retryAfterSeconds: number,
    /** Which limit refused it (client, principal, inference), for metrics. */
    readonly limiter = 'unknown',
  ) {
    super(detail);
    this.headers['Retry-After'] = String(Math.max(1, Math.ceil(retryAfterSeconds)));
    this.extensions.retryAfterSeconds = Math.max(1, Math.ceil(retryAfterSeconds));
  }
}

export class ServiceUnavailableError extends GatewayError {
  readonly status = 503;
  readonly type = 'service-unavailable';
  readonly title = 'Service unavailable';

  constructor(
    detail: string,
    retryAfterSeconds?: number,
    /** Why there is no capacity (no-worker, gateway-queue, sse-streams…), for metrics. */
    readonly reason = 'no-worker',
  ) {
    super(detail);
    if (retryAfterSeconds !== undefined) this.headers['Retry-After'] = String(retryAfterSeconds);
    // Clients see which bound refused them, as metrics do.
    this.extensions.reason = reason;
  }

  override isRefusal(): boolean {
    return true;
  }
}

export class InternalError extends GatewayError {
  readonly status = 500;
  readonly type = 'internal';
  readonly title = 'Internal server error';

  constructor(cause?: unknown) {
    super('The gateway failed to handle the request; quote the error id when reporting it.', { cause });
  }
}

export class DatabaseUnavailableError extends GatewayError {
  readonly status = 503;
  readonly type = 'database-unavailable';
  readonly title = 'Database unavailable';

  constructor(cause: unknown) {
    // The cause (host, port, driver message) goes to the log, not the client.
    super('The gateway cannot reach its database right now; retry shortly.', { cause });
    this.headers['Retry-After'] = '5';
  }
}
