import { describe, expect, it } from 'vitest';
import { WorkerScheduler } from '../../src/features/scheduling/worker-scheduler.js';
import { FakeWorker, FakeWorkerPool } from '../../src/features/workers/fake-worker-pool.js';
import type { Device__Output } from '../../src/generated/device_ops/v1/Device.js';
import type { ModelDescriptor__Output } from '../../src/generated/device_ops/v1/ModelDescriptor.js';

const gpu = (id: string, freeBytes: number, queuedJobs = 0): Device__Output => ({
  id,
  kind: 'DEVICE_KIND_CUDA',
  name: 'GPU',
  memory: { totalBytes: 80e9, freeBytes },
  supportedDtypes: ['float16'],
  runningJobs: 0,
  queuedJobs,
  queueCapacity: 64,
  cuda: { index: 0, computeCapability: '9.0', cudaRuntimeVersion: '12.4' } as never,
  details: 'cuda',
});

const model = (name: string, residentOn: string[] = []): ModelDescriptor__Output =>
  ({
    name,
    task: 'MODEL_TASK_TEXT_TO_IMAGE',
    tasks: ['MODEL_TASK_TEXT_TO_IMAGE'],
    format: 'MODEL_FORMAT_DIFFUSERS',
    sizeBytes: 1,
    validation: 'VALIDATION_STATE_VALID',
    preferredDtype: '',
    placements: residentOn.map((deviceId) => ({ deviceId, dtype: 'float16', footprintBytes: 1, lastUsedUnixMs: 0, inFlightJobs: 0 })),
  }) as ModelDescriptor__Output;

function workers(...specs: { id: string; devices: Device__Output[]; models: ModelDescriptor__Output[]; state?: 'serving' | 'restarting' | 'not-serving' }[]) {
  const fakes = specs.map((spec) => {
    const fake = new FakeWorker(spec.id);
    fake.devices = spec.devices;
    fake.models = spec.models;
    fake.state = spec.state ?? 'serving';
    return fake;
  });
  return { fakes, scheduler: new WorkerScheduler(new FakeWorkerPool(fakes), 1000) };
}

describe('worker scheduling', () => {
  it('prefers a worker where the model is resident, then the shortest queue there', async () => {
    const { scheduler } = workers(
      { id: 'a', devices: [gpu('GPU-a', 70e9)], models: [model('sd')] },
      { id: 'b', devices: [gpu('GPU-b1', 10e9, 3), gpu('GPU-b2', 5e9, 1)], models: [model('sd', ['GPU-b1', 'GPU-b2'])] },
    );
    const target = await scheduler.choose({ model: 'sd' }, 'c');
    expect([target.worker.id, target.deviceId]).toEqual(['b', 'GPU-b2']);
  });

  it('otherwise takes the device with the most free memory, then the shortest queue', async () => {
    const { scheduler } = workers(
      { id: 'a', devices: [gpu('GPU-a', 30e9)], models: [model('sd')] },
      { id: 'b', devices: [gpu('GPU-b', 60e9, 5)], models: [model('sd')] },
    );
    expect((await scheduler.choose({ model: 'sd' }, 'c')).deviceId).toBe('GPU-b');
    const tie = workers(
      { id: 'a', devices: [gpu('GPU-a', 60e9, 4)], models: [model('sd')] },
      { id: 'b', devices: [gpu('GPU-b', 60e9, 1)], models: [model('sd')] },
    );
    expect((await tie.scheduler.choose({ model: 'sd' }, 'c')).deviceId).toBe('GPU-b');
  });

  it('spreads a burst over equal workers although their cached views still look idle', async () => {
    const { scheduler } = workers(
      { id: 'a', devices: [gpu('GPU-a', 60e9)], models: [model('sd')] },
      { id: 'b', devices: [gpu('GPU-b', 59e9)], models: [model('sd')] },
    );
    // Four concurrent requests: each is counted as it is placed.
    const placed = (await Promise.all(Array.from({ length: 4 }, () => scheduler.reserve({ model: 'sd' }, 'c')))).map((p) => p.target.worker.id);
    expect(placed.sort()).toEqual(['a', 'a', 'b', 'b']);
  });

  it('refuses at once with 503 worker-capacity when every worker has its limit of jobs in flight', async () => {
    const fake = new FakeWorker('a');
    fake.devices = [gpu('GPU-a', 60e9)];
    fake.models = [model('sd')];
    const scheduler = new WorkerScheduler(new FakeWorkerPool([fake]), 1000, 2);
    const releases = [(await scheduler.reserve({ model: 'sd' }, 'c')).release, scheduler.track('a')];
    await expect(scheduler.choose({ model: 'sd' }, 'c')).rejects.toMatchObject({ status: 503, reason: 'worker-capacity', headers: { 'Retry-After': '5' } });
    releases[0]!();
    expect((await scheduler.choose({ model: 'sd' }, 'c')).worker.id).toBe('a');
    await expect(scheduler.choose({ model: 'sd' }, 'c', ['a'])).rejects.toMatchObject({ status: 503 });
  });

  it('honours an explicit device and refuses an unknown one', async () => {
    const { scheduler } = workers(
      { id: 'a', devices: [gpu('GPU-a', 70e9)], models: [model('sd')] },
      { id: 'b', devices: [gpu('GPU-b', 10e9)], models: [model('sd')] },
    );
    expect(await scheduler.choose({ model: 'sd', deviceId: 'GPU-b' }, 'c')).toMatchObject({ deviceId: 'GPU-b' });
    await expect(scheduler.choose({ model: 'sd', deviceId: 'GPU-z' }, 'c')).rejects.toMatchObject({ status: 404 });
  });

  it('never sends work to a worker that is not serving', async () => {
    const { scheduler, fakes } = workers(
      { id: 'a', devices: [gpu('GPU-a', 70e9)], models: [model('sd', ['GPU-a'])], state: 'not-serving' },
      { id: 'b', devices: [gpu('GPU-b', 1e9)], models: [model('sd')] },
    );
    const target = await scheduler.choose({ model: 'sd' }, 'c');
    expect(target.worker.id).toBe('b');
    expect(fakes[0]!.calls).toEqual([]);
    await expect(scheduler.choose({ model: 'sd', deviceId: 'GPU-a' }, 'c')).rejects.toMatchObject({ status: 404 });
  });

  it('answers 503 when no worker serves', async () => {
    const { scheduler } = workers({ id: 'a', devices: [gpu('GPU-a', 1e9)], models: [], state: 'restarting' });
    await expect(scheduler.choose({ model: 'sd' }, 'c')).rejects.toMatchObject({ status: 503 });
  });
});
