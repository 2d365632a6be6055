import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const PREFIX = 'device_ops_gateway_';
// Request and job durations: from a millisecond API call to a ten-minute generation.
const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

export type WorkerStateName = 'starting' | 'serving' | 'not-serving' | 'restarting' | 'crash-loop' | 'unreachable' | 'draining' | 'stopped';
export const WORKER_STATES: readonly WorkerStateName[] = [
  'starting',
  'serving',
  'not-serving',
  'restarting',
  'crash-loop',
  'unreachable',
  'draining',
  'stopped',
];

/** What the scrape-time gauges read: the live state of workers and dependencies. */
export interface MetricsSources {
  workers(): { id: string; state: WorkerStateName; restarts: number }[];
  /** Runs the readiness check (workers, a real database query, draining) at scrape time. */
  ready(): Promise<boolean>;
  rateLimitStoreHealthy(): boolean;
}

/**
 * The gateway's Prometheus metrics (docs/metrics.md is the contract). One
 * registry per gateway instance, so tests and several apps in one process
 * do not share counters. Labels are bounded: route templates, not URLs;
 * worker ids; status classes.
 */
export class GatewayMetrics {
  readonly registry = new Registry();
  private sources: MetricsSources | null = null;
  private readonly seenRestarts = new Map<string, number>();

  readonly httpDuration = new Histogram({
    name: `${PREFIX}http_request_duration_seconds`,
    help: 'Time to answer an HTTP request (for event streams: until the stream ends).',
    labelNames: ['method', 'route', 'status_class'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly httpRequests = new Counter({
    name: `${PREFIX}http_requests_total`,
    help: 'HTTP requests answered.',
    labelNames: ['method', 'route', 'status_class'] as const,
    registers: [this.registry],
  });
  readonly inFlight = new Gauge({
    name: `${PREFIX}http_requests_in_flight`,
    help: 'HTTP requests being handled now.',
    registers: [this.registry],
  });
  readonly rateLimitRejections = new Counter({
    name: `${PREFIX}rate_limit_rejections_total`,
    help: 'Requests refused with 429 by a rate limit.',
    labelNames: ['limiter'] as const,
    registers: [this.registry],
  });
  readonly backpressureRejections = new Counter({
    name: `${PREFIX}backpressure_rejections_total`,
    help: 'Requests refused with 503 for lack of capacity.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly authFailures = new Counter({
    name: `${PREFIX}auth_failures_total`,
    help: 'Refused credentials, by method and reason.',
    labelNames: ['method', 'reason'] as const,
    registers: [this.registry],
  });
  readonly grpcDuration = new Histogram({
    name: `${PREFIX}grpc_client_duration_seconds`,
    help: 'Calls to workers (Infer: the whole stream), by worker, rpc and gRPC status.',
    labelNames: ['worker', 'rpc', 'code'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly grpcServerDuration = new Histogram({
    name: `${PREFIX}grpc_server_duration_seconds`,
    help: "Calls to the gateway's public gRPC API (streams: until they end), by rpc and gRPC status.",
    labelNames: ['method', 'code'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly sseStreams = new Gauge({
    name: `${PREFIX}sse_streams`,
    help: 'Server-Sent Event streams open.',
    registers: [this.registry],
  });

  readonly sseSlowReaders = new Counter({
    name: `${PREFIX}sse_slow_reader_disconnects_total`,
    help: 'Event streams cut off because the client left too much unread.',
    registers: [this.registry],
  });
  readonly sessions = new Gauge({
    name: `${PREFIX}sessions`,
    help: 'Sessions this gateway is relaying now, by state.',
    labelNames: ['state'] as const,
    registers: [this.registry],
  });
  readonly sessionsFinished = new Counter({
    name: `${PREFIX}sessions_finished_total`,
    help: 'Sessions ended, by status.',
    labelNames: ['status'] as const,
    registers: [this.registry],
  });
  readonly queueWait = new Histogram({
    name: `${PREFIX}queue_wait_seconds`,
    help: "From a session's acceptance to its start on a device.",
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly dbDuration = new Histogram({
    name: `${PREFIX}db_query_duration_seconds`,
    help: 'Database calls, by kind of statement.',
    labelNames: ['operation'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly dbErrors = new Counter({
    name: `${PREFIX}db_errors_total`,
    help: 'Failed database calls.',
    registers: [this.registry],
  });
  readonly logDropped = new Counter({
    name: `${PREFIX}log_events_dropped_total`,
    help: 'Log events not shipped (sink down or buffer full).',
    labelNames: ['sink'] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
    // Series that exist from boot, so increase() sees their first event and panels show 0, not "No data".
    for (const reason of ['worker-capacity', 'gateway-queue', 'sse-streams', 'no-worker', 'draining']) {
      this.backpressureRejections.inc({ reason }, 0);
    }
    this.sseSlowReaders.inc(0);
    const sources = () => this.sources;
    const seen = this.seenRestarts;
    new Gauge({
      name: `${PREFIX}worker_state`,
      help: "1 for each worker's current state, 0 for the others.",
      labelNames: ['worker', 'state'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const worker of sources()?.workers() ?? []) {
          for (const state of WORKER_STATES) this.set({ worker: worker.id, state }, worker.state === state ? 1 : 0);
        }
      },
    });
    new Counter({
      name: `${PREFIX}worker_restarts_total`,
      help: 'Restarts of local workers.',
      labelNames: ['worker'] as const,
      registers: [this.registry],
      collect() {
        // The supervisor counts restarts; the counter follows it at scrape time.
        for (const worker of sources()?.workers() ?? []) {
          const before = seen.get(worker.id) ?? 0;
          this.inc({ worker: worker.id }, Math.max(0, worker.restarts - before));
          seen.set(worker.id, Math.max(before, worker.restarts));
        }
      },
    });
    new Gauge({
      name: `${PREFIX}ready`,
      help: '1 when /health/ready would answer 200 (checked at each scrape).',
      registers: [this.registry],
      async collect() {
        const source = sources();
        this.set(source ? ((await source.ready()) ? 1 : 0) : 0);
      },
    });
    new Gauge({
      name: `${PREFIX}rate_limit_store_healthy`,
      help: '1 while rate-limit counters are where they belong (Redis when configured).',
      registers: [this.registry],
      collect() {
        this.set(sources()?.rateLimitStoreHealthy() === false ? 0 : 1);
      },
    });
  }

  /** Connect the scrape-time gauges to the live state (set once the app is built). */
  observe(sources: MetricsSources): void {
    this.sources = sources;
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/** 200 → "2xx": a bounded label for any status. */
export const statusClass = (status: number): string => `${Math.floor(status / 100)}xx`;
