import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { SseStream } from '../../src/http/sse.js';
import { readSse } from '../helpers/sse.js';

const MAX_BUFFERED = 256 * 1024;
const PAYLOAD = 'x'.repeat(16 * 1024);

interface Outcome {
  /** Events the route wrote before it stopped. */
  sent: number;
  /** Whether the route stopped because send() said the client is gone. */
  refused: boolean;
  overflows: number[];
  closeHandlers: number;
  gauge: { inc: number; dec: number };
  socketDestroyed: boolean;
}

/**
 * An app whose one route streams `limit` large events, one per turn of the
 * event loop (as a job's events arrive), through SseStream with a buffer cap.
 */
async function serve(limit: number): Promise<{ url: string; port: number; outcome: Promise<Outcome>; server: Server }> {
  let report!: (outcome: Outcome) => void;
  const outcome = new Promise<Outcome>((resolve) => (report = resolve));
  const app = express();
  app.get('/events', (req, res) => {
    const gauge = { inc: 0, dec: 0 };
    const overflows: number[] = [];
    let closeHandlers = 0;
    const stream = new SseStream(req, res, {
      heartbeatMs: 60_000,
      maxBufferedBytes: MAX_BUFFERED,
      onOverflow: (bytes) => overflows.push(bytes),
      open: { inc: () => (gauge.inc += 1), dec: () => (gauge.dec += 1) },
    });
    stream.onClose(() => (closeHandlers += 1));
    let sent = 0;
    const tick = () => {
      if (sent >= limit) {
        stream.end();
        setImmediate(() => report({ sent, refused: false, overflows, closeHandlers, gauge, socketDestroyed: req.socket.destroyed }));
        return;
      }
      if (!stream.send({ id: sent + 1, event: 'chunk', data: { n: sent + 1, payload: PAYLOAD } })) {
        setImmediate(() => report({ sent, refused: true, overflows, closeHandlers, gauge, socketDestroyed: req.socket.destroyed }));
        return;
      }
      sent += 1;
      setImmediate(tick);
    };
    tick();
  });
  const server = createServer(app).listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  servers.push(server);
  return { url: `http://127.0.0.1:${port}`, port, outcome, server };
}

const servers: Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

describe('SSE slow readers', () => {
  it('disconnects a client that stops reading once its unread bytes pass maxBufferedBytes', async () => {
    // Far more than loopback socket buffers hold: a reader that never reads must be cut off long before.
    const limit = 12_000; // ~190 MiB
    const { port, outcome } = await serve(limit);
    const client = connect(port, '127.0.0.1');
    await once(client, 'connect');
    client.write(`GET /events HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\n\r\n`);
    // The client reads nothing: whatever the server writes piles up.
    client.pause();

    const result = await outcome;
    expect(result.refused).toBe(true);
    expect(result.sent).toBeLessThan(limit);
    expect(result.overflows).toHaveLength(1);
    expect(result.overflows[0]).toBeGreaterThan(MAX_BUFFERED);
    expect(result.closeHandlers).toBe(1);
    expect(result.gauge).toEqual({ inc: 1, dec: 1 });
    expect(result.socketDestroyed).toBe(true);

    // When the client reads again it finds the connection closed, and not every event arrived.
    let received = 0;
    client.on('data', (chunk: Buffer) => (received += chunk.length));
    const closed = once(client, 'close');
    client.resume();
    await closed;
    expect(received).toBeGreaterThan(0);
    expect(received).toBeLessThan(limit * PAYLOAD.length);
  });

  it('delivers every event to a client that keeps reading, with the same cap', async () => {
    // ~4.8 MiB: more than the cap many times over, so only reading keeps the buffer low.
    const limit = 300;
    const { url, outcome } = await serve(limit);
    const response = await fetch(`${url}/events`, { headers: { accept: 'text/event-stream' } });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = await readSse(response);

    const result = await outcome;
    expect(result.overflows).toEqual([]);
    expect(result.refused).toBe(false);
    expect(events).toHaveLength(limit);
    expect(events.map((e) => (e.data as { n: number }).n)).toEqual(Array.from({ length: limit }, (_, i) => i + 1));
    expect(events.every((e) => e.event === 'chunk' && (e.data as { payload: string }).payload.length === PAYLOAD.length)).toBe(true);
    expect(result.closeHandlers).toBe(1);
    expect(result.gauge).toEqual({ inc: 1, dec: 1 });
  });
});
