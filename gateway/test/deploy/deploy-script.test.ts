import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEPLOYMENT_SECRETS } from './helpers/deployment.js';
import { makeCertificate } from './helpers/nginx.js';
import { repoPath } from './helpers/repo.js';
import { pathWithout, runScript, writeDockerStub, writeEnvFile } from './helpers/scripts.js';
import { envFileValue } from './helpers/env-file.js';

/**
 * deploy.sh without Docker: the preflight's verdicts, and the whole deployment
 * (backup, images, up, readiness, automatic rollback) against a stand-in
 * docker command that records what it is asked to do.
 */
const scratch = mkdtempSync(join(tmpdir(), 'device-ops-deploy-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

// This machine minus docker and nvidia-smi: "a machine without Docker" anywhere.
const noDockerPath = pathWithout(join(scratch, 'bin-no-docker'), /^(docker.*|nvidia-smi)$/);
const certificates = makeCertificate(join(scratch, 'certs'));
const models = join(scratch, 'models');
mkdirSync(join(models, 'tiny-mlp'), { recursive: true });
const certificateSettings = { TLS_CERTIFICATE_DIRECTORY: join(scratch, 'certs'), MODEL_HOST_DIRECTORY: models };

const baseEnv = (path: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
  PATH: path,
  HOME: scratch,
  LANG: 'C.UTF-8',
  BACKUP_DIR: join(scratch, 'backups'),
  ...extra,
});

describe('deploy.sh --dry-run on a machine without Docker', () => {
  it('fails the preflight, says why, and changes nothing', () => {
    const envFile = writeEnvFile(join(scratch, 'complete.env'), certificateSettings);
    const result = runScript('deploy/deploy.sh', ['--dry-run', '--env-file', envFile], baseEnv(noDockerPath));
    expect(result.status).toBe(1);
    expect(result.stdout).toContain('deploy:   FAIL  Docker: not installed (no docker command on PATH); install Docker Engine 24.0 or later');
    expect(result.stdout).toContain('deploy:   FAIL  Docker Compose: needs Docker');
    expect(result.stderr).toMatch(/deploy: error: preflight failed: \d+ problem\(s\) \(.*Docker, Docker Compose.*\)\. Nothing was changed\./);
    // The configuration itself is fine, and the missing GPU only warns.
    expect(result.stdout).toMatch(/ok {4}secrets: JWT_SECRET, WORKER_TOKEN/);
    expect(result.stdout).toMatch(/WARN {2}GPU: no NVIDIA GPU found/);
    expect(result.stdout).toContain('compose files: docker-compose.yml:docker-compose.cpu.yml');
    // Nothing was planned, let alone done.
    expect(result.output).not.toContain('would run');
    expect(existsSync(join(scratch, 'backups'))).toBe(false);
  });

  it('names each problem of .env', () => {
    const envFile = writeEnvFile(join(scratch, 'bad.env'), {
      ...certificateSettings,
      JWT_SECRET: 'too-short',
      POSTGRES_PASSWORD: 'change-me',
      REDIS_PASSWORD: 'has spaces and /',
      SEQ_ADMIN_PASSWORD: '',
      CORS_ORIGINS: 'https://app.example.com',
    });
    const result = runScript('deploy/deploy.sh', ['--dry-run', '--env-file', envFile], baseEnv(noDockerPath));
    expect(result.status).toBe(1);
    expect(result.stdout).toContain('FAIL  .env: JWT_SECRET has 9 characters, at least 32 are needed');
    expect(result.stdout).toContain('FAIL  .env: SEQ_ADMIN_PASSWORD is empty');
    expect(result.stdout).toContain('FAIL  .env: REDIS_PASSWORD may hold only letters, digits and - _ . ~');
    expect(result.stdout).toContain('FAIL  .env: POSTGRES_PASSWORD still holds an example value');
    expect(result.stdout).toContain('FAIL  .env: CORS_ORIGINS still holds an example value');
  });

  it('says how to make .env when there is none', () => {
    const result = runScript('deploy/deploy.sh', ['--dry-run', '--env-file', join(scratch, 'absent.env')], baseEnv(noDockerPath));
    expect(result.status).toBe(1);
    expect(result.stdout).toContain('.env: ' + join(scratch, 'absent.env') + ' is missing: cp .env.example .env, fill it in');
  });
});

describe('deploy/generate-secrets.sh', () => {
  it('fills in every secret of a copied .env.example once, and the preflight accepts the result', () => {
    const envFile = join(scratch, 'fresh.env');
    copyFileSync(repoPath('.env.example'), envFile);
    const first = runScript('deploy/generate-secrets.sh', [envFile], baseEnv(noDockerPath));
    expect(first.status).toBe(0);
    for (const name of [...Object.keys(DEPLOYMENT_SECRETS), 'ADMIN_API_KEY']) {
      expect(first.stdout).toContain(name);
      expect(envFileValue(readFileSync(envFile, 'utf8'), name)).toMatch(/^[0-9a-f]{64}$/);
    }
    expect(first.output).not.toMatch(/[0-9a-f]{64}/); // names only, never values
    const before = readFileSync(envFile, 'utf8');
    const second = runScript('deploy/generate-secrets.sh', [envFile], baseEnv(noDockerPath));
    expect(second.stdout).toContain('nothing changed');
    expect(readFileSync(envFile, 'utf8')).toBe(before);

    writeFileSync(envFile, `${before}TLS_CERTIFICATE_DIRECTORY=${join(scratch, 'certs')}\nMODEL_HOST_DIRECTORY=${models}\n`);
    const preflight = runScript('deploy/deploy.sh', ['--dry-run', '--env-file', envFile], baseEnv(noDockerPath));
    expect(preflight.stdout).not.toContain('FAIL  .env');
    expect(preflight.stdout).toMatch(/ok {4}secrets:/);
  });
});

describe('deploy.sh against a stand-in docker', () => {
  let closedPort: number;
  let holder: Server;
  const stubBin = join(scratch, 'bin-stub');
  writeDockerStub(stubBin);
  const stubPath = `${stubBin}:${noDockerPath}`;

  beforeAll(async () => {
    // A port nothing answers on: NGINX never becomes ready.
    holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    closedPort = (holder.address() as { port: number }).port;
    await new Promise<void>((resolve) => holder.close(() => resolve()));
  });

  const deploy = (name: string, args: string[]) => {
    const log = join(scratch, `${name}.docker.log`);
    const envFile = writeEnvFile(join(scratch, `${name}.env`), certificateSettings);
    const result = runScript('deploy/deploy.sh', [...args, '--env-file', envFile], baseEnv(stubPath, {
      DOCKER_STUB_LOG: log,
      DEPLOY_URL: `https://127.0.0.1:${closedPort}`,
      BACKUP_DIR: join(scratch, `${name}-backups`),
    }));
    const calls = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : [];
    return { result, calls, backups: join(scratch, `${name}-backups`) };
  };
  const changing = (call: string) => /^(image tag|run )|compose .* (build|pull|up|down|stop|exec -T postgres sh -c exec pg_restore)/.test(call);

  it('--dry-run passes the preflight and shows each action without doing any', () => {
    const { result, calls, backups } = deploy('dry', ['--dry-run', '--force']);
    expect(result.status, result.output).toBe(0);
    expect(result.stdout).toContain('ok    Docker Engine 27.3.1 (minimum 24.0)');
    expect(result.stdout).toContain('ok    Docker Compose 2.29.7 (minimum 2.24.0)');
    for (const action of [
      "backup: [dry-run] would run: docker compose exec -T postgres sh -c 'exec pg_dump --format=custom",
      'backup: [dry-run] would run: docker run --rm -v device-operations_device_outputs:/source:ro',
      'would run: docker image tag device-operations/gateway:latest device-operations/gateway:rollback',
      'would run: docker compose build --pull',
      'would run: docker compose up -d --remove-orphans',
      'would wait up to 300s for 200 from https://127.0.0.1:',
      'would GET https://127.0.0.1:',
    ]) {
      expect(result.output).toContain(action);
    }
    expect(calls.filter(changing)).toEqual([]);
    expect(existsSync(backups)).toBe(false);
  });

  it('backs up, keeps the previous images, deploys, and rolls back by itself when it does not become ready', () => {
    const { result, calls, backups } = deploy('rollback', ['--force', '--timeout', '2']);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain("step 'readiness' failed: rolling back");
    const steps = calls.map((call) => call.split(' | ')[0]!).filter((call) => changing(call) || call.includes('pg_dump'));
    const at = (pattern: RegExp) => {
      const index = steps.findIndex((call) => pattern.test(call));
      expect(index, `${pattern} in ${JSON.stringify(steps, null, 1)}`).toBeGreaterThanOrEqual(0);
      return index;
    };
    const order = [
      at(/exec -T postgres sh -c exec pg_dump/),
      at(/^image tag device-operations\/gateway:latest device-operations\/gateway:rollback$/),
      at(/compose .* build --pull$/),
      at(/compose .* up -d --remove-orphans$/),
      at(/^image tag device-operations\/gateway:rollback device-operations\/gateway:latest$/),
      at(/compose .* stop gateway worker redis nginx$/),
      at(/pg_restore/),
      at(/^run --rm -v device-operations_device_outputs:\/target .*tar xzf \/backup\/device_outputs\.tar\.gz/),
    ];
    expect(order).toEqual([...order].sort((a, b) => a - b));
    // The previous deployment is started again after the restore.
    expect(steps.slice(order.at(-1)!).some((call) => / up -d --remove-orphans$/.test(call))).toBe(true);
    // Every compose call ran with the CPU override: the stand-in has no GPU.
    const composeCalls = calls.filter((c) => c.startsWith('compose --project-directory'));
    expect(composeCalls.length).toBeGreaterThan(10);
    expect(composeCalls.filter((c) => !c.endsWith('COMPOSE_FILE=docker-compose.yml:docker-compose.cpu.yml'))).toEqual([]);
    // The backup it restored from is a whole one.
    const [folder] = readdirSync(backups);
    expect(folder).toMatch(/^\d{8}T\d{6}Z$/);
    expect(readFileSync(join(backups, folder!, 'postgres.dump'), 'utf8')).toBe('PGDMP-stub');
    expect(readFileSync(join(backups, folder!, 'SHA256SUMS'), 'utf8')).toMatch(/postgres\.dump[\s\S]*device_outputs\.tar\.gz/);
    expect(result.stderr).toContain('rolled back, but the previous deployment is not ready either');
  });

  it("rollback.sh follows the checklist's manual plan in order", () => {
    // A compose-mode backup, as the deployment above wrote it.
    const { backups } = deploy('for-rollback', ['--force', '--timeout', '1']);
    const [folder] = readdirSync(backups);
    const log = join(scratch, 'manual.docker.log');
    const envFile = writeEnvFile(join(scratch, 'manual.env'), certificateSettings);
    const result = runScript('deploy/rollback.sh', ['--yes', '--backup', join(backups, folder!), '--timeout', '1', '--env-file', envFile], baseEnv(stubPath, {
      DOCKER_STUB_LOG: log,
      DEPLOY_URL: `https://127.0.0.1:${closedPort}`,
    }));
    const steps = readFileSync(log, 'utf8').trim().split('\n').map((call) => call.split(' | ')[0]!).filter(changing);
    const at = (pattern: RegExp) => steps.findIndex((call) => pattern.test(call));
    const order = [
      at(/compose .* down --timeout 30$/),
      at(/^run --rm -v device-operations_postgres_data:\/target .*tar xzf \/backup\/postgres_data\.tar\.gz -C \/target$/),
      at(/^run --rm -v device-operations_device_outputs:\/target .*tar xzf \/backup\/device_outputs\.tar\.gz -C \/target$/),
      at(/^image tag device-operations\/worker:rollback device-operations\/worker:latest$/),
      at(/compose .* up -d --remove-orphans$/),
    ];
    expect(order.every((index) => index >= 0), JSON.stringify(steps, null, 1)).toBe(true);
    expect(order).toEqual([...order].sort((a, b) => a - b));
    expect(result.stdout).toContain('== 4. verify the rollback');
    // Nothing answers at DEPLOY_URL here: the verification fails, and says so.
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('not ready after 1s');
  });
});

describe('deploy.ps1', () => {
  // No PowerShell here to run it: at least the same requirements and options as deploy.sh.
  it('checks the same thresholds and takes the same options as deploy.sh', () => {
    const ps1 = readFileSync(repoPath('deploy', 'deploy.ps1'), 'utf8');
    const sh = readFileSync(repoPath('deploy', 'deploy.sh'), 'utf8');
    const constants = ['MIN_RAM_GB', 'RECOMMENDED_RAM_GB', 'MIN_CPU_CORES', 'RECOMMENDED_CPU_CORES', 'MIN_MODEL_DISK_GB', 'RECOMMENDED_MODEL_DISK_GB', 'MIN_DOCKER_VERSION', 'MIN_COMPOSE_VERSION'];
    for (const name of constants) {
      const value = new RegExp(`^${name}=(\\S+)$`, 'm').exec(sh)?.[1];
      expect(value, name).toBeDefined();
      const camel = name.toLowerCase().replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()).replace(/^./, (c) => c.toUpperCase());
      expect(ps1, `${camel} = ${value}`).toMatch(new RegExp(`\\$${camel}\\s*=\\s*['"]?${value!.replace('.', '\\.')}['"]?`));
    }
    const options: [string, string][] = [['--dry-run', '-DryRun'], ['--force', '-Force'], ['--cpu', '-Cpu'], ['--skip-backup', '-SkipBackup'], ['--env-file', '-EnvFile'], ['--timeout', '-Timeout']];
    for (const [shOption, psOption] of options) {
      expect(sh).toContain(shOption);
      expect(ps1).toContain(`$${psOption.slice(1)}`);
    }
    for (const text of ['preflight failed', 'Nothing was changed', 'rolling back', '/health/ready', '/api/device/list', '/api-docs/', 'docker-compose.cpu.yml', ':rollback']) {
      expect(ps1, text).toContain(text);
    }
  });
});
