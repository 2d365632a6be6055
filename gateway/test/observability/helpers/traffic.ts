import { INFERENCE_LIMITS } from '../../../src/features/inference/inference-schemas.js';
import { status as grpcStatus } from '@grpc/grpc-js';
import { gatewayClient, unary } from '../../helpers/grpc-client.js';
import { bearer } from '../../helpers/http.js';
import { readSse } from '../../helpers/sse.js';
import { signToken } from '../../helpers/tokens.js';
import { waitFor } from '../../helpers/wait.js';

/**
 * Requests that make every series the dashboards draw exist, as a gateway
 * in service would: reads, a 404, refused credentials, embeddings and a
 * tensor job, a burst of image jobs beyond a device queue (503s), a job
 * followed as SSE and cancelled while it runs, and a client over its
 * inference rate limit (429s); and calls to the public gRPC API, one of
 * them refused.
 */

/** The gateway settings this traffic counts on (pass them to the gateway). */
export const TRAFFIC_GATEWAY_ENV = {
  // One job runs and one waits; the rest of a burst is refused with 503.
  MAX_QUEUE_PER_DEVICE: '1',
  RATE_LIMIT_INFERENCE_PER_PRINCIPAL: '5',
} as const;
const INFERENCE_LIMIT = Number(TRAFFIC_GATEWAY_ENV.RATE_LIMIT_INFERENCE_PER_PRINCIPAL);
const BURST = 5;

export interface TrafficReport {
  /** HTTP statuses seen, by what was asked (gRPC calls: their status code). */
  statuses: Record<string, number[]>;
  /** The status the cancelled session ended with. */
  cancelledSession: string;
}

const tinyImage = (steps: number) => ({
  task: 'text-to-image',
  model: 'tiny-sd',
  parameters: { prompt: 'a lighthouse', steps, width: 64, height: 64, seed: 3 },
});

export async function generateTraffic(url: string, grpcAddress: string): Promise<TrafficReport> {
  const statuses: Record<string, number[]> = {};
  const note = (what: string, status: number) => (statuses[what] ??= []).push(status);
  const alice = bearer(signToken({ sub: 'alice', scope: 'inference' }));
  const get = async (what: string, path: string, headers: Record<string, string> = alice) => {
    const response = await fetch(`${url}${path}`, { headers });
    await response.arrayBuffer();
    note(what, response.status);
    return response;
  };
  const post = async (what: string, path: string, body: unknown, headers: Record<string, string> = alice) => {
    const response = await fetch(`${url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    });
    const text = await response.text();
    note(what, response.status);
    return { status: response.status, body: text ? (JSON.parse(text) as Record<string, any>) : null };
  };

  await get('liveness', '/health', {});
  await get('devices', '/api/device/list');
  await get('models', '/api/model/available');
  await get('unknown route', '/api/no-such-thing');
  await get('no credentials', '/api/device/list', {});
  await get('malformed token', '/api/device/list', bearer('not-a-token'));

  await post('embedding', '/api/inference/execute', { task: 'text-embedding', model: 'minilm', parameters: { texts: ['first text', 'second text'] } });
  const x = Buffer.from(new Float32Array([0.1, 0.2, 0.3, 0.4]).buffer).toString('base64');
  await post('tensor', '/api/inference/execute', { task: 'tensor', model: 'tiny-mlp', parameters: { inputs: { x: { dtype: 'float32', shape: [1, 4], data: x } } } });

  // A burst from several clients (each under its own rate limit) onto one CPU queue.
  await Promise.all(
    Array.from({ length: BURST }, (_, i) => post('image burst', '/api/inference/execute', tinyImage(5), bearer(signToken({ sub: `burst-${i}` })))),
  );

  // A long job, followed as SSE until it runs on the device, then cancelled there.
  const created = await post('background session', '/api/inference/sessions', tinyImage(INFERENCE_LIMITS.maxSteps));
  if (created.status !== 202) throw new Error(`session not created: ${created.status} ${JSON.stringify(created.body)}`);
  const id = String(created.body!.id);
  const follow = new AbortController();
  const events = await fetch(`${url}/api/inference/sessions/${id}/events`, { headers: { ...alice, accept: 'text/event-stream' }, signal: follow.signal });
  note('session events', events.status);
  await readSse(events, (event) => event.event === 'progress', follow);
  const cancel = await fetch(`${url}/api/inference/sessions/${id}`, { method: 'DELETE', headers: alice });
  await cancel.arrayBuffer();
  note('cancel', cancel.status);
  const cancelledSession = await waitFor(
    async () => {
      const response = await fetch(`${url}/api/inference/sessions/${id}`, { headers: alice });
      const session = (await response.json()) as { status: string };
      return ['queued', 'running'].includes(session.status) ? undefined : session.status;
    },
    { what: `session ${id} to end` },
  );

  // One client past its inference limit: invalid bodies count too.
  const flood = bearer(signToken({ sub: 'flood', scope: 'inference' }));
  for (let i = 0; i < INFERENCE_LIMIT + 2; i += 1) await post('over the limit', '/api/inference/sessions', {}, flood);

  // The public gRPC API: reads, an embedding, and a call without credentials.
  const client = gatewayClient(grpcAddress);
  try {
    for (const [what, method, request, headers] of [
      ['grpc devices', 'listDevices', {}, alice],
      ['grpc embedding', 'execute', { model: 'minilm', textEmbedding: { texts: ['over gRPC'] } }, alice],
      ['grpc no credentials', 'whoAmI', {}, {}],
    ] as const) {
      const outcome = await unary(client, method, request, headers);
      note(what, outcome.error?.code ?? grpcStatus.OK);
    }
  } finally {
    client.close();
  }

  return { statuses, cancelledSession };
}
