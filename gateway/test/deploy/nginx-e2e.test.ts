import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect as http2Connect } from 'node:http2';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadProtos } from '../../src/infra/grpc/protos.js';
import { bearer } from '../helpers/http.js';
import { startRealGateway, type RealGateway } from '../helpers/real-gateway.js';
import { signToken } from '../helpers/tokens.js';
import { waitFor } from '../helpers/wait.js';
import { gatewayClient, healthCheck, unary } from '../helpers/grpc-client.js';
import { edgeRequest, headerCount, openRequest, type EdgeResponse } from './helpers/edge-client.js';
import { composeNginxVariables, prepareEdge, startEdge, type RunningEdge } from './helpers/nginx.js';
import { requireTool } from '../helpers/tools.js';

/**
 * The real NGINX configuration in front of the real gateway (with a real local
 * worker and the demo models), all on loopback: what a client outside the
 * deployment gets. Client addresses 127.0.0.x stand for different clients;
 * 127.0.0.2/32 plays the internal network.
 */
const nginx = requireTool('nginx', 'apt-get install nginx');

const alice = bearer(signToken({ sub: 'alice', scope: 'inference' }));
const admin = bearer(signToken({ sub: 'root', scope: 'admin' }));
const INTERNAL_CLIENT = '127.0.0.2';
const OUTSIDE_CLIENT = '127.0.0.3';

