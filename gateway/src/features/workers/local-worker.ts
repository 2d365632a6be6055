import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import type { Logger, LogLevel } from '../../infra/logger.js';
import type { WorkerClient } from '../../infra/grpc/worker-client.js';
import type { WorkerExit, WorkerHandle, WorkerSnapshot, WorkerState } from './worker-handle.js';

export interface LocalWorkerOptions {
  id: string;
  python: string;
  /** Extra worker flags (directories, limits), after the supervisor's own. */
  extraArgs: readonly string[];
  /** Environment of the child, stripped of the gateway's secrets; carries the worker token (WORKER_TOKEN), never argv. */
  env: NodeJS.ProcessEnv;
  logLevel: LogLevel;
  startTimeoutMs: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  /** This many exits within crashLoopWindowMs put the worker in crash-loop (retried at backoffMaxMs). */
  crashLoopFailures: number;
  crashLoopWindowMs: number;
  shutdownGraceSeconds: number;
  healthDeadlineMs: number;
  logger: Logger;
  createClient: (workerId: string, address: string) => WorkerClient;
}

/** A worker that stayed up this long is healthy again: its backoff resets. */
const STABLE_AFTER_MS = 30_000;
/** The worker's exit status after a CUDA failure (python-workers server.py EXIT_DEVICE_FAILURE). */
const DEVICE_FAILURE_EXIT = 70;

/** OOM kills in this cgroup so far (cgroup v2 memory.events), or null where unavailable. */
function oomKillCount(): number | null {
  try {
    const events = readFileSync('/sys/fs/cgroup/memory.events', 'utf8');
    const line = events.split('\n').find((l) => l.startsWith('oom_kill '));
    return line ? Number(line.split(' ')[1]) : null;
  } catch {
    return null;
  }
}
const WORKER_LEVELS = new Set<LogLevel>(['error', 'warn', 'info', 'debug']);

/**
 * One supervised worker process on a free loopback port. The worker binds
 * port 0 and writes `{"port": N}` to file descriptor 3 once it is SERVING,
 * so there is no race for a port. When it exits it is started again after
 * an exponential backoff with jitter.
 */
export class LocalWorker implements WorkerHandle {
  private state: WorkerState = 'stopped';
  private child: ChildProcess | null = null;
  private address: string | null = null;
  private metricsPort: number | null = null;
  private currentClient: WorkerClient | null = null;
  private startedAt: Date | null = null;
  private lastExit: WorkerExit | null = null;
  private nextRestartAt: Date | null = null;
  private restartTimer: NodeJS.Timeout | null = null;
  private restarts = 0;
  private consecutiveFailures = 0;
  /** When recent unexpected exits happened, for crash-loop detection. */
  private recentExits: number[] = [];
  /** The gateway itself killed the process (start timeout, bad handshake): not a crash cause to blame elsewhere. */
  private killedByUs = false;
  private oomKillsAtStart: number | null = null;
  private stopping = false;
  private lastStderrLine: string | null = null;
  private readonly log: Logger;

  constructor(private readonly options: LocalWorkerOptions) {
    this.log = options.logger.child({ workerId: options.id });
  }

  get id(): string {
    return this.options.id;
  }

  get client(): WorkerClient | null {
    return this.currentClient;
  }

  snapshot(): WorkerSnapshot {
    return {
      id: this.id,
      address: this.address,
      metricsAddress: this.metricsPort ? `127.0.0.1:${this.metricsPort}` : null,
      mode: 'local',
      state: this.state,
      pid: this.child?.pid ?? null,
      restarts: this.restarts,
      startedAt: this.startedAt,
      lastExit: this.lastExit,
      nextRestartAt: this.nextRestartAt,
    };
  }

  observeHealth(serving: boolean | 'unreachable'): void {
    // Only a running process can be serving, not serving or unreachable.
    if (this.state === 'serving' || this.state === 'not-serving' || this.state === 'unreachable') {
      this.state = serving === 'unreachable' ? 'unreachable' : serving ? 'serving' : 'not-serving';
    }
  }

