import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Json, JsonObject } from './compose.js';
import { repoPath } from './repo.js';

/** The compose files: the stack, the CPU-only override, the one-worker-per-GPU example. */
export const COMPOSE_FILE = repoPath('docker-compose.yml');
export const CPU_OVERRIDE = repoPath('docker-compose.cpu.yml');
export const MULTI_GPU_OVERRIDE = repoPath('deploy', 'docker-compose.multi-gpu.yml');

export const COMBINATIONS: Record<string, string[]> = {
  'docker-compose.yml': [COMPOSE_FILE],
  'docker-compose.yml + docker-compose.cpu.yml': [COMPOSE_FILE, CPU_OVERRIDE],
  'docker-compose.yml + deploy/docker-compose.multi-gpu.yml': [COMPOSE_FILE, MULTI_GPU_OVERRIDE],
};

/** A filled-in .env as an operator's would be (deploy/generate-secrets.sh makes the same kind). */
export const DEPLOYMENT_SECRETS: Record<string, string> = {
  JWT_SECRET: 'f'.repeat(20) + '0123456789abcdef0123456789abcdef',
  WORKER_TOKEN: 'w'.repeat(8) + '0123456789abcdef0123456789abcdef',
  POSTGRES_PASSWORD: 'pg-0123456789abcdef',
  REDIS_PASSWORD: 'redis-0123456789abcdef',
  GRAFANA_ADMIN_PASSWORD: 'grafana-0123456789abcdef',
  SEQ_ADMIN_PASSWORD: 'seq-0123456789abcdef',
};

/** Dockerfile instructions as [keyword, rest] pairs, continuation lines joined. */
export function dockerfileInstructions(path: string): [string, string][] {
  const text = readFileSync(path, 'utf8').replace(/\\\r?\n/g, ' ');
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const at = line.search(/\s/);
      return [line.slice(0, at < 0 ? undefined : at).toUpperCase(), at < 0 ? '' : line.slice(at + 1).trim()] as [string, string];
    });
}

/** The instructions of the last stage (the image that runs). */
export function finalStage(path: string): [string, string][] {
  const instructions = dockerfileInstructions(path);
  const lastFrom = instructions.map(([keyword]) => keyword).lastIndexOf('FROM');
  return instructions.slice(lastFrom);
}

/** The Dockerfile a service with `build` uses. */
export function dockerfileOf(service: JsonObject): string | null {
  const build = service.build as JsonObject | undefined;
  if (!build) return null;
  return join(String(build.context), String(build.dockerfile ?? 'Dockerfile'));
}

/** Whether a service has a healthcheck: its own, or its image's HEALTHCHECK when we build it. */
export function hasHealthcheck(service: JsonObject): boolean {
  const check = service.healthcheck as JsonObject | undefined;
  if (check) return check.disable !== true && JSON.stringify(check.test) !== '["NONE"]';
  const dockerfile = dockerfileOf(service);
  if (!dockerfile || !existsSync(dockerfile)) return false;
  return finalStage(dockerfile).some(([keyword, rest]) => keyword === 'HEALTHCHECK' && !/^NONE\b/i.test(rest));
}

export interface PublishedPort {
  hostIp: string;
  published: string;
  target: string;
}

/** A `ports` entry in its parts. */
export function publishedPort(entry: Json): PublishedPort {
  if (typeof entry === 'object' && entry !== null && !Array.isArray(entry)) {
    return { hostIp: String(entry.host_ip ?? '0.0.0.0'), published: String(entry.published), target: String(entry.target) };
  }
  const parts = String(entry).split(':');
  if (parts.length === 3) return { hostIp: parts[0]!, published: parts[1]!, target: parts[2]! };
  if (parts.length === 2) return { hostIp: '0.0.0.0', published: parts[0]!, target: parts[1]! };
  return { hostIp: '0.0.0.0', published: '', target: parts[0]! };
}

/** The names a service answers to on a network: its own and its aliases there. */
export function namesOn(serviceName: string, service: JsonObject, network: string): string[] {
  const networks = service.networks as JsonObject | Json[] | undefined;
  const attached = Array.isArray(networks) ? networks.includes(network) : networks ? network in networks : network === 'default';
  if (!attached) return [];
  const config = !Array.isArray(networks) && networks ? (networks[network] as JsonObject | null) : null;
  return [serviceName, ...((config?.aliases as string[] | undefined) ?? [])];
}

export const networksOf = (service: JsonObject): string[] => {
  const networks = service.networks as JsonObject | Json[] | undefined;
  if (!networks) return ['default'];
  return Array.isArray(networks) ? networks.map(String) : Object.keys(networks);
};
