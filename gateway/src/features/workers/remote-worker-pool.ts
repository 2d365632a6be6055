import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { Config } from '../../config/config.js';
import type { Logger } from '../../infra/logger.js';
import { loadProtos } from '../../infra/grpc/protos.js';
import { WorkerClient, type CallObserver } from '../../infra/grpc/worker-client.js';
import { remoteWorkerChannel, type WorkerChannelSecurity } from '../../infra/grpc/worker-credentials.js';
import { remoteSnapshot, type WorkerHandle, type WorkerPool, type WorkerSnapshot, type WorkerState } from './worker-handle.js';

/** A worker the gateway did not launch (docker-compose, Kubernetes): known by address only. */
class RemoteWorker implements WorkerHandle {
  private state: WorkerState = 'starting';

  constructor(
    readonly id: string,
    readonly client: WorkerClient,
  ) {}

  observeHealth(serving: boolean | 'unreachable'): void {
    if (this.state === 'stopped' || this.state === 'draining') return;
    this.state = serving === 'unreachable' ? 'unreachable' : serving ? 'serving' : 'not-serving';
  }

  retire(): void {
    this.state = 'stopped';
    this.client.close();
  }

  snapshot(): WorkerSnapshot {
    return remoteSnapshot(this.id, this.client.address, this.state);
  }
}

interface Entry {
  host: string;
  port: string;
}

export type Resolver = (host: string) => Promise<string[]>;

/** IPv4 addresses when there are any (a name like localhost also has ::1, the same worker), else IPv6. */
const systemResolver: Resolver = async (host) => {
  const all = await lookup(host, { all: true });
  const v4 = all.filter((a) => a.family === 4);
  return [...new Set((v4.length > 0 ? v4 : all).map((a) => a.address))];
};

function parseEntry(address: string): Entry {
  const colon = address.lastIndexOf(':');
  return { host: address.slice(0, colon).replace(/^\[|\]$/g, ''), port: address.slice(colon + 1) };
}

const hostPort = (host: string, port: string) => (isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`);

/**
 * Workers at WORKER_ADDRESSES. An IP address is one worker; a host name is
 * one worker per address it resolves to (a headless Service, a scaled compose
 * service), resolved again every WORKER_DNS_REFRESH_SECONDS so a scaled set
 * is followed: new addresses join, vanished ones are retired.
 */
export class RemoteWorkerPool implements WorkerPool {
  readonly mode = 'remote';
  private readonly handles = new Map<string, RemoteWorker>();
  private readonly entries: Entry[];
  private readonly channel: WorkerChannelSecurity;
  private refreshTimer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    private readonly config: Config,
    private readonly logger: Logger,
    addresses: readonly string[],
    private readonly observe?: CallObserver,
    private readonly resolve: Resolver = systemResolver,
  ) {
    this.entries = addresses.map(parseEntry);
    this.channel = remoteWorkerChannel(config);
    this.logger.info('remote worker channel', {
      tls: config.workerTlsCa === undefined ? 'off' : config.workerTlsCert === undefined ? 'server' : 'mutual',
      token: config.workerToken !== undefined,
    });
  }

  workers(): readonly WorkerHandle[] {
    return [...this.handles.values()];
  }

  /** Resolve and connect; one health check each so the first report has a state. Never blocks on a dead worker. */
  async start(): Promise<void> {
    await this.refresh();
    this.refreshTimer = setInterval(() => void this.refresh(), this.config.workerDnsRefreshSeconds * 1000);
    this.refreshTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.refreshTimer) clearInterval(this.refreshTimer);
    for (const worker of this.handles.values()) worker.retire();
    this.handles.clear();
  }

  /** Resolve every entry again: add workers for new addresses, retire those gone. */
  async refresh(): Promise<void> {
    const wanted = new Map<string, { address: string; authority: string | null }>();
    for (const entry of this.entries) {
      if (isIP(entry.host)) {
        wanted.set(hostPort(entry.host, entry.port), { address: hostPort(entry.host, entry.port), authority: null });
        continue;
      }
      let addresses: string[];
      try {
        addresses = await this.resolve(entry.host);
      } catch (error) {
        // Keep what we have: a DNS hiccup must not drop healthy workers.
        this.logger.warn('could not resolve a worker host name; keeping the known workers', { host: entry.host, err: error });
        for (const [id, worker] of this.handles) if (id.startsWith(`${hostPort(entry.host, entry.port)}/`)) wanted.set(id, { address: worker.client.address, authority: null });
        continue;
      }
      for (const ip of addresses) {
        wanted.set(`${hostPort(entry.host, entry.port)}/${ip}`, { address: hostPort(ip, entry.port), authority: hostPort(entry.host, entry.port) });
      }
    }
    if (this.stopped) return; // stopped while resolving
    for (const [id, worker] of this.handles) {
      if (!wanted.has(id)) {
        this.logger.info('worker address gone from DNS; retiring it', { workerId: id });
        worker.retire();
        this.handles.delete(id);
      }
    }
    const added: RemoteWorker[] = [];
    for (const [id, { address, authority }] of wanted) {
      if (this.handles.has(id)) continue;
      // Connected by address, verified (TLS) and addressed as the host name.
      const channel = authority
        ? { ...this.channel, channelOptions: { 'grpc.default_authority': authority, 'grpc.ssl_target_name_override': authority.replace(/:\d+$/, '') } }
        : this.channel;
      const worker = new RemoteWorker(id, new WorkerClient(id, address, this.config.grpcDeadlineMs, loadProtos(), channel, this.observe));
      this.handles.set(id, worker);
      added.push(worker);
      if (this.refreshTimer) this.logger.info('new worker address from DNS', { workerId: id });
    }
    await Promise.all(added.map((worker) => this.firstCheck(worker)));
  }

  private async firstCheck(worker: RemoteWorker): Promise<void> {
    try {
      const status = await worker.client.checkHealth({ deadlineMs: this.config.healthCheckDeadlineMs });
      worker.observeHealth(status === 'SERVING');
    } catch (error) {
      worker.observeHealth('unreachable');
      this.logger.warn('remote worker did not answer its first health check', { workerId: worker.id, err: error });
    }
  }
}
