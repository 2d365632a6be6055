import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { bearer, getJson } from '../helpers/http.js';
import { samples } from '../helpers/metrics.js';
import { startRealGateway, type RealGateway } from '../helpers/real-gateway.js';
import { signToken } from '../helpers/tokens.js';
import { MACHINE_MARGIN_MS, waitFor } from '../helpers/wait.js';

interface SeqEvent {
  Timestamp: string;
  Level: string;
  MessageTemplate: string;
  Properties: Record<string, unknown>;
}

/** A stand-in for Seq's raw ingestion endpoint (POST /api/events/raw), recording what arrives. */
class SeqReceiver {
  readonly events: SeqEvent[] = [];
  readonly apiKeys: (string | undefined)[] = [];
  private server!: Server;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk) => (body += chunk));
      req.on('end', () => {
        if (req.method === 'POST' && req.url === '/api/events/raw') {
          this.apiKeys.push(req.headers['x-seq-apikey'] as string | undefined);
          this.events.push(...(JSON.parse(body) as { Events: SeqEvent[] }).Events);
          res.writeHead(201).end();
        } else res.writeHead(404).end();
      });
    });
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

const alice = bearer(signToken({ sub: 'alice', scope: 'inference' }));
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;


describe('metrics, structured logs and one correlation id from the client to Seq', () => {
  let real: RealGateway;
  const seq = new SeqReceiver();

  beforeAll(async () => {
    await seq.start();
    real = await startRealGateway({
      MODEL_DIRECTORY: inject('demoModels'),
      LOG_LEVEL: 'debug',
      SEQ_SERVER_URL: seq.url,
      SEQ_API_KEY: 'seq-key-for-tests',
    });
  });
  afterAll(async () => {
    await real?.gateway.close();
    await seq.stop();
  });

  it('follows one correlation id from the response header through the gateway log, the worker log and Seq', async () => {
    const id = 'corr-observability-1';
    const response = await fetch(`${real.url}/api/inference/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': id, ...alice },
      body: JSON.stringify({ task: 'text-embedding', model: 'minilm', parameters: { texts: ['trace me'] } }),
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('x-request-id')).toBe(id);
    expect(real.logs.find((l) => l.correlationId === id && l.message === 'request')).toHaveLength(1);
    expect(real.logs.find((l) => l.correlationId === id && l.source === 'worker').length).toBeGreaterThan(0);

    const shipped = await waitFor(
      async () => {
        const mine = seq.events.filter((e) => e.Properties.correlationId === id);
        return mine.some((e) => e.MessageTemplate === 'request') && mine.some((e) => e.Properties.source === 'worker') ? mine : undefined;
      },
      { timeoutMs: 15_000, what: 'the events in Seq' },
    );
    const request = shipped.find((e) => e.MessageTemplate === 'request')!;
    expect(request.Level).toBe('Information');
    expect(request.Properties).toMatchObject({ method: 'POST', route: '/api/inference/execute', status: 200, principal: 'jwt:alice', service: 'gateway' });
    expect(Date.parse(request.Timestamp)).not.toBeNaN();
    expect(shipped.find((e) => e.Properties.source === 'worker')!.Properties.workerId).toBe('worker-0');
    expect(seq.apiKeys.every((key) => key === 'seq-key-for-tests')).toBe(true);
  });

  it('accepts a W3C traceparent as the correlation id', async () => {
    const trace = '4bf92f3577b34da6a3ce929d0e0e4736';
    const response = await fetch(`${real.url}/health`, { headers: { traceparent: `00-${trace}-00f067aa0ba902b7-01` } });
    expect(response.headers.get('x-request-id')).toBe(trace);
    const bad = await fetch(`${real.url}/health`, { headers: { traceparent: 'garbage' } });
    expect(bad.headers.get('x-request-id')).toMatch(UUID);
  });

  it('exposes the gateway metrics of docs/metrics.md with bounded labels', async () => {
    await getJson(`${real.url}/api/device/list`, alice);
    await getJson(`${real.url}/api/device/list`, { authorization: 'Bearer nope' });
    const session = (await getJson(`${real.url}/api/inference/sessions`, alice)).body as { items: { id: string }[] };
    await getJson(`${real.url}/api/inference/sessions/${session.items[0]!.id}`, alice);
    await getJson(`${real.url}/nowhere`);
    await getJson(`${real.url}/health/ready`);

    const response = await fetch(`${real.url}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await response.text();

    const requests = samples(text, 'device_ops_gateway_http_requests_total');
    const routes = requests.map((s) => s.labels.route);
    expect(routes).toEqual(expect.arrayContaining(['/api/device/list', '/api/inference/sessions/{id}', '/api/inference/execute', 'unmatched']));
    expect(requests.find((s) => s.labels.route === '/api/device/list' && s.labels.status_class === '4xx')!.value).toBeGreaterThanOrEqual(1);
    expect(samples(text, 'device_ops_gateway_http_request_duration_seconds_count').length).toBeGreaterThan(0);
    // A bearer value that is not shaped like a JWT is tried as an API key (as OpenAI-style SDKs send keys).
    expect(samples(text, 'device_ops_gateway_auth_failures_total')).toContainEqual({ labels: { method: 'api-key', reason: 'malformed' }, value: expect.any(Number) });
    const grpc = samples(text, 'device_ops_gateway_grpc_client_duration_seconds_count');
    expect(grpc).toContainEqual({ labels: { worker: 'worker-0', rpc: 'ListDevices', code: 'OK' }, value: expect.any(Number) });
    expect(grpc).toContainEqual({ labels: { worker: 'worker-0', rpc: 'Infer', code: 'OK' }, value: expect.any(Number) });
    expect(samples(text, 'device_ops_gateway_sessions_finished_total')).toContainEqual({ labels: { status: 'succeeded' }, value: expect.any(Number) });
    expect(samples(text, 'device_ops_gateway_queue_wait_seconds_count')[0]!.value).toBeGreaterThanOrEqual(1);
    expect(samples(text, 'device_ops_gateway_worker_state')).toContainEqual({ labels: { worker: 'worker-0', state: 'serving' }, value: 1 });
    expect(samples(text, 'device_ops_gateway_worker_restarts_total')).toContainEqual({ labels: { worker: 'worker-0' }, value: 0 });
    expect(samples(text, 'device_ops_gateway_ready')).toEqual([{ labels: {}, value: 1 }]);
    expect(samples(text, 'device_ops_gateway_sse_streams')).toEqual([{ labels: {}, value: 0 }]);
    expect(samples(text, 'device_ops_gateway_db_query_duration_seconds_count').map((s) => s.labels.operation)).toEqual(
      expect.arrayContaining(['select', 'insert', 'update']),
    );
    expect(samples(text, 'device_ops_gateway_process_resident_memory_bytes')[0]!.value).toBeGreaterThan(0);
    // No request, session or user ids as label values.
    for (const line of text.split('\n').filter((l) => l.startsWith('device_ops_gateway_'))) {
      expect(line, line).not.toMatch(UUID);
      expect(line, line).not.toMatch(/corr-observability/);
    }
  });

  it("relays the local worker's own metrics", async () => {
    const response = await fetch(`${real.url}/metrics/workers/worker-0`);
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(text).toContain('device_ops_worker_inference_requests_total{model="minilm",outcome="success",task="text-embedding"}');
    expect(text).toContain('device_ops_worker_queue_capacity{device="worker-0:cpu"} 64.0');
    expect((await fetch(`${real.url}/metrics/workers/nobody`)).status).toBe(404);
  });

  it('keeps serving when Seq is down, dropping (and counting) what does not fit', async () => {
    await seq.stop();
    const dropping = await startRealGateway({
      MODEL_DIRECTORY: inject('demoModels'),
      SEQ_SERVER_URL: seq.url,
      SEQ_MAX_BUFFERED_EVENTS: '10',
    });
    try {
      // No request waits on Seq: each answers well within the machine's margin, none at a send timeout.
      for (let i = 0; i < 30; i++) {
        const started = performance.now();
        expect((await fetch(`${dropping.url}/health`)).status).toBe(200);
        expect(performance.now() - started).toBeLessThan(MACHINE_MARGIN_MS);
      }
      const text = await (await fetch(`${dropping.url}/metrics`)).text();
      expect(samples(text, 'device_ops_gateway_log_events_dropped_total')[0]).toMatchObject({ labels: { sink: 'seq' } });
      expect(samples(text, 'device_ops_gateway_log_events_dropped_total')[0]!.value).toBeGreaterThan(0);
    } finally {
      await dropping.gateway.close();
    }
  });
});
