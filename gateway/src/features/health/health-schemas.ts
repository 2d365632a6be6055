import { z } from 'zod';

export const LivenessSchema = z.object({ status: z.literal('ok') }).meta({ id: 'Liveness' });

export const WorkerHealthSchema = z
  .object({
    id: z.string(),
    mode: z.enum(['local', 'remote']),
    address: z.string().nullable(),
    state: z.enum(['starting', 'serving', 'not-serving', 'restarting', 'crash-loop', 'unreachable', 'draining', 'stopped']),
    healthy: z.boolean().meta({ description: 'True when the worker answered its health check with SERVING.' }),
    error: z.string().nullable().meta({ description: 'Why the worker is not healthy, when it is not.' }),
    pid: z.number().int().nullable(),
    uptimeSeconds: z.number().nullable(),
    restarts: z.number().int(),
    deviceCount: z.number().int().nullable(),
    version: z.string().nullable(),
    torchVersion: z.string().nullable(),
    cudaAvailable: z.boolean().nullable(),
    latencyMs: z.number().nullable().meta({ description: 'Round trip of the health check.' }),
    lastExit: z
      .object({
        code: z.number().int().nullable(),
        signal: z.string().nullable(),
        at: z.iso.datetime(),
        cause: z.string().meta({ description: 'exit code, signal, out-of-memory kill, device failure…' }),
        lastError: z.string().nullable(),
      })
      .nullable(),
    nextRestartAt: z.iso.datetime().nullable(),
    inFlightJobs: z.number().int().meta({ description: 'Jobs this gateway has running or queued on the worker.' }),
    runningJobs: z.number().int().nullable().meta({ description: 'Jobs running on its devices, as the worker says.' }),
    queuedJobs: z.number().int().nullable().meta({ description: 'Jobs waiting in its device queues.' }),
    loadedModels: z.array(z.object({ model: z.string(), deviceId: z.string(), footprintBytes: z.number().int() })),
    devices: z.array(
      z.object({ id: z.string(), kind: z.enum(['cpu', 'cuda']), totalBytes: z.number().int().nullable(), freeBytes: z.number().int().nullable() }),
    ),
  })
  .meta({ id: 'WorkerHealth' });

export const DetailedHealthSchema = z
  .object({
    status: z.enum(['healthy', 'degraded', 'unhealthy']).meta({
      description: 'healthy: every worker serves; degraded: some do; unhealthy: none does (HTTP 503).',
    }),
    timestamp: z.iso.datetime(),
    gateway: z.object({
      version: z.string(),
      pid: z.number().int(),
      uptimeSeconds: z.number(),
      nodeVersion: z.string(),
      memory: z.object({ rssBytes: z.number().int(), heapUsedBytes: z.number().int() }),
    }),
    workers: z.array(WorkerHealthSchema),
    dependencies: z.array(
      z.object({
        name: z.string(),
        healthy: z.boolean(),
        detail: z.string().nullable(),
        latencyMs: z.number().nullable(),
      }),
    ).meta({ description: 'Database, rate-limit store, Seq log sink… A failing dependency makes the status degraded.' }),
    disks: z
      .array(
        z.object({
          name: z.string().meta({ description: 'models, outputs, data' }),
          path: z.string(),
          freeBytes: z.number().int().nullable(),
          totalBytes: z.number().int().nullable(),
          healthy: z.boolean().meta({ description: 'false when under 5 % is free or the folder cannot be read.' }),
        }),
      )
      .meta({ description: 'Free space where models, outputs and gateway data live. A disk short of space makes the status degraded.' }),
  })
  .meta({ id: 'DetailedHealth' });

export type WorkerHealth = z.infer<typeof WorkerHealthSchema>;
export type DetailedHealth = z.infer<typeof DetailedHealthSchema>;
