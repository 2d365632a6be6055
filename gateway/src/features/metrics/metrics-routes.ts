import { z } from 'zod';
import { NotFoundError, ServiceUnavailableError } from '../../errors/gateway-error.js';
import { HANDLED, defineRoute, type RouteSpec } from '../../http/route.js';
import type { GatewayMetrics } from '../../infra/metrics.js';
import type { WorkerPool } from '../workers/worker-handle.js';

const PROMETHEUS_TEXT = 'text/plain; version=0.0.4';

export function metricsRoutes(metrics: GatewayMetrics, workers: WorkerPool): RouteSpec[] {
  return [
    defineRoute({
      method: 'get',
      path: '/metrics',
      operationId: 'metrics',
      summary: "The gateway's Prometheus metrics (docs/metrics.md)",
      tags: ['Operations'],
      auth: 'internal',
      responses: { 200: { description: 'Prometheus text format.', contentType: PROMETHEUS_TEXT } },
      handler: async ({ res }) => {
        const { contentType, body } = await metrics.render();
        res.status(200).type(contentType).send(body);
        return HANDLED;
      },
    }),
    defineRoute({
      method: 'get',
      path: '/metrics/workers/{workerId}',
      operationId: 'workerMetrics',
      summary: "A local worker's Prometheus metrics, relayed so one scrape configuration finds them",
      tags: ['Operations'],
      auth: 'internal',
      request: { params: z.strictObject({ workerId: z.string().min(1).max(128) }) },
      responses: {
        200: { description: 'Prometheus text format.', contentType: PROMETHEUS_TEXT },
        404: { description: 'No local worker of that id (remote workers are scraped directly).' },
        503: { description: 'The worker is restarting.' },
      },
      handler: async ({ params, res }) => {
        const worker = workers.workers().find((w) => w.id === params.workerId);
        if (!worker) throw new NotFoundError(`No local worker '${params.workerId}'.`);
        const address = worker.snapshot().metricsAddress;
        if (!address) throw new ServiceUnavailableError(`Worker '${params.workerId}' has no metrics endpoint right now.`, 5, 'no-worker');
        const upstream = await fetch(`http://${address}/metrics`, { signal: AbortSignal.timeout(5000) }).catch(() => null);
        if (!upstream?.ok) throw new ServiceUnavailableError(`Worker '${params.workerId}' did not answer its metrics scrape.`, 5, 'no-worker');
        res.status(200).type(upstream.headers.get('content-type') ?? PROMETHEUS_TEXT).send(await upstream.text());
        return HANDLED;
      },
    }),
  ];
}
