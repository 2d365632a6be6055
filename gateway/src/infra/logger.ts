import type { Writable } from 'node:stream';
import winston from 'winston';
import { SeqTransport } from './seq-transport.js';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export type LogFields = Record<string, unknown>;

/**
 * The logging interface the code depends on. Levels mean something:
 * error — someone must act; warn — trouble that heals itself; info — a
 * lifecycle event or a request; debug — detail for development.
 * Pass errors as `{ err }`, never interpolated into the message.
 */
export interface Logger {
  error(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  debug(message: string, fields?: LogFields): void;
  log(level: LogLevel, message: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
  /** Ship what is buffered (Seq) and release the transports. */
  close(): Promise<void>;
  /** The Seq sink's state, when logs are shipped there. */
  seqStatus?(): { healthy: boolean; detail: string } | null;
}

export interface LoggerOptions {
  level: LogLevel;
  /** Where JSON lines go; stdout by default. Tests pass a memory stream. */
  stream?: Writable;
  /** Fields on every line. */
  defaultFields?: LogFields;
  /** Also ship every line to Seq. */
  seq?: { serverUrl: string; apiKey?: string | undefined; maxQueued?: number; onDropped: (count: number) => void };
}

/** Longest error message logged whole; a longer one (a failed query of a thousand rows) keeps its head and its cause at the end. */
const MAX_ERROR_MESSAGE = 2000;

function boundedMessage(message: string): string {
  if (message.length <= MAX_ERROR_MESSAGE) return message;
  return `${message.slice(0, 1000)} …[${message.length - 1500} characters]… ${message.slice(-500)}`;
}

// Errors become plain objects: winston's JSON format drops Error properties.
const serializeErrors = winston.format((info) => {
  for (const [key, value] of Object.entries(info)) {
    if (value instanceof Error) {
      info[key] = { name: value.name, message: boundedMessage(value.message), stack: value.stack && boundedMessage(value.stack), code: (value as { code?: unknown }).code };
    }
  }
  return info;
});

class WinstonLogger implements Logger {
  constructor(private readonly inner: winston.Logger) {}

  error(message: string, fields?: LogFields): void {
    this.inner.error(message, fields);
  }

  warn(message: string, fields?: LogFields): void {
    this.inner.warn(message, fields);
  }

  info(message: string, fields?: LogFields): void {
    this.inner.info(message, fields);
  }

  debug(message: string, fields?: LogFields): void {
    this.inner.debug(message, fields);
  }

  log(level: LogLevel, message: string, fields?: LogFields): void {
    this.inner.log(level, message, fields);
  }

  child(fields: LogFields): Logger {
    return new WinstonLogger(this.inner.child(fields));
  }

  seqStatus(): { healthy: boolean; detail: string } | null {
    const seq = this.inner.transports.find((t) => t instanceof SeqTransport);
    return seq ? seq.status() : null;
  }

  async close(): Promise<void> {
    await Promise.all(
      this.inner.transports.map((t) => (t instanceof SeqTransport ? t.flush().catch(() => false) : Promise.resolve(true))),
    );
    this.inner.close();
  }
}

function throttled(write: (message: string) => void, intervalMs = 60_000): (message: string) => void {
  let last = 0;
  return (message) => {
    if (Date.now() - last < intervalMs) return;
    last = Date.now();
    write(message);
  };
}

export function createLogger(options: LoggerOptions): Logger {
  const transport = options.stream
    ? new winston.transports.Stream({ stream: options.stream })
    : new winston.transports.Console();
  const transports: winston.transport[] = [transport];
  if (options.seq) {
    const seq = options.seq;
    transports.push(
      new SeqTransport({
        serverUrl: seq.serverUrl,
        apiKey: seq.apiKey,
        ...(seq.maxQueued !== undefined ? { maxQueued: seq.maxQueued } : {}),
        onDropped: seq.onDropped,
        // Straight to stderr, at most once a minute: a Seq problem must not loop back into Seq.
        onError: throttled((message) =>
          process.stderr.write(`${JSON.stringify({ level: 'warn', message, service: 'gateway', timestamp: new Date().toISOString() })}\n`),
        ),
      }),
    );
  }
  const inner = winston.createLogger({
    level: options.level,
    levels: { error: 0, warn: 1, info: 2, debug: 3 },
    defaultMeta: { service: 'gateway', ...options.defaultFields },
    format: winston.format.combine(winston.format.timestamp(), serializeErrors(), winston.format.json()),
    transports,
  });
  return new WinstonLogger(inner);
}