describe.skipIf(!nginx)('NGINX in front of the gateway', () => {
  let real: RealGateway;
  let edge: RunningEdge;
  let ca: Buffer;
  let https: string;
  let scratch: string;

  const get = (path: string, options: Parameters<typeof edgeRequest>[1] = {}) => edgeRequest(`${https}${path}`, { ca, ...options });
  const post = (path: string, body: unknown, headers: Record<string, string> = alice, localAddress?: string) =>
    edgeRequest(`${https}${path}`, {
      ca,
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
      ...(localAddress ? { localAddress } : {}),
    });
  const problem = (response: EdgeResponse) => JSON.parse(response.body) as { status: number; title: string; detail: string; correlationId: string };

  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'device-ops-edge-'));
    real = await startRealGateway({
      MODEL_DIRECTORY: inject('demoModels'),
      OUTPUT_DIRECTORY: join(scratch, 'outputs'),
      DATA_DIRECTORY: join(scratch, 'data'),
      // As in docker-compose.yml: NGINX is the one trusted hop.
      TRUST_PROXY: '1',
      LOG_LEVEL: 'warn',
    });
    const prepared = await prepareEdge(
      { gateway: new URL(real.url).host, gatewayGrpc: real.gateway.grpcAddress },
      { NGINX_INTERNAL_SUBNET: `${INTERNAL_CLIENT}/32` },
    );
    edge = await startEdge(nginx!, prepared);
    ca = readFileSync(edge.certificate.certificate);
    https = `https://127.0.0.1:${edge.ports.https}`;
  });

  afterAll(async () => {
    await edge?.stop();
    await real?.gateway.close();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  // ----------------------------------------------------------------- TLS

  const handshake = (options: ConnectionOptions) =>
    new Promise<{ protocol: string | null; alpn: string | false | null }>((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', port: edge.ports.https, ca, ALPNProtocols: ['h2', 'http/1.1'], ...options }, () => {
        resolve({ protocol: socket.getProtocol(), alpn: socket.alpnProtocol });
        socket.end();
      });
      socket.once('error', reject);
    });

  it('speaks TLS 1.2 and 1.3 with HTTP/2, and refuses TLS 1.1', async () => {
    expect(await handshake({ minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' })).toEqual({ protocol: 'TLSv1.3', alpn: 'h2' });
    expect(await handshake({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' })).toEqual({ protocol: 'TLSv1.2', alpn: 'h2' });
    // The client offers TLS 1.1 with every cipher it has: only the server can say no.
    await expect(handshake({ minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' })).rejects.toThrow();

    const session = http2Connect(https, { ca });
    try {
      const stream = session.request({ ':path': '/health' });
      const [headers] = (await once(stream, 'response')) as [Record<string, string | number>];
      let body = '';
      for await (const chunk of stream) body += chunk;
      expect(headers[':status']).toBe(200);
      expect(JSON.parse(body)).toEqual({ status: 'ok' });
    } finally {
      session.close();
    }
  });

  it('redirects HTTP to HTTPS, keeping the path and query', async () => {
    const response = await edgeRequest(`http://127.0.0.1:${edge.ports.http}/api/device/list?limit=5`);
    expect(response.status).toBe(301);
    expect(response.headers.location).toBe(`${https}/api/device/list?limit=5`);
  });

  // ----------------------------------------------------------------- headers

  it('sends the security headers once each, on the gateway’s answers and on its own', async () => {
    const fromGateway = await get('/health');
    const fromNginx = await get('/metrics');
    for (const response of [fromGateway, fromNginx]) {
      expect(response.headers['strict-transport-security']).toBe('max-age=31536000; includeSubDomains');
      expect(response.headers['x-content-type-options']).toBe('nosniff');
      expect(response.headers['x-frame-options']).toBe('DENY');
      expect(response.headers['referrer-policy']).toBe('no-referrer');
      expect(response.headers['permissions-policy']).toContain('camera=()');
      expect(response.headers.server).toBe('nginx');
      for (const name of ['strict-transport-security', 'x-content-type-options', 'x-frame-options', 'referrer-policy', 'content-security-policy']) {
        expect(headerCount(response, name), `${name} once`).toBe(1);
      }
      expect(response.headers['x-powered-by']).toBeUndefined();
    }
    // The gateway keeps its own policy (Swagger UI needs it); nginx's pages get a strict one.
    expect(fromGateway.headers['content-security-policy']).toContain("default-src 'self'");
    expect(fromNginx.headers['content-security-policy']).toBe("default-src 'none'; frame-ancestors 'none'");
  });

  // ----------------------------------------------------------------- operators' endpoints

  it('refuses /metrics and /health/detailed to the outside, however they are spelled', async () => {
    // The gateway itself would serve these to loopback (INTERNAL_ALLOW_LIST): the 403s are NGINX's.
    expect((await edgeRequest(`${real.url}/health/detailed`)).status).toBe(200);
    for (const path of ['/metrics', '/METRICS', '/metrics/workers/worker-0', '//metrics', '/%6Detrics', '/health/detailed', '/Health/Detailed/', '/health//detailed', '/health/detailed?x=1']) {
      const response = await get(path);
      expect(response.status, path).toBe(403);
      expect(response.headers['content-type']).toBe('application/problem+json');
      expect(problem(response)).toMatchObject({ status: 403, title: 'Forbidden' });
    }
    expect((await get('/health')).status).toBe(200);
    const ready = await get('/health/ready');
    expect([200, 503]).toContain(ready.status);
    expect(ready.headers['content-type']).toContain('application/json');
  });

  // ----------------------------------------------------------------- request ids, client address

  it('passes a well-formed X-Request-Id on, makes one otherwise, and logs the same id', async () => {
    const made = await get('/health');
    expect(made.headers['x-request-id']).toMatch(/^[0-9a-f]{32}$/);
    const kept = await get('/health', { headers: { 'x-request-id': 'client-id.42' } });
    expect(kept.headers['x-request-id']).toBe('client-id.42');
    const replaced = await get('/health', { headers: { 'x-request-id': 'not ok!' } });
    expect(replaced.headers['x-request-id']).toMatch(/^[0-9a-f]{32}$/);
    // NGINX writes its access log after the response: wait for the three lines.
    const ids = [made.headers['x-request-id'], 'client-id.42', replaced.headers['x-request-id']];
    await waitFor(async () => (ids.every((id) => edge.accessLog().some((line) => line.requestId === id)) ? true : undefined), {
      what: 'the access log lines',
    });
    const logged = edge.accessLog().map((line) => line.requestId);
    expect(logged).toEqual(expect.arrayContaining(ids));
  });

  it('tells the gateway the client’s address, not one the client made up', async () => {
    const created = await edgeRequest(`${https}/api/admin/keys`, {
      ca,
      method: 'POST',
      localAddress: '127.0.0.7',
      headers: { 'content-type': 'application/json', 'x-forwarded-for': '203.0.113.9', ...admin },
      body: JSON.stringify({ name: 'edge-address-check', scopes: ['inference'] }),
    });
    expect(created.status).toBe(201);
    const audit = await get('/api/admin/audit?action=key.create', { headers: admin });
    const entries = (JSON.parse(audit.body) as { items: { target: string; clientAddress: string }[] }).items;
    expect(entries.find((entry) => entry.target === 'edge-address-check')?.clientAddress).toBe('127.0.0.7');
  });

  it('refuses bodies over 16 MiB before they are sent, and takes 16 MiB', async () => {
    const ask = (length: number) =>
      edgeRequest(`${https}/api/inference/execute`, {
        ca,
        method: 'POST',
        expectContinue: true,
        localAddress: '127.0.0.8',
        headers: { 'content-type': 'application/json', 'content-length': String(length), ...alice },
      });
    const tooLarge = await ask(16 * 1024 * 1024 + 1);
    expect(tooLarge.status).toBe(413);
    expect(problem(tooLarge)).toMatchObject({ status: 413, title: 'Content Too Large' });
    expect((await ask(16 * 1024 * 1024)).status).toBe(100);
  });

  // ----------------------------------------------------------------- streams

  it('delivers Server-Sent Events one by one, not buffered until the end', async () => {
    const created = await post('/api/inference/sessions', {
      task: 'text-to-image',
      model: 'tiny-sd',
      parameters: { prompt: 'a lighthouse', steps: 24, width: 64, height: 64, seed: 3 },
    });
    expect(created.status).toBe(202);
    const { id } = JSON.parse(created.body) as { id: string };

    const response = await openRequest(`${https}/api/inference/sessions/${id}/events`, { ca, headers: { ...alice, accept: 'text/event-stream' } });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toContain('text/event-stream');
    const events: { event: string; at: number; read: number }[] = [];
    let buffer = '';
    let reads = 0;
    reading: for await (const chunk of response) {
      reads += 1;
      buffer += (chunk as Buffer).toString('utf8');
      let boundary: number;
      while ((boundary = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, boundary);
        buffer = buffer.slice(boundary + 2);
        const event = /^event: (.+)$/m.exec(frame)?.[1];
        if (!event) continue;
        events.push({ event, at: Date.now(), read: reads });
        if (['result', 'error', 'cancelled'].includes(event)) break reading;
      }
    }
    response.destroy();

    expect(events.at(-1)?.event).toBe('result');
    const progress = events.filter((e) => e.event === 'progress');
    expect(progress.length).toBeGreaterThanOrEqual(8);
    // Buffered, everything would come in one piece when the job ends; here
    // the progress events come in many reads, spread over the job's run time.
    expect(new Set(progress.map((e) => e.read)).size).toBeGreaterThanOrEqual(4);
    expect(events.at(-1)!.at - progress[0]!.at).toBeGreaterThan(100);
  });

  // ----------------------------------------------------------------- rate limits

  it('answers a burst of inference requests from one address with 429 at the edge, other addresses unaffected', async () => {
    const burstClient = '127.0.0.5';
    const validate = () =>
      post('/api/inference/validate', { task: 'text-to-image', model: 'tiny-sd', parameters: { prompt: 'x', steps: 1, width: 64, height: 64 } }, alice, burstClient);
    const started = Date.now();
    const answers = await Promise.all(Array.from({ length: 60 }, validate));
    const seconds = (Date.now() - started) / 1000;
    const limited = answers.filter((r) => r.status === 429);
    const passed = answers.length - limited.length;
    // The compose values: 5 r/s with a burst of 10 pass at once, then 5 more
    // each second however long the burst took to send; the rest is refused.
    const { NGINX_INFERENCE_RATE: rate, NGINX_INFERENCE_BURST: burst } = composeNginxVariables();
    expect([rate, burst]).toEqual(['5r/s', '10']);
    expect(passed).toBeGreaterThanOrEqual(11);
    expect(passed).toBeLessThanOrEqual(11 + Math.ceil(5 * seconds) + 1);
    expect(limited.length).toBeGreaterThan(0);
    for (const response of limited) {
      expect(response.headers['content-type']).toBe('application/problem+json');
      expect(problem(response).detail).toContain('edge proxy');
      expect(response.headers['retry-after']).toBe('1');
      expect(response.headers['strict-transport-security']).toBeDefined();
    }
    // Per client address: someone else goes through at once.
    const other = await post(
      '/api/inference/validate',
      { task: 'text-to-image', model: 'tiny-sd', parameters: { prompt: 'x', steps: 1, width: 64, height: 64 } },
      alice,
      '127.0.0.6',
    );
    expect(other.status).not.toBe(429);
    // Reading is limited by the wider `api` zone only.
    expect((await get('/api/inference/capabilities', { headers: alice, localAddress: burstClient })).status).toBe(200);
  });

  it('serves the OpenAI-compatible embeddings through the edge, under the inference zone', async () => {
    const embedded = await post('/v1/embeddings', { model: 'minilm', input: ['through the edge'], encoding_format: 'float' }, alice, '127.0.0.7');
    expect(embedded.status).toBe(200);
    const body = JSON.parse(embedded.body) as { data: { embedding: number[] }[]; usage: { prompt_tokens: number } };
    expect(body.data[0]!.embedding).toHaveLength(384);
    expect(body.usage.prompt_tokens).toBeGreaterThan(2);
    expect(embedded.headers['x-session-id']).toMatch(/^[0-9a-f-]{36}$/);
    // A burst from one address meets the inference zone's 5 r/s + 10, as /api/inference does.
    const started = Date.now();
    const answers = await Promise.all(Array.from({ length: 40 }, () => post('/v1/embeddings', { model: 'minilm' }, alice, '127.0.0.8')));
    const seconds = (Date.now() - started) / 1000;
    const passed = answers.filter((r) => r.status !== 429).length;
    expect(passed).toBeGreaterThanOrEqual(11);
    expect(passed).toBeLessThanOrEqual(11 + Math.ceil(5 * seconds) + 1);
    // Past the edge, the gateway's own answer is in OpenAI's shape.
    const refused = answers.find((r) => r.status === 400)!;
    expect(JSON.parse(refused.body)).toMatchObject({ error: { type: 'invalid_request_error', param: 'input' } });
  });

  // ----------------------------------------------------------------- internal listeners

  it("passes gRPC to the gateway's API for internal callers — never to a worker — and refuses others", async () => {
    const address = `127.0.0.1:${edge.ports.grpc}`;
    const client = gatewayClient(address);
    const protos = loadProtos();
    const workerService = new protos.device_ops.v1.WorkerService(address, grpc.credentials.createInsecure());
    try {
      // The gateway answers: its own service name is SERVING (a worker knows no such service).
      expect(await healthCheck(address, 'device_ops.gateway.v1.DeviceOperations')).toBe('SERVING');
      const who = await unary(client, 'whoAmI', {}, { ...alice, 'x-request-id': 'through-nginx-1' });
      expect(who.response).toMatchObject({ id: 'jwt:alice', scopes: ['inference'] });
      expect(who.trailers?.get('x-request-id')).toEqual(['through-nginx-1']);
      expect((await unary(client, 'whoAmI', {}, {})).error?.code).toBe(grpc.status.UNAUTHENTICATED);

      // A management call is audited with the internal caller's address, which NGINX forwards.
      const cleared = await unary(client, 'clearMemory', {}, bearer(signToken({ sub: 'ops', scope: 'models:manage' })));
      expect(cleared.response).toMatchObject({ workers: ['worker-0'] });
      const audit = await real.gateway.services.audit.list({ action: 'memory.clear', limit: 10, offset: 0 });
      expect(audit.items[0]).toMatchObject({ actor: 'jwt:ops', clientAddress: '127.0.0.1' });

      // The worker contract is not served here: no worker address is behind this listener.
      const code = await new Promise<number>((resolve) =>
        workerService.getWorkerInfo({}, { deadline: Date.now() + 10_000 }, (error) => resolve(error?.code ?? grpc.status.OK)),
      );
      expect(code).toBe(grpc.status.UNIMPLEMENTED);
    } finally {
      client.close();
      workerService.close();
    }

    // HTTP/2 with prior knowledge, as gRPC speaks it, from inside and outside the internal network.
    const statusFrom = async (localAddress: string) => {
      const session = http2Connect(`http://127.0.0.1:${edge.ports.grpc}`, {
        createConnection: () => netConnect({ host: '127.0.0.1', port: edge.ports.grpc, localAddress }),
      });
      try {
        const stream = session.request({ ':method': 'POST', ':path': '/grpc.health.v1.Health/Check', 'content-type': 'application/grpc', te: 'trailers' });
        stream.end(Buffer.from([0, 0, 0, 0, 0]));
        const [headers] = (await once(stream, 'response')) as [Record<string, string | number>];
        stream.resume();
        return headers[':status'];
      } finally {
        session.close();
      }
    };
    expect(await statusFrom(INTERNAL_CLIENT)).toBe(200);
    expect(await statusFrom(OUTSIDE_CLIENT)).toBe(403);
  });

  it('serves stub_status to the internal network only', async () => {
    const status = (localAddress: string) => edgeRequest(`http://127.0.0.1:${edge.ports.status}/stub_status`, { localAddress });
    const inside = await status(INTERNAL_CLIENT);
    expect(inside.status).toBe(200);
    expect(inside.body).toMatch(/^Active connections: \d+/);
    expect((await status(OUTSIDE_CLIENT)).status).toBe(403);
  });
});
