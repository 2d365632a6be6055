import type { Device__Output } from '../../generated/device_ops/v1/Device.js';
import type { ModelDescriptor__Output } from '../../generated/device_ops/v1/ModelDescriptor.js';
import { NotFoundError, ServiceUnavailableError } from '../../errors/gateway-error.js';
import type { WorkerApi } from '../../infra/grpc/worker-client.js';
import type { WorkerHandle, WorkerPool } from '../workers/worker-handle.js';

/** What the gateway last heard from one worker about its devices and models. */
export interface WorkerView {
  worker: WorkerHandle;
  client: WorkerApi;
  devices: Device__Output[];
  models: ModelDescriptor__Output[];
}

export interface Target {
  worker: WorkerHandle;
  client: WorkerApi;
  /** Device to run on; empty lets the worker choose. */
  deviceId: string;
}

/** How long a worker's device and model lists are reused for placement decisions. */
const VIEW_TTL_MS = 1000;

/**
 * Chooses the worker (and device) for a request: an explicit device's
 * worker; else a worker where the model is already resident (shortest queue
 * first); else the device with the most free memory; then the shortest
 * queue. Only workers that are serving are considered.
 */
export class WorkerScheduler {
  private readonly views = new Map<string, { at: number; view: Promise<WorkerView> }>();
  /** Jobs this gateway has running on each worker (tie-breaker without a view). */
  private readonly inFlight = new Map<string, number>();
  /** Jobs each worker last reported running or queued on its devices. */
  private readonly reported = new Map<string, { at: number; load: number; capacity: number }>();

  constructor(
    private readonly pool: WorkerPool,
    private readonly deadlineMs: number,
    /** Jobs this gateway keeps in flight on one worker (MAX_INFLIGHT_PER_WORKER). */
    private readonly maxInflightPerWorker = Number.POSITIVE_INFINITY,
  ) {}

  /** Jobs this gateway has in flight on a worker. */
  inFlightOf(workerId: string): number {
    return this.inFlight.get(workerId) ?? 0;
  }

  /**
   * A worker's load for admission: what it last reported running and queued
   * (every gateway's jobs: the worker is the truth shared by all replicas),
   * or this gateway's own count when higher (reports lag by up to a second).
   */
  loadOf(workerId: string): number {
    const report = this.freshReport(workerId);
    return Math.max(this.inFlightOf(workerId), report?.load ?? 0);
  }

  /**
   * Whether a worker can take another job: under MAX_INFLIGHT_PER_WORKER,
   * and, with `byQueues`, under what its devices' queues hold (the queue
   * dispatcher asks so, so queued work waits instead of being refused; a job
   * placed at once goes to the worker, whose own refusal is the answer).
   */
  private hasRoomOn(workerId: string, byQueues = false): boolean {
    const queues = byQueues ? (this.freshReport(workerId)?.capacity ?? Number.POSITIVE_INFINITY) : Number.POSITIVE_INFINITY;
    return this.loadOf(workerId) < Math.min(this.maxInflightPerWorker, queues);
  }

  private freshReport(workerId: string): { load: number; capacity: number } | undefined {
    const report = this.reported.get(workerId);
    return report !== undefined && Date.now() - report.at < 2 * VIEW_TTL_MS ? report : undefined;
  }

  /** Whether any serving worker has room for queued work (by the loads and queues known now; nothing is asked). */
  hasRoom(): boolean {
    return this.serving().some(({ worker }) => this.hasRoomOn(worker.id, true));
  }

  /** A worker to follow a job on, by id, while it has a channel (whatever its health says). */
  targetOf(workerId: string): Target | null {
    const worker = this.pool.workers().find((w) => w.id === workerId);
    return worker?.client ? { worker, client: worker.client, deviceId: '' } : null;
  }

  /** Every worker, serving or not. */
  total(): number {
    return this.pool.workers().length;
  }

  /** Serving workers with a channel. */
  serving(): { worker: WorkerHandle; client: WorkerApi }[] {
    return this.pool
      .workers()
      .filter((worker) => worker.client !== null && worker.snapshot().state === 'serving')
      .map((worker) => ({ worker, client: worker.client! }));
  }

