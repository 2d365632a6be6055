import type { Request, Response } from 'express';

export interface SseOptions {
  /** Gauge of open streams. */
  open?: { inc(): void; dec(): void } | undefined;
  heartbeatMs?: number;
  /**
   * Bytes a client may leave unread before it is disconnected: a slow reader
   * must not make the gateway buffer without limit.
   */
  maxBufferedBytes?: number;
  /** Told when a slow reader is cut off. */
  onOverflow?: (bufferedBytes: number) => void;
}

export interface SseMessage {
  id?: number | string;
  event: string;
  data: unknown;
}

/**
 * A Server-Sent Events response: headers that keep proxies from buffering,
 * a heartbeat comment so idle connections stay open, and one `close` hook
 * for whoever produces the events.
 */
export class SseStream {
  private readonly heartbeat: NodeJS.Timeout;
  private closed = false;
  private readonly closers: (() => void)[] = [];

  private readonly open: { inc(): void; dec(): void } | undefined;
  private readonly maxBufferedBytes: number;

  constructor(
    req: Request,
    private readonly res: Response,
    private readonly options: SseOptions = {},
  ) {
    this.open = options.open;
    this.maxBufferedBytes = options.maxBufferedBytes ?? Number.POSITIVE_INFINITY;
    this.open?.inc();
    res.status(200);
    res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
    res.setHeader('Cache-Control', 'no-cache, no-transform');
    res.setHeader('Connection', 'keep-alive');
    // NGINX: pass events through as they come.
    res.setHeader('X-Accel-Buffering', 'no');
    res.flushHeaders();
    // Tell EventSource how soon to reconnect after a drop.
    res.write('retry: 2000\n\n');
    this.heartbeat = setInterval(() => this.write(': keep-alive\n\n'), options.heartbeatMs ?? 15_000);
    this.heartbeat.unref();
    req.once('close', () => this.finish());
    res.once('close', () => this.finish());
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Write one event; false once the client is gone. */
  send(message: SseMessage): boolean {
    if (this.closed) return false;
    let frame = '';
    if (message.id !== undefined) frame += `id: ${message.id}\n`;
    frame += `event: ${message.event}\ndata: ${JSON.stringify(message.data)}\n\n`;
    return this.write(frame);
  }

  private write(frame: string): boolean {
    if (this.closed) return false;
    this.res.write(frame);
    if (this.res.writableLength > this.maxBufferedBytes) {
      // The client reads slower than events come: cut it off rather than buffer.
      this.options.onOverflow?.(this.res.writableLength);
      this.res.destroy();
      this.finish();
      return false;
    }
    return true;
  }

  /** Run when the stream closes, by either side. */
  onClose(fn: () => void): void {
    if (this.closed) fn();
    else this.closers.push(fn);
  }

  end(): void {
    if (!this.closed) this.res.end();
    this.finish();
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    this.open?.dec();
    clearInterval(this.heartbeat);
    for (const fn of this.closers.splice(0)) fn();
  }
}

/** The last event id a reconnecting client saw: Last-Event-ID header, or ?lastEventId= for clients that cannot set it. */
export function lastEventId(req: Request): number {
  const raw = req.get('last-event-id') ?? (typeof req.query.lastEventId === 'string' ? req.query.lastEventId : undefined);
  const value = raw === undefined ? 0 : Number(raw);
  return Number.isInteger(value) && value > 0 ? value : 0;
}

export function wantsEventStream(req: Request): boolean {
  return (req.get('accept') ?? '').split(',').some((part) => part.trim().startsWith('text/event-stream'));
}
