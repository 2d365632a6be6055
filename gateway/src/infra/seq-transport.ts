import { Logger as SeqLogger } from 'seq-logging';
import TransportStream from 'winston-transport';

const SEQ_LEVELS: Record<string, string> = { error: 'Error', warn: 'Warning', info: 'Information', debug: 'Debug' };
/** Fields winston adds that are not event properties. */
const OMITTED = new Set(['level', 'message', 'timestamp']);

export interface SeqTransportOptions {
  serverUrl: string;
  apiKey?: string | undefined;
  /** Events held while Seq is slow or down; beyond it new events are dropped and counted. */
  maxQueued?: number;
  onDropped: (count: number) => void;
  /** Shipping problems: reported through the console logger only, never back into Seq. */
  onError: (message: string) => void;
}

/**
 * A winston transport shipping every log line to Seq through seq-logging,
 * batched in the background. A Seq outage never blocks or fails a request:
 * the buffer is bounded, and what does not fit is dropped and counted.
 */
export class SeqTransport extends TransportStream {
  private readonly seq: SeqLogger;
  private readonly maxQueued: number;
  private lastFailure: { at: number; message: string } | null = null;

  constructor(private readonly options: SeqTransportOptions) {
    super();
    this.maxQueued = options.maxQueued ?? 10_000;
    this.seq = new SeqLogger({
      serverUrl: options.serverUrl,
      ...(options.apiKey ? { apiKey: options.apiKey } : {}),
      maxBatchingTime: 1000,
      requestTimeout: 5000,
      maxRetries: 2,
      retryDelay: 1000,
      onError: (error: unknown) => {
        const message = `Seq log shipping failed: ${String((error as Error)?.message ?? error)}`;
        this.lastFailure = { at: Date.now(), message };
        options.onError(message);
      },
    });
  }

  /** Healthy unless shipping failed within the last minute; for /health/detailed. */
  status(): { healthy: boolean; detail: string } {
    const recent = this.lastFailure !== null && Date.now() - this.lastFailure.at < 60_000;
    const queued = `${this.queued} events queued`;
    return recent ? { healthy: false, detail: `${this.lastFailure!.message} (${queued})` } : { healthy: true, detail: queued };
  }

  /** Events waiting to be shipped (seq-logging keeps them in its queue). */
  private get queued(): number {
    return (this.seq as unknown as { _queue: unknown[] })._queue.length;
  }

  override log(info: Record<string, unknown>, callback: () => void): void {
    if (this.queued >= this.maxQueued) {
      this.options.onDropped(1);
      callback();
      return;
    }
    const properties: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(info)) if (!OMITTED.has(key)) properties[key] = value;
    const error = properties.err as { stack?: string } | undefined;
    this.seq.emit({
      timestamp: typeof info.timestamp === 'string' ? new Date(info.timestamp) : new Date(),
      level: SEQ_LEVELS[String(info.level)] ?? 'Information',
      messageTemplate: String(info.message),
      properties,
      ...(error?.stack ? { exception: error.stack } : {}),
    });
    callback();
  }

  override close(): void {
    void this.seq.close().catch(() => {});
  }

  flush(): Promise<boolean> {
    return this.seq.flush();
  }
}