  /** Launch the process; resolves once it serves or its first attempt failed. */
  start(): Promise<void> {
    this.stopping = false;
    return this.launch();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.child) this.state = 'draining';
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    this.nextRestartAt = null;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      this.state = 'stopped';
      return;
    }
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const killTimer = setTimeout(() => {
      this.log.warn('worker did not stop within its grace period; killing it');
      child.kill('SIGKILL');
    }, (this.options.shutdownGraceSeconds + 5) * 1000);
    await exited;
    clearTimeout(killTimer);
  }

  private launch(): Promise<void> {
    const { python, id, env, logLevel, startTimeoutMs } = this.options;
    // A crash-looping worker stays shown as such while it is tried again, until it serves.
    if (this.state !== 'crash-loop') this.state = 'starting';
    this.nextRestartAt = null;
    this.lastStderrLine = null;
    this.killedByUs = false;
    this.oomKillsAtStart = oomKillCount();
    const args = ['-m', 'device_ops_worker', '--host', '127.0.0.1', '--port', '0', '--worker-id', id];
    args.push('--ready-fd', '3', '--log-level', logLevel, '--parent-pid', String(process.pid));
    args.push('--shutdown-grace-seconds', String(this.options.shutdownGraceSeconds), '--metrics-port', '0');
    args.push(...this.options.extraArgs);
    const child = spawn(python, args, { env, stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
    this.child = child;
    this.startedAt = new Date();
    this.log.info('starting worker process', { pid: child.pid });

    this.forwardLogs(child.stdout!, 'stdout');
    this.forwardLogs(child.stderr!, 'stderr');

    return new Promise<void>((resolve) => {
      let settled = false;
      const settle = () => {
        if (!settled) {
          settled = true;
          clearTimeout(startTimer);
          resolve();
        }
      };
      const startTimer = setTimeout(() => {
        if ((this.state === 'starting' || this.state === 'crash-loop') && this.child === child) {
          this.log.error('worker did not become ready in time; killing it', { timeoutMs: startTimeoutMs });
          this.killedByUs = true;
          child.kill('SIGKILL');
        }
      }, startTimeoutMs);

      const ready = createInterface({ input: child.stdio[3] as Readable });
      ready.once('line', (line) => {
        ready.close();
        void this.onAnnounced(child, line).finally(settle);
      });
      child.once('error', (error) => {
        this.log.error('could not launch worker process', { err: error });
      });
      child.once('exit', (code, signal) => {
        ready.close();
        this.onExit(child, code, signal);
        settle();
      });
    });
  }

  private async onAnnounced(child: ChildProcess, line: string): Promise<void> {
    let port: number;
    try {
      const announced = JSON.parse(line) as { port?: unknown; metricsPort?: unknown };
      port = Number(announced.port);
      if (!Number.isInteger(port) || port <= 0) throw new Error(`bad port ${String(port)}`);
      this.metricsPort = Number.isInteger(announced.metricsPort) ? Number(announced.metricsPort) : null;
    } catch (error) {
      this.log.error('worker announced an unreadable ready message; killing it', { err: error });
      this.killedByUs = true;
      child.kill('SIGKILL');
      return;
    }
    if (this.child !== child) return;
    this.address = `127.0.0.1:${port}`;
    this.currentClient = this.options.createClient(this.id, this.address);
    try {
      const status = await this.currentClient.checkHealth({ deadlineMs: this.options.healthDeadlineMs });
      if (this.child !== child) return;
      this.state = status === 'SERVING' ? 'serving' : 'not-serving';
      this.log.info('worker ready', { pid: child.pid, address: this.address, health: status });
    } catch (error) {
      this.log.warn('worker announced its port but failed its first health check', { err: error });
      if (this.child === child) this.state = 'not-serving';
    }
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return;
    this.currentClient?.close();
    this.currentClient = null;
    this.address = null;
    this.metricsPort = null;
    this.child = null;
    const cause = this.stopping ? 'stopped by the gateway' : this.exitCause(code, signal);
    this.lastExit = { code, signal, at: new Date(), cause, lastError: this.lastStderrLine };
    if (this.stopping) {
      this.state = 'stopped';
      this.log.info('worker stopped', { code, signal });
      return;
    }
    const now = Date.now();
    const ranForMs = now - (this.startedAt?.getTime() ?? now);
    this.consecutiveFailures = ranForMs >= STABLE_AFTER_MS ? 1 : this.consecutiveFailures + 1;
    this.recentExits = [...this.recentExits.filter((at) => now - at < this.options.crashLoopWindowMs), now];
    const crashLooping = this.recentExits.length >= this.options.crashLoopFailures;
    // In a crash loop: retried slowly, not spun.
    const delayMs = crashLooping ? this.options.backoffMaxMs : this.backoffMs();
    this.state = crashLooping ? 'crash-loop' : 'restarting';
    this.nextRestartAt = new Date(now + delayMs);
    this.log.error(crashLooping ? 'worker is crash-looping; retrying slowly' : 'worker exited; restarting it', {
      code,
      signal,
      cause,
      ranForMs,
      exitsInWindow: this.recentExits.length,
      restartInMs: delayMs,
      lastError: this.lastStderrLine,
    });
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      this.restarts += 1;
      void this.launch();
    }, delayMs);
  }

  private exitCause(code: number | null, signal: NodeJS.Signals | null): string {
    if (code === DEVICE_FAILURE_EXIT) return 'device failure reported by the worker (CUDA error; exit 70)';
    if (signal === 'SIGKILL' && !this.killedByUs) {
      const kills = oomKillCount();
      if (kills !== null && this.oomKillsAtStart !== null && kills > this.oomKillsAtStart) return 'killed by the out-of-memory killer';
      return 'killed by SIGKILL (not by the gateway; the out-of-memory killer is a common cause)';
    }
    if (signal) return `killed by ${signal}${this.killedByUs ? ' (by the gateway: it did not become ready in time)' : ''}`;
    return `exit code ${code}`;
  }

  /** initial × 2^(failures−1), capped, with ±20 % jitter so workers do not restart in step. */
  private backoffMs(): number {
    const { backoffInitialMs, backoffMaxMs } = this.options;
    const base = Math.min(backoffMaxMs, backoffInitialMs * 2 ** Math.min(this.consecutiveFailures - 1, 30));
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  /** Worker stdout is JSON lines; re-emit each in the gateway's log stream. */
  private forwardLogs(stream: Readable, name: 'stdout' | 'stderr'): void {
    const lines = createInterface({ input: stream });
    lines.on('line', (line) => {
      if (!line.trim()) return;
      if (name === 'stderr') this.lastStderrLine = line.trim().slice(0, 500);
      let entry: Record<string, unknown> | null = null;
      if (line.startsWith('{')) {
        try {
          entry = JSON.parse(line) as Record<string, unknown>;
        } catch {
          entry = null;
        }
      }
      if (entry && typeof entry.message === 'string') {
        const { message, level, timestamp: _timestamp, ...fields } = entry;
        const lvl = WORKER_LEVELS.has(level as LogLevel) ? (level as LogLevel) : 'info';
        this.log.log(lvl, message, { ...fields, source: 'worker' });
      } else {
        this.log.warn('worker output', { stream: name, line: line.slice(0, 2000), source: 'worker' });
      }
    });
  }
}
