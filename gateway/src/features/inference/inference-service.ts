import { ConflictError, NotFoundError, UnprocessableContentError } from '../../errors/gateway-error.js';
import type { Principal } from '../auth/principal.js';
import type { Target, WorkerScheduler, WorkerView } from '../scheduling/worker-scheduler.js';
import type { JobSpec, RunningSession, SessionService } from '../sessions/session-service.js';
import type { Session } from '../sessions/session-types.js';
import { INFERENCE_LIMITS, PROTO_TO_TASK, TASK_TO_PROTO, recordedParameters, type InferenceRequest } from './inference-schemas.js';

/** Measured cost of a (model, task): seconds per unit (denoising step, text, call), from finished sessions. */
interface CostSample {
  secondsPerUnit: number;
  samples: number;
}

const units = (request: InferenceRequest): number => {
  switch (request.task) {
    case 'text-embedding':
      return (request.parameters.texts ?? request.parameters.tokenIds ?? []).length;
    case 'tensor':
      return 1;
    default:
      return (request.parameters.steps ?? 25) * (request.parameters.imagesPerPrompt ?? 1);
  }
};

/**
 * Inference requests: checks a validated request against what the workers
 * actually have (model, task, device, dtype) before anything is recorded,
 * then runs it as a session. Also the dry run (validate + estimate) and the
 * capabilities listing.
 */
export class InferenceService {
  private readonly costs = new Map<string, CostSample>();

  constructor(
    private readonly sessions: SessionService,
    private readonly scheduler: WorkerScheduler,
  ) {}

  spec(request: InferenceRequest): JobSpec {
    return {
      task: request.task,
      model: request.model,
      ...(request.deviceId ? { deviceId: request.deviceId } : {}),
      parameters: recordedParameters(request),
      job: { kind: 'inference', request },
    };
  }

  /**
   * A background session: checked against what the workers have (model,
   * task, device) where it would run now, then stored queued; any instance
   * dispatches it once a worker has room.
   */
  async enqueue(request: InferenceRequest, principal: Principal, correlationId: string, batchId?: string): Promise<{ session: Session; position: number }> {
    const target = await this.scheduler.choose({ model: request.model, deviceId: request.deviceId }, correlationId, [], { ignoreCapacity: true });
    await this.preflight(request, target, correlationId);
    return this.sessions.enqueue(this.spec(request), principal, { correlationId, batchId: batchId ?? null });
  }

  async start(request: InferenceRequest, principal: Principal, correlationId: string, batchId?: string): Promise<RunningSession> {
    const running = await this.sessions.start(this.spec(request), principal, {
      correlationId,
      batchId: batchId ?? null,
      preflight: (target) => this.preflight(request, target, correlationId).then(() => undefined),
    });
    void running.done.then((session) => {
      if (session.status === 'succeeded' && session.result && typeof session.result.runMs === 'number') {
        this.learn(request, session.result.runMs / 1000);
      }
    });
    return running;
  }

  /** The worker's view of the model: it must exist, run the task, and the device must take the dtype. */
  async preflight(request: InferenceRequest, target: Target, correlationId: string): Promise<WorkerView | null> {
    const views = await this.scheduler.collectViews(correlationId);
    const view = views.find((v) => v.worker.id === target.worker.id);
    if (!view) return null; // the worker did not answer in time: it validates again itself
    const model = view.models.find((m) => m.name === request.model);
    if (!model) throw new NotFoundError(`model: no model '${request.model}' on the serving workers.`);
    const wanted = TASK_TO_PROTO[request.task]!;
    if (!model.tasks.includes(wanted)) {
      const runs = model.tasks.map((t) => PROTO_TO_TASK[t] ?? t).join(', ');
      throw new ConflictError(`model: '${request.model}' runs ${runs}, not ${request.task}.`);
    }
    if (target.deviceId && request.dtype) {
      const device = view.devices.find((d) => d.id === target.deviceId);
      if (device && !device.supportedDtypes.includes(request.dtype)) {
        throw new UnprocessableContentError([
          { field: 'body.dtype', message: `${request.dtype} is not supported on ${device.id} (${device.supportedDtypes.join(', ')})` },
        ]);
      }
    }
    return view;
  }

  /** Dry run: where it would run, and what it would cost, without running it. */
  async validate(request: InferenceRequest, correlationId: string) {
    const target = await this.scheduler.choose({ model: request.model, deviceId: request.deviceId }, correlationId);
    const view = await this.preflight(request, target, correlationId);
    const model = view?.models.find((m) => m.name === request.model);
    const placement = model?.placements.find((p) => !target.deviceId || p.deviceId === target.deviceId);
    const cost = this.costs.get(`${request.model}|${request.task}`);
    return {
      valid: true,
      workerId: target.worker.id,
      deviceId: target.deviceId || placement?.deviceId || null,
      modelLoaded: placement !== undefined,
      estimate: {
        memoryBytes: placement ? placement.footprintBytes : (model?.sizeBytes ?? null),
        memoryBasis: placement ? 'measured footprint of the loaded model' : 'size of the model on disk',
        seconds: cost ? Math.round(cost.secondsPerUnit * units(request) * 1000) / 1000 : null,
        secondsBasis: cost
          ? `mean of ${cost.samples} finished ${request.task} jobs on ${request.model} since the gateway started`
          : 'no finished job of this model and task yet',
      },
    };
  }

  async capabilities(correlationId: string) {
    const views = await this.scheduler.collectViews(correlationId);
    const tasks = ['text-to-image', 'image-to-image', 'inpainting', 'text-embedding', 'tensor', 'upscale', 'enhance'];
    const models = (task: string) =>
      [...new Set(views.flatMap((v) => v.models.filter((m) => m.tasks.includes(TASK_TO_PROTO[task]!)).map((m) => m.name)))].sort();
    return {
      tasks: tasks.map((task) => ({ task, models: task === 'enhance' ? [] : models(task) })),
      dtypes: [...new Set(views.flatMap((v) => v.devices.flatMap((d) => d.supportedDtypes)))].sort(),
      limits: INFERENCE_LIMITS,
    };
  }

  private learn(request: InferenceRequest, seconds: number): void {
    const key = `${request.model}|${request.task}`;
    const perUnit = seconds / Math.max(units(request), 1);
    const previous = this.costs.get(key);
    const samples = (previous?.samples ?? 0) + 1;
    const mean = previous ? previous.secondsPerUnit + (perUnit - previous.secondsPerUnit) / samples : perUnit;
    this.costs.set(key, { secondsPerUnit: mean, samples });
  }
}