  /** Count a job on a worker; call the returned function when it ends. */
  track(workerId: string): () => void {
    this.inFlight.set(workerId, (this.inFlight.get(workerId) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.inFlight.set(workerId, (this.inFlight.get(workerId) ?? 1) - 1);
    };
  }

  /** Forget cached views (after a load or unload changed placements). */
  invalidate(workerId?: string): void {
    if (workerId) this.views.delete(workerId);
    else this.views.clear();
  }

  /** Views of every serving worker that answers in time; the rest are skipped. */
  async collectViews(correlationId: string): Promise<WorkerView[]> {
    const settled = await Promise.allSettled(this.serving().map(({ worker, client }) => this.view(worker, client, correlationId)));
    return settled.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  }

  private view(worker: WorkerHandle, client: WorkerApi, correlationId: string): Promise<WorkerView> {
    const cached = this.views.get(worker.id);
    if (cached && Date.now() - cached.at < VIEW_TTL_MS) return cached.view;
    const options = { correlationId, deadlineMs: this.deadlineMs };
    const view = Promise.all([client.listDevices(options), client.listModels(options)]).then(([devices, models]) => {
      this.reported.set(worker.id, {
        at: Date.now(),
        load: devices.devices.reduce((sum, d) => sum + d.runningJobs + d.queuedJobs, 0),
        // One running and queueCapacity waiting per device, as each device's queue allows.
        capacity: devices.devices.reduce((sum, d) => sum + d.queueCapacity + 1, 0),
      });
      return { worker, client, devices: devices.devices, models: models.models };
    });
    this.views.set(worker.id, { at: Date.now(), view });
    view.catch(() => this.views.delete(worker.id));
    return view;
  }

  /** The serving worker that holds a device. */
  async locateDevice(deviceId: string, correlationId: string): Promise<{ view: WorkerView; device: Device__Output }> {
    for (const view of await this.collectViews(correlationId)) {
      const device = view.devices.find((d) => d.id === deviceId);
      if (device) return { view, device };
    }
    throw new NotFoundError(`deviceId: no serving worker has a device '${deviceId}'.`);
  }

  /**
   * Where a request would run (dry runs, preflight): nothing is reserved.
   * With `ignoreCapacity`, a worker at its in-flight bound still counts
   * (queued work waits for room rather than being refused).
   */
  choose(
    request: { model: string | null; deviceId?: string },
    correlationId: string,
    exclude: readonly string[] = [],
    options: { ignoreCapacity?: boolean } = {},
  ): Promise<Target> {
    return this.select(request, correlationId, exclude, () => {}, options.ignoreCapacity ?? false);
  }

  /**
   * Choose a worker and count the job on it in the same step, so a burst of
   * concurrent requests spreads and the in-flight bound holds. Call
   * `release` once the job ends.
   */
  async reserve(
    request: { model: string | null; deviceId?: string },
    correlationId: string,
    exclude: readonly string[] = [],
  ): Promise<{ target: Target; release: () => void }> {
    let release: () => void = () => {};
    const target = await this.select(request, correlationId, exclude, (workerId) => (release = this.track(workerId)));
    return { target, release };
  }

  private async select(
    request: { model: string | null; deviceId?: string },
    correlationId: string,
    exclude: readonly string[],
    // Called synchronously with the chosen worker, before any other request can be placed.
    claim: (workerId: string) => void = () => {},
    ignoreCapacity = false,
  ): Promise<Target> {
    const hasRoom = (workerId: string) => (ignoreCapacity || this.hasRoomOn(workerId)) && !exclude.includes(workerId);
    const chosen = (target: Target): Target => {
      claim(target.worker.id);
      return target;
    };
    if (request.deviceId) {
      const { view } = await this.locateDevice(request.deviceId, correlationId);
      if (!hasRoom(view.worker.id)) throw this.atCapacity();
      return chosen({ worker: view.worker, client: view.client, deviceId: request.deviceId });
    }
    const everyServing = this.serving().filter((s) => !exclude.includes(s.worker.id));
    if (everyServing.length === 0) throw new ServiceUnavailableError('No worker is serving; retry shortly.', 5);
    const serving = everyServing.filter((s) => hasRoom(s.worker.id));
    if (serving.length === 0) throw this.atCapacity();
    if (serving.length === 1 || request.model === null) {
      // One candidate (or model-less work): the worker places it on its own devices.
      const busy = (worker: WorkerHandle) => this.loadOf(worker.id);
      const { worker, client } = serving.reduce((best, next) => (busy(next.worker) < busy(best.worker) ? next : best));
      return chosen({ worker, client, deviceId: '' });
    }
    const views = (await this.collectViews(correlationId)).filter((v) => hasRoom(v.worker.id));
    if (views.length === 0) throw new ServiceUnavailableError('No worker answered in time; retry shortly.', 5);
    return chosen(pick(views, request.model, (workerId) => this.inFlightOf(workerId)));
  }

  private atCapacity(): ServiceUnavailableError {
    return new ServiceUnavailableError(
      `Every worker has ${this.maxInflightPerWorker} jobs in flight; retry shortly.`,
      5,
      'worker-capacity',
    );
  }
}

/**
 * A device's load: what its worker last reported, or the jobs this gateway
 * has sent the worker since, when more (views are cached for a second, and
 * a burst of requests must not all land on the device that looked idlest).
 */
type Load = (view: WorkerView, device: Device__Output) => number;

function pick(views: WorkerView[], model: string, inFlight: (workerId: string) => number): Target {
  const load: Load = (view, device) => Math.max(device.runningJobs + device.queuedJobs, inFlight(view.worker.id));
  const resident: { view: WorkerView; device: Device__Output }[] = [];
  for (const view of views) {
    const descriptor = view.models.find((m) => m.name === model);
    for (const placement of descriptor?.placements ?? []) {
      const device = view.devices.find((d) => d.id === placement.deviceId);
      if (device) resident.push({ view, device });
    }
  }
  const candidates =
    resident.length > 0 ? resident : views.flatMap((view) => view.devices.map((device) => ({ view, device })));
  const best = candidates.reduce((a, b) => (better(b, a, resident.length > 0, load) ? b : a));
  return { worker: best.view.worker, client: best.view.client, deviceId: best.device.id };
}

/** Free memory within this share counts as equal (CPU workers on one host report nearly the same). */
const MEMORY_TIE_SHARE = 0.1;

type Candidate = { view: WorkerView; device: Device__Output };

/** Resident: shortest queue. Otherwise: CUDA before CPU, then clearly more free memory, then shortest queue. */
function better(a: Candidate, b: Candidate, resident: boolean, load: Load): boolean {
  if (!resident) {
    const aCuda = a.device.kind === 'DEVICE_KIND_CUDA';
    const bCuda = b.device.kind === 'DEVICE_KIND_CUDA';
    if (aCuda !== bCuda) return aCuda;
    const aFree = a.device.memory?.freeBytes ?? 0;
    const bFree = b.device.memory?.freeBytes ?? 0;
    if (Math.abs(aFree - bFree) > Math.max(aFree, bFree) * MEMORY_TIE_SHARE) return aFree > bFree;
  }
  return load(a.view, a.device) < load(b.view, b.device);
}
