import pg from 'pg';
import { ListeningSessionBus } from './session-bus.js';
import type { Logger } from '../logger.js';

/** The one channel every gateway instance listens on. */
const CHANNEL = 'device_ops_sessions';
/** PostgreSQL refuses NOTIFY payloads of 8,000 bytes or more. */
const MAX_PAYLOAD_BYTES = 7_500;
const RECONNECT_MIN_MS = 250;
const RECONNECT_MAX_MS = 5_000;

type Message = { t: 'stored'; u: [string, number][] } | { t: 'cancel'; id: string } | { t: 'queued' } | { t: 'revoked'; id: string };

/**
 * The session bus between replicas over PostgreSQL LISTEN/NOTIFY: one
 * dedicated connection listens, notifications go out through the knex pool
 * (`pg_notify`). PostgreSQL is what replicas already share, so no other
 * service is needed (Redis stays optional); ADR 0024 says why. A lost
 * connection is re-established with backoff; what was sent meanwhile is
 * made up for by the followers' and dispatchers' slow polls.
 */
export class PgSessionBus extends ListeningSessionBus {
  private client: pg.Client | null = null;
  private closed = false;
  private reconnectMs = RECONNECT_MIN_MS;
  private reconnectTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly databaseUrl: string,
    private readonly notify: (channel: string, payload: string) => Promise<unknown>,
    private readonly logger: Logger,
  ) {
    super();
  }

  /** Connect and LISTEN; resolves once listening (or after the first failure, retrying behind). */
  async start(): Promise<void> {
    await this.connect();
  }

  publishStored(upTo: ReadonlyMap<string, number>): void {
    let chunk: [string, number][] = [];
    let bytes = 0;
    for (const entry of upTo) {
      const size = entry[0].length + 16;
      if (bytes + size > MAX_PAYLOAD_BYTES && chunk.length > 0) {
        this.send({ t: 'stored', u: chunk });
        chunk = [];
        bytes = 0;
      }
      chunk.push(entry);
      bytes += size;
    }
    if (chunk.length > 0) this.send({ t: 'stored', u: chunk });
  }

  publishCancel(sessionId: string): void {
    this.send({ t: 'cancel', id: sessionId });
  }

  publishQueued(): void {
    this.send({ t: 'queued' });
  }

  publishKeyRevoked(keyId: string): void {
    // Here at once (the revoking request's own instance), then everywhere.
    this.listeners.deliverKeyRevoked(keyId);
    this.send({ t: 'revoked', id: keyId });
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => undefined);
  }

  private send(message: Message): void {
    this.notify(CHANNEL, JSON.stringify(message)).catch((error: unknown) =>
      this.logger.warn('could not notify the other gateway instances', { kind: message.t, err: error }),
    );
  }

  private receive(payload: string | undefined): void {
    let message: Message;
    try {
      message = JSON.parse(payload ?? '') as Message;
    } catch {
      return;
    }
    if (message.t === 'stored') for (const [sessionId, upTo] of message.u) this.listeners.deliverStored(sessionId, upTo);
    else if (message.t === 'cancel') this.listeners.deliverCancel(message.id);
    else if (message.t === 'queued') this.listeners.deliverQueued();
    else if (message.t === 'revoked') this.listeners.deliverKeyRevoked(message.id);
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({ connectionString: this.databaseUrl, application_name: 'device-operations-gateway-bus' });
    client.on('notification', (message) => this.receive(message.payload));
    client.on('error', (error) => this.lost(client, error));
    client.on('end', () => this.lost(client, new Error('connection ended')));
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
      if (this.closed) {
        await client.end();
        return;
      }
      this.client = client;
      // Revocations sent while not listening were missed: nothing cached before now is trusted.
      this.listeners.deliverKeyRevoked(null);
      if (this.reconnectMs > RECONNECT_MIN_MS) this.logger.info('session bus listening again');
      this.reconnectMs = RECONNECT_MIN_MS;
    } catch (error) {
      await client.end().catch(() => undefined);
      this.lost(client, error);
    }
  }

  private lost(client: pg.Client, error: unknown): void {
    if (this.closed || this.reconnectTimer) return;
    if (this.client === client) this.client = null;
    // Until listening again, a revocation elsewhere would go unheard: stop trusting cached keys.
    this.listeners.deliverKeyRevoked(null);
    this.logger.warn('session bus lost its connection; reconnecting', { retryInMs: this.reconnectMs, err: error });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.connect();
    }, this.reconnectMs);
    this.reconnectTimer.unref();
    this.reconnectMs = Math.min(this.reconnectMs * 2, RECONNECT_MAX_MS);
  }
}
