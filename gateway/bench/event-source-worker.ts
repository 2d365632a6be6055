/**
 * A load source for the gateway benchmarks: a grpc-js server speaking the
 * real worker contract (device_ops.v1 + grpc.health.v1) whose Infer emits
 * progress events at a fixed rate and records when it sent each one, so a
 * client in the same process can measure delivery latency with one clock.
 * It stands in for a worker only in benchmarks, where the worker's own cost
 * is what must be taken out of the measurement.
 */
import * as grpc from '@grpc/grpc-js';
import { cpus, totalmem, freemem } from 'node:os';
import { loadProtos } from '../src/infra/grpc/protos.js';
import type { InferRequest__Output } from '../src/generated/device_ops/v1/InferRequest.js';
import type { InferEvent } from '../src/generated/device_ops/v1/InferEvent.js';

export interface EventSourceOptions {
  /** Progress events per job. */
  events: number;
  /** Interval between progress events, in ms. */
  intervalMs: number;
}

export class EventSourceWorker {
  readonly server = new grpc.Server();
  /** performance.now() when each event was written, by `${jobId}#${sequence}`. */
  readonly sentAt = new Map<string, number>();
  options: EventSourceOptions = { events: 100, intervalMs: 10 };
  port = 0;
  private readonly timers = new Set<NodeJS.Timeout>();

  async start(): Promise<string> {
    const protos = loadProtos();
    const device = {
      id: 'bench:cpu',
      kind: 'DEVICE_KIND_CPU',
      name: 'bench CPU',
      memory: { totalBytes: totalmem(), freeBytes: freemem() },
      supportedDtypes: ['float32'],
      runningJobs: 0,
      queuedJobs: 0,
      queueCapacity: 100_000,
      cpu: { modelName: cpus()[0]?.model ?? 'cpu', logicalCores: cpus().length, physicalCores: cpus().length, architecture: 'x64', torchThreads: 1 },
    };
    const model = {
      name: 'bench-model',
      task: 'MODEL_TASK_TEXT_TO_IMAGE',
      tasks: ['MODEL_TASK_TEXT_TO_IMAGE'],
      format: 'MODEL_FORMAT_DIFFUSERS',
      sizeBytes: 1,
      validation: 'VALIDATION_STATE_VALID',
      placements: [],
      preferredDtype: '',
    };
    this.server.addService(protos.grpc.health.v1.Health.service, {
      check: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(null, { status: 'SERVING' }),
      watch: (call: grpc.ServerWritableStream<unknown, unknown>) => call.write({ status: 'SERVING' }),
    });
    this.server.addService(protos.device_ops.v1.WorkerService.service, {
      getWorkerInfo: (_call: unknown, callback: grpc.sendUnaryData<unknown>) =>
        callback(null, { workerId: 'bench', version: 'bench', pid: process.pid, deviceCount: 1 }),
      listDevices: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(null, { devices: [device] }),
      listModels: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(null, { models: [model] }),
      cancelJob: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(null, { cancelled: true }),
      infer: (call: grpc.ServerWritableStream<InferRequest__Output, InferEvent>) => this.infer(call),
    });
    const port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
    this.port = port;
    return `127.0.0.1:${port}`;
  }

  private infer(call: grpc.ServerWritableStream<InferRequest__Output, InferEvent>): void {
    const jobId = call.request.jobId;
    const { events, intervalMs } = this.options;
    let sequence = 0;
    const write = (event: InferEvent) => {
      sequence += 1;
      this.sentAt.set(`${jobId}#${sequence}`, performance.now());
      call.write({ sequence, timestampUnixMs: Date.now(), ...event });
    };
    write({ accepted: { jobId } });
    write({ queued: { position: 0, deviceId: 'bench:cpu' } });
    write({ started: { deviceId: 'bench:cpu' } });
    let step = 0;
    const timer = setInterval(() => {
      step += 1;
      write({ progress: { current: step, total: events } });
      if (step >= events) {
        clearInterval(timer);
        this.timers.delete(timer);
        write({ result: { deviceId: 'bench:cpu', runMs: events * intervalMs, model: 'bench-model', batchSize: 1 } });
        call.end();
      }
    }, intervalMs);
    this.timers.add(timer);
    call.on('cancelled', () => {
      clearInterval(timer);
      this.timers.delete(timer);
    });
  }

  async stop(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
  }
}

