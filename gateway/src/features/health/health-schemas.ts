import { z } from 'zod';

export const LivenessSchema = z.object({ status: z.literal('ok') }).meta({ id: 'Liveness' });

export const WorkerHealthSchema = z
  .object({
    id: z.string(),
    mode: z.enum(['local', 'remote']),
    address: z.string().nullable(),
    state: z.enum(['starting', 'serving', 'not-serving', 'restarting', 'unreachable', 'stopped']),
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
        lastError: z.string().nullable(),
      })
      .nullable(),
    nextRestartAt: z.iso.datetime().nullable(),
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
    ).meta({ description: 'Database, rate-limit store… A failing dependency makes the status degraded.' }),
  })
  .meta({ id: 'DetailedHealth' });

export type WorkerHealth = z.infer<typeof WorkerHealthSchema>;
export type DetailedHealth = z.infer<typeof DetailedHealthSchema>;
