import type { ModelDescriptor__Output } from '../../generated/device_ops/v1/ModelDescriptor.js';
import type { ModelPlacement__Output } from '../../generated/device_ops/v1/ModelPlacement.js';
import { NotFoundError, ServiceUnavailableError } from '../../errors/gateway-error.js';
import { PROTO_TO_TASK } from '../inference/inference-schemas.js';
import type { WorkerScheduler, WorkerView } from '../scheduling/worker-scheduler.js';
import type { z } from 'zod';
import type { ModelSchema, PlacementSchema } from './model-schemas.js';

type Model = z.infer<typeof ModelSchema>;
type Placement = z.infer<typeof PlacementSchema>;

const FORMATS: Record<string, Model['format']> = {
  MODEL_FORMAT_DIFFUSERS: 'diffusers',
  MODEL_FORMAT_TRANSFORMERS: 'transformers',
  MODEL_FORMAT_TORCHSCRIPT: 'torchscript',
};
const VALIDATION: Record<string, Model['validation']> = {
  VALIDATION_STATE_VALID: 'valid',
  VALIDATION_STATE_INVALID: 'invalid',
};

function placement(workerId: string, p: ModelPlacement__Output): Placement {
  return {
    workerId,
    deviceId: p.deviceId,
    dtype: p.dtype,
    footprintBytes: p.footprintBytes,
    inFlightJobs: p.inFlightJobs,
    lastUsedAt: p.lastUsedUnixMs ? new Date(p.lastUsedUnixMs).toISOString() : null,
  };
}

function describe(workerId: string, m: ModelDescriptor__Output): Model {
  return {
    name: m.name,
    task: PROTO_TO_TASK[m.task] ?? 'unknown',
    tasks: m.tasks.map((t) => PROTO_TO_TASK[t] ?? t),
    format: FORMATS[m.format] ?? 'unknown',
    sizeBytes: m.sizeBytes,
    validation: VALIDATION[m.validation] ?? 'unknown',
    preferredDtype: m.preferredDtype || null,
    workers: [workerId],
    placements: m.placements.map((p) => placement(workerId, p)),
  };
}

/** Models across workers: merged by name, placements kept per worker and device. */
export class ModelService {
  constructor(
    private readonly scheduler: WorkerScheduler,
    /** Loading reads weights and may compile: far longer than any other unary call (MODEL_LOAD_DEADLINE_MS). */
    private readonly loadDeadlineMs?: number,
  ) {}

  private async views(correlationId: string): Promise<{ views: WorkerView[]; partial: boolean }> {
    this.scheduler.invalidate();
    const serving = this.scheduler.serving().length;
    const views = await this.scheduler.collectViews(correlationId);
    if (serving === 0 || views.length === 0) throw new ServiceUnavailableError('No worker answered; retry shortly.', 5);
    return { views, partial: views.length < serving || serving < this.scheduler.total() };
  }

  async available(correlationId: string): Promise<{ models: Model[]; partial: boolean }> {
    const { views, partial } = await this.views(correlationId);
    const merged = new Map<string, Model>();
    for (const view of views) {
      for (const descriptor of view.models) {
        const model = describe(view.worker.id, descriptor);
        const existing = merged.get(model.name);
        if (!existing) merged.set(model.name, model);
        else {
          existing.workers.push(view.worker.id);
          existing.placements.push(...model.placements);
          if (existing.validation === 'unknown') existing.validation = model.validation;
        }
      }
    }
    return { models: [...merged.values()].sort((a, b) => a.name.localeCompare(b.name)), partial };
  }

  async status(correlationId: string) {
    const { models, partial } = await this.available(correlationId);
    const placements = models.flatMap((m) => m.placements.map((p) => ({ model: m.name, ...p })));
    return { placements, totalBytes: placements.reduce((sum, p) => sum + p.footprintBytes, 0), partial };
  }

  async validate(model: string, workerId: string | undefined, correlationId: string) {
    const serving = this.scheduler.serving();
    const chosen = workerId ? serving.find((s) => s.worker.id === workerId) : serving[0];
    if (!chosen) {
      if (workerId) throw new NotFoundError(`workerId: no serving worker '${workerId}'.`);
      throw new ServiceUnavailableError('No worker is serving; retry shortly.', 5);
    }
    const response = await chosen.client.validateModel(model, { correlationId });
    this.scheduler.invalidate(chosen.worker.id);
    return {
      model: response.model ? describe(chosen.worker.id, response.model) : null,
      workerId: chosen.worker.id,
      valid: response.valid,
      problems: response.problems,
    };
  }

  async load(request: { model: string; deviceId?: string; dtype?: string }, correlationId: string) {
    const target = await this.scheduler.choose({ model: request.model, deviceId: request.deviceId }, correlationId);
    const response = await target.client.loadModel(
      { model: request.model, deviceId: target.deviceId, dtype: request.dtype ?? '' },
      { correlationId, ...(this.loadDeadlineMs ? { deadlineMs: this.loadDeadlineMs } : {}) },
    );
    this.scheduler.invalidate(target.worker.id);
    return { model: request.model, placement: placement(target.worker.id, response.placement!), alreadyLoaded: response.alreadyLoaded };
  }

  async unload(request: { model: string; deviceId?: string }, correlationId: string) {
    const { models } = await this.available(correlationId);
    const found = models.find((m) => m.name === request.model);
    if (!found) throw new NotFoundError(`model: no model '${request.model}' on the serving workers.`);
    const targets = found.placements.filter((p) => !request.deviceId || p.deviceId === request.deviceId);
    if (targets.length === 0) {
      throw new NotFoundError(`model: '${request.model}' is not loaded${request.deviceId ? ` on ${request.deviceId}` : ''}.`);
    }
    let freedBytes = 0;
    for (const p of targets) {
      const client = this.scheduler.serving().find((s) => s.worker.id === p.workerId)?.client;
      if (!client) continue;
      freedBytes += (await client.unloadModel({ model: request.model, deviceId: p.deviceId }, { correlationId })).freedBytes;
      this.scheduler.invalidate(p.workerId);
    }
    return { model: request.model, freedBytes, devices: targets.map((p) => p.deviceId) };
  }
}
