import { once } from 'node:events';
import { createConnection, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

export interface ProxiedRequest {
  method: string;
  path: string;
  /** Lower-case names. */
  headers: Record<string, string>;
}

/**
 * A TCP proxy between a browser and the gateway, so a test can cut the
 * connections as a network (or a load balancer) would: both sides see the
 * socket close, and the browser's own reconnect logic runs. It reads the
 * HTTP request heads going through, so the test sees what the browser sent
 * when it came back (Last-Event-ID). Kept in memory only: they carry tokens.
 */
export class TcpProxy {
  readonly requests: ProxiedRequest[] = [];
  /** Every socket of every relayed connection, both sides. */
  private readonly open = new Set<Socket>();
  private readonly clients = new Set<Socket>();

  private constructor(private readonly server: Server) {}

  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    const server = createServer();
    const proxy = new TcpProxy(server);
    server.on('connection', (client) => proxy.relay(client, target));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Close every connection open now, mid-response or not; returns how many browser connections were cut. */
  cut(): number {
    const cut = this.clients.size;
    for (const socket of this.open) socket.destroy();
    return cut;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private relay(client: Socket, target: { host: string; port: number }): void {
    const upstream = createConnection(target);
    this.clients.add(client);
    client.on('close', () => this.clients.delete(client));
    for (const socket of [client, upstream]) {
      this.open.add(socket);
      socket.on('close', () => this.open.delete(socket));
      socket.on('error', () => {});
    }
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    let pending: Buffer = Buffer.alloc(0);
    let bodyLeft = 0;
    client.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      pending = this.readHeads(pending, (left) => (bodyLeft = left), () => bodyLeft);
    });
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Record each complete request head in `data`, skipping bodies by Content-Length; returns what is left to read. */
  private readHeads(data: Buffer, setBody: (bytes: number) => void, body: () => number): Buffer {
    let rest: Buffer = data;
    for (;;) {
      if (body() > 0) {
        const skipped = Math.min(body(), rest.length);
        setBody(body() - skipped);
        rest = rest.subarray(skipped);
        if (body() > 0) return rest;
      }
      const end = rest.indexOf('\r\n\r\n');
      if (end < 0) return rest;
      const [line, ...fields] = rest.subarray(0, end).toString('latin1').split('\r\n');
      const [method, path] = line!.split(' ');
      const headers = Object.fromEntries(
        fields.map((field) => [field.slice(0, field.indexOf(':')).trim().toLowerCase(), field.slice(field.indexOf(':') + 1).trim()]),
      );
      this.requests.push({ method: method!, path: path!, headers });
      setBody(Number(headers['content-length'] ?? 0));
      rest = rest.subarray(end + 4);
    }
  }
}
