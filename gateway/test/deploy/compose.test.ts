import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { parse as parseYaml } from 'yaml';
import { describe, expect, it } from 'vitest';
import { describeSettings, loadConfig } from '../../src/config/config.js';
import { workerSourceRoot } from '../../src/infra/paths.js';
import {
  asMapping,
  InterpolationError,
  loadCompose,
  readComposeYaml,
  servicesOf,
  volumeMount,
  withoutTags,
  type Json,
  type JsonObject,
} from './helpers/compose.js';
import {
  COMBINATIONS,
  COMPOSE_FILE,
  CPU_OVERRIDE,
  DEPLOYMENT_SECRETS,
  dockerfileOf,
  hasHealthcheck,
  MULTI_GPU_OVERRIDE,
  namesOn,
  networksOf,
  publishedPort,
} from './helpers/deployment.js';
import { repoPath, repoRoot } from './helpers/repo.js';
import { workerPythonForTests } from '../helpers/worker-python.js';

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;
// The Compose Specification's schema as Docker Compose's own library ships it (compose-spec/README.md).
const SCHEMA_FOLDER = repoPath('gateway', 'test', 'deploy', 'compose-spec');
const schemaText = readFileSync(join(SCHEMA_FOLDER, 'compose-spec.json'), 'utf8');
const schemaSource = JSON.parse(readFileSync(join(SCHEMA_FOLDER, 'SOURCE.json'), 'utf8')) as { version: string; sha256: string };
const validate = addFormats(new Ajv2020({ allErrors: true, strict: false })).compile(JSON.parse(schemaText) as object);
const schemaErrors = (data: unknown) =>
  validate(data) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message} ${JSON.stringify(e.params)}`);

const load = (files: string[], env: Record<string, string | undefined> = DEPLOYMENT_SECRETS) => loadCompose(files, env);
const base = () => servicesOf(load([COMPOSE_FILE]));
const env = (service: JsonObject) => asMapping(service.environment);
const rel = (path: string) => relative(repoRoot, path) || '.';
const gitIgnores = (path: string) => {
  try {
    execFileSync('git', ['-C', repoRoot, 'check-ignore', '-q', path], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};

// Gateway settings compose leaves out on purpose: those of workers the gateway
// launches itself (ADR 0003; in compose the workers are services of their
// own), and worker TLS (the internal network plus WORKER_TOKEN; certificates
// would have to be mounted into the gateway and every worker).
const NOT_IN_COMPOSE = [
  'WORKER_COUNT',
  'WORKER_PYTHON',
  'WORKER_START_TIMEOUT_MS',
  'WORKER_RESTART_BACKOFF_MS',
  'WORKER_RESTART_BACKOFF_MAX_MS',
  'WORKER_CRASH_LOOP_FAILURES',
  'WORKER_CRASH_LOOP_WINDOW_SECONDS',
  'MODEL_DIRECTORY',
  'CACHE_DIRECTORY',
  'WORKER_TLS_CA',
  'WORKER_TLS_CERT',
  'WORKER_TLS_KEY',
];
const PUBLISHED = ['nginx', 'prometheus', 'grafana', 'seq'];
const workerPython = workerPythonForTests();
/** The volumes the deployment checklist's rollback restores (`device-operations_<name>`). */
const CHECKLIST_VOLUMES = ['postgres_data', 'device_outputs'];

describe('docker-compose.yml', () => {
  it.each(Object.entries(COMBINATIONS))('%s validates against the Compose Specification schema', (_name, files) => {
    for (const file of files) {
      expect(schemaErrors(withoutTags(readComposeYaml(file))), `${rel(file)} as written`).toEqual([]);
    }
    expect(schemaErrors(load(files)), 'merged and interpolated').toEqual([]);
  });

  it('validates against the schema copy recorded in compose-spec/SOURCE.json', () => {
    expect(createHash('sha256').update(schemaText).digest('hex')).toBe(schemaSource.sha256);
    expect(schemaSource.version).toMatch(/^v2\.\d+\.\d+$/);
  });

  it('is the device-operations project, so volume names match the checklist', () => {
    const model = load([COMPOSE_FILE]);
    expect(model.name).toBe('device-operations');
    expect(Object.keys(model.volumes as JsonObject)).toEqual(expect.arrayContaining([...CHECKLIST_VOLUMES, 'model_cache']));
  });

  it('refuses to start without each required secret, naming it, and the preflight checks the same ones', () => {
    const text = readFileSync(COMPOSE_FILE, 'utf8');
    const required = [...new Set([...text.matchAll(/\$\{([A-Z0-9_]+):\?/g)].map((m) => m[1]!))].sort();
    expect(required).toEqual(Object.keys(DEPLOYMENT_SECRETS).sort());
    expect(() => load([COMPOSE_FILE])).not.toThrow();
    for (const name of required) {
      const partial = { ...DEPLOYMENT_SECRETS, [name]: '' };
      expect(() => load([COMPOSE_FILE], partial)).toThrow(InterpolationError);
      expect(() => load([COMPOSE_FILE], partial)).toThrow(new RegExp(`${name} .*set ${name} in \\.env`));
    }
    const preflight = readFileSync(repoPath('deploy', 'deploy.sh'), 'utf8');
    for (const name of required) expect(preflight, `deploy.sh checks ${name}`).toContain(name);
    const generator = readFileSync(repoPath('deploy', 'generate-secrets.sh'), 'utf8');
    for (const name of required) expect(generator, `generate-secrets.sh fills ${name}`).toContain(name);
  });

  it.each(Object.entries(COMBINATIONS))('%s: every path it references exists', (_name, files) => {
    const missing: string[] = [];
    const createdByDocker: string[] = [];
    const operatorProvided: string[] = [];
    const need = (path: string, what: string) => {
      if (!existsSync(path)) missing.push(`${rel(path)} (${what})`);
    };
    // Files git ignores are the operator's (certificates), not the repository's.
    const needUnlessOperators = (path: string, what: string) => {
      if (!existsSync(path) && gitIgnores(path)) operatorProvided.push(rel(path));
      else need(path, what);
    };
    for (const [name, service] of Object.entries(servicesOf(load(files)))) {
      const build = service.build as JsonObject | undefined;
      if (build) {
        need(String(build.context), `${name}: build context`);
        need(dockerfileOf(service)!, `${name}: Dockerfile`);
      }
      for (const entry of (service.env_file as Json[] | undefined) ?? []) {
        need(typeof entry === 'string' ? entry : String((entry as JsonObject).path), `${name}: env_file`);
      }
      const mounts = ((service.volumes as Json[] | undefined) ?? []).map(volumeMount).filter((m) => m.type === 'bind');
      for (const mount of mounts) {
        if (mount.createHostPath) createdByDocker.push(`${name}: ${mount.source}`);
        else need(mount.source!, `${name}: bind mount at ${mount.target}`);
      }
      // Container paths named in the command that lie inside a bind mount of ours.
      const words = [...((service.command as Json[] | undefined) ?? []), ...Object.values(env(service))].map(String);
      for (const word of words) {
        for (const [path] of word.matchAll(/\/[A-Za-z0-9_./-]+/g)) {
          const mount = mounts.find((m) => path.startsWith(`${m.target}/`) && m.source!.startsWith(repoRoot));
          if (mount) needUnlessOperators(join(mount.source!, path.slice(mount.target.length)), `${name}: ${path}`);
        }
      }
    }
    // Prometheus reads its rule files relative to prometheus.yml.
    const prometheusConfig = repoPath('prometheus', 'prometheus.yml');
    if (existsSync(prometheusConfig)) {
      const config = parseYaml(readFileSync(prometheusConfig, 'utf8')) as { rule_files?: string[] };
      for (const pattern of config.rule_files ?? []) {
        const path = resolve(dirname(prometheusConfig), pattern);
        const folder = pattern.includes('*') ? dirname(path) : path;
        need(folder, 'prometheus: rule_files');
      }
    }
    expect(missing, 'missing paths').toEqual([]);
    // Only the model repository may be created by Docker: it is the operator's data, not ours.
    expect(createdByDocker.every((entry) => entry.includes('/var/models'))).toBe(true);
    // The certificate pair, which deploy.sh makes (self-signed) when it is missing.
    expect([...new Set(operatorProvided)].every((path) => /^nginx\/certs\/(fullchain|privkey)\.pem$/.test(path)), operatorProvided.join()).toBe(true);
  });

  it('gives every service a healthcheck and a restart policy', () => {
    for (const files of Object.values(COMBINATIONS)) {
      for (const [name, service] of Object.entries(servicesOf(load(files)))) {
        expect(hasHealthcheck(service), `${name} has a healthcheck`).toBe(true);
        expect(['unless-stopped', 'always'], `${name} restarts`).toContain(service.restart);
      }
    }
  });

  it('starts each service after what it needs is healthy', () => {
    const services = base();
    const healthyDependencies = (name: string) =>
      Object.entries((services[name]!.depends_on ?? {}) as Record<string, JsonObject>)
        .filter(([, spec]) => spec.condition === 'service_healthy')
        .map(([dependency]) => dependency)
        .sort();
    expect(healthyDependencies('gateway')).toEqual(['postgres', 'redis', 'worker']);
    expect(healthyDependencies('nginx')).toEqual(['gateway']);
    expect(healthyDependencies('grafana')).toEqual(['prometheus']);
    expect(healthyDependencies('postgres-exporter')).toEqual(['postgres']);
    expect(healthyDependencies('redis-exporter')).toEqual(['redis']);
    expect(healthyDependencies('nginx-exporter')).toEqual(['nginx']);
    const multi = servicesOf(load([COMPOSE_FILE, MULTI_GPU_OVERRIDE]));
    expect(Object.keys(multi.gateway!.depends_on as JsonObject)).toEqual(expect.arrayContaining(['worker', 'worker-1']));
    for (const [name, service] of Object.entries(services)) {
      for (const dependency of Object.keys((service.depends_on ?? {}) as JsonObject)) {
        expect(services[dependency], `${name} depends on ${dependency}`).toBeDefined();
      }
    }
  });

  it('limits the gateway and reserves memory and GPUs for the worker; the CPU override drops the GPUs', () => {
    const services = base();
    const gatewayLimits = ((services.gateway!.deploy as JsonObject).resources as JsonObject).limits as JsonObject;
    expect(gatewayLimits).toMatchObject({ cpus: '2', memory: '1g' });
    const reservations = ((services.worker!.deploy as JsonObject).resources as JsonObject).reservations as JsonObject;
    expect(reservations.memory).toBe('4g');
    expect(reservations.devices).toEqual([{ driver: 'nvidia', count: 'all', capabilities: ['gpu'] }]);

    const cpu = servicesOf(load([COMPOSE_FILE, CPU_OVERRIDE]));
    const cpuReservations = ((cpu.worker!.deploy as JsonObject).resources as JsonObject).reservations as JsonObject;
    expect(cpuReservations.devices).toBeUndefined();
    expect(cpuReservations.memory).toBe('4g');

    const multi = servicesOf(load([COMPOSE_FILE, MULTI_GPU_OVERRIDE]));
    const devicesOf = (name: string) =>
      (((multi[name]!.deploy as JsonObject).resources as JsonObject).reservations as JsonObject).devices;
    expect(devicesOf('worker')).toEqual([{ driver: 'nvidia', device_ids: ['0'], capabilities: ['gpu'] }]);
    expect(devicesOf('worker-1')).toEqual([{ driver: 'nvidia', device_ids: ['1'], capabilities: ['gpu'] }]);
  });

  it('publishes only NGINX to the world, and Prometheus, Grafana and Seq on 127.0.0.1 by default', () => {
    for (const files of Object.values(COMBINATIONS)) {
      for (const [name, service] of Object.entries(servicesOf(load(files)))) {
        const ports = ((service.ports as Json[] | undefined) ?? []).map(publishedPort);
        if (!PUBLISHED.includes(name)) expect(ports, `${name} publishes nothing`).toEqual([]);
      }
    }
    const services = base();
    const ports = (name: string) => ((services[name]!.ports as Json[]) ?? []).map(publishedPort);
    expect(ports('nginx')).toEqual([
      { hostIp: '0.0.0.0', published: '80', target: '80' },
      { hostIp: '0.0.0.0', published: '443', target: '443' },
    ]);
    expect(ports('prometheus')).toEqual([{ hostIp: '127.0.0.1', published: '9090', target: '9090' }]);
    expect(ports('grafana')).toEqual([{ hostIp: '127.0.0.1', published: '3000', target: '3000' }]);
    expect(ports('seq')).toEqual([{ hostIp: '127.0.0.1', published: '5341', target: '80' }]);
    const opened = servicesOf(load([COMPOSE_FILE], { ...DEPLOYMENT_SECRETS, MONITORING_BIND_ADDRESS: '0.0.0.0' }));
    expect(publishedPort((opened.grafana!.ports as Json[])[0]!).hostIp).toBe('0.0.0.0');
  });

  it('keeps the workers, the database, Redis and the exporters on the internal network only', () => {
    const model = load([COMPOSE_FILE]);
    const networks = model.networks as Record<string, JsonObject>;
    expect(networks.internal!.internal).toBe(true);
    const subnets = ((networks.internal!.ipam as JsonObject).config as JsonObject[]).map((c) => c.subnet);
    expect(subnets).toEqual(['172.28.0.0/24']);
    for (const [name, service] of Object.entries(servicesOf(model))) {
      expect(networksOf(service), name).toEqual(PUBLISHED.includes(name) ? ['internal', 'edge'] : ['internal']);
    }
  });

  it('passes every gateway setting from .env, and the gateway accepts the result', () => {
    const gateway = env(base().gateway!);
    const settings = describeSettings().map((s) => s.env);
    const expected = settings.filter((name) => !NOT_IN_COMPOSE.includes(name));
    expect(Object.keys(gateway).filter((name) => !settings.includes(name)), 'not gateway settings').toEqual([]);
    expect(expected.filter((name) => !(name in gateway)), 'settings compose does not pass').toEqual([]);
    expect(gateway).toMatchObject({
      HOST: '0.0.0.0',
      PORT: '8080',
      TRUST_PROXY: '1',
      WORKER_ADDRESSES: 'worker:50051',
      INTERNAL_ALLOW_LIST: '172.28.0.0/24',
      SEQ_SERVER_URL: 'http://seq:5341',
      OUTPUT_DIRECTORY: '/outputs',
      JWT_SECRET: DEPLOYMENT_SECRETS.JWT_SECRET,
      WORKER_TOKEN: DEPLOYMENT_SECRETS.WORKER_TOKEN,
      REDIS_URL: `redis://:${DEPLOYMENT_SECRETS.REDIS_PASSWORD}@redis:6379`,
      DATABASE_URL: `postgres://device_ops:${DEPLOYMENT_SECRETS.POSTGRES_PASSWORD}@postgres:5432/device_ops`,
    });
    // The real configuration loader, as the container would run it.
    const config = loadConfig(gateway as Record<string, string>);
    expect(config.trustProxy).toBe(1);
    expect(config.workerAddresses).toEqual(['worker:50051']);
    expect(config.internalAllowList).toEqual(['172.28.0.0/24']);
    // The subnet follows INTERNAL_SUBNET wherever it is used.
    const moved = load([COMPOSE_FILE], { ...DEPLOYMENT_SECRETS, INTERNAL_SUBNET: '10.99.0.0/24' });
    expect(env(servicesOf(moved).gateway!).INTERNAL_ALLOW_LIST).toBe('10.99.0.0/24');
    expect(env(servicesOf(moved).nginx!).NGINX_INTERNAL_SUBNET).toBe('10.99.0.0/24');
    expect((((moved.networks as JsonObject).internal as JsonObject).ipam as JsonObject).config).toEqual([{ subnet: '10.99.0.0/24' }]);
  });

  it('configures workers the worker accepts, sharing outputs with the gateway and reading models read-only', () => {
    const services = base();
    const worker = services.worker!;
    const workerEnv = env(worker);
    expect(workerEnv).toMatchObject({
      WORKER_HOST: '0.0.0.0',
      WORKER_PORT: '50051',
      METRICS_PORT: '9101',
      MODEL_DIRECTORY: '/models',
      OUTPUT_DIRECTORY: '/outputs',
      CACHE_DIRECTORY: '/cache',
      WORKER_TOKEN: env(services.gateway!).WORKER_TOKEN,
    });
    const mounts = (worker.volumes as Json[]).map(volumeMount);
    expect(mounts.find((m) => m.target === '/models')).toMatchObject({ type: 'bind', readOnly: true });
    expect(mounts.find((m) => m.target === '/outputs')).toMatchObject({ type: 'volume', source: 'device_outputs', readOnly: false });
    const gatewayMounts = (services.gateway!.volumes as Json[]).map(volumeMount);
    expect(gatewayMounts.find((m) => m.target === env(services.gateway!).OUTPUT_DIRECTORY)).toMatchObject({ source: 'device_outputs' });
  });

  it.skipIf(!workerPython)("gives workers an environment the worker's own settings parser reads as intended", () => {
    const workerEnv = env(base().worker!);
    const parsed = execFileSync(
      workerPython!,
      ['-c', 'import os; from device_ops_worker.settings import parse_settings; s = parse_settings([], os.environ); print(s.host, s.port, s.metrics_port, s.model_directory, s.worker_token is not None)'],
      { env: { PATH: process.env.PATH, PYTHONPATH: workerSourceRoot, ...workerEnv } as NodeJS.ProcessEnv, encoding: 'utf8' },
    );
    expect(parsed.trim()).toBe('0.0.0.0 50051 9101 /models True');
  });

  it.each(Object.entries(COMBINATIONS))('%s: WORKER_ADDRESSES names each worker service once', (_name, files) => {
    const services = servicesOf(load(files));
    const workers = Object.entries(services).filter(([, s]) => dockerfileOf(s)?.endsWith(join('python-workers', 'Dockerfile')));
    expect(workers.length).toBeGreaterThan(0);
    const addresses = env(services.gateway!).WORKER_ADDRESSES!.split(',');
    const resolved = addresses.map((address) => {
      const [host, port] = address.split(':');
      const matches = Object.entries(services).filter(([name, s]) => namesOn(name, s, 'internal').includes(host!));
      // A worker's own address must lead to one container, not round-robin over several.
      const owners = matches.filter(([name]) => name === host || workers.some(([w]) => w === name));
      expect(owners.length, `${address} resolves to one service`).toBe(1);
      const [owner, service] = owners[0]!;
      expect(env(service).WORKER_PORT, `${address} is ${owner}'s gRPC port`).toBe(port);
      return owner;
    });
    expect(resolved.sort()).toEqual(workers.map(([name]) => name).sort());
  });

  it('exposes what prometheus/prometheus.yml scrapes', () => {
    const config = repoPath('prometheus', 'prometheus.yml');
    expect(existsSync(config), 'prometheus/prometheus.yml exists').toBe(true);
    for (const files of Object.values(COMBINATIONS)) {
      const services = servicesOf(load(files));
      const answering = (host: string) => Object.entries(services).filter(([name, s]) => namesOn(name, s, 'internal').includes(host));
      const jobs = (parseYaml(readFileSync(config, 'utf8')) as { scrape_configs: JsonObject[] }).scrape_configs;
      for (const job of jobs) {
        const targets = ((job.static_configs as JsonObject[] | undefined) ?? []).flatMap((c) => c.targets as string[]);
        const dns = ((job.dns_sd_configs as JsonObject[] | undefined) ?? []).flatMap((c) =>
          (c.names as string[]).map((n) => `${n}:${String(c.port)}`),
        );
        for (const target of [...targets, ...dns]) {
          const [host, port] = target.split(':');
          if (host === 'localhost') continue;
          const found = answering(host!);
          expect(found.length, `${String(job.job_name)}: ${target} is a service`).toBeGreaterThan(0);
          for (const [name, service] of found) {
            expect((service.expose as Json[]).map(String), `${name} exposes ${port} for ${String(job.job_name)}`).toContain(port);
          }
        }
      }
    }
  });

  it('mounts Grafana provisioning where its providers look, and points data sources at services', () => {
    const services = base();
    const grafanaMounts = (services.grafana!.volumes as Json[]).map(volumeMount);
    expect(grafanaMounts.map((m) => m.target)).toEqual(
      expect.arrayContaining(['/etc/grafana/provisioning', '/var/lib/grafana/dashboards']),
    );
    const provisioning = repoPath('grafana', 'provisioning');
    // Every folder and entry the loops below check exists: nothing passes by finding nothing.
    const yamlFiles = (dir: string): string[] => {
      expect(existsSync(dir), `${rel(dir)} exists`).toBe(true);
      const files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).map((f) => join(dir, f));
      expect(files.length, `${rel(dir)} has provisioning files`).toBeGreaterThan(0);
      return files;
    };
    for (const file of yamlFiles(join(provisioning, 'dashboards'))) {
      const providers = ((parseYaml(readFileSync(file, 'utf8')) as { providers?: JsonObject[] }).providers ?? []);
      expect(providers.length, `${rel(file)} has providers`).toBeGreaterThan(0);
      for (const provider of providers) {
        const path = String((provider.options as JsonObject | undefined)?.path ?? '');
        expect(grafanaMounts.some((m) => path === m.target || path.startsWith(`${m.target}/`)), `${rel(file)}: ${path} is mounted`).toBe(true);
      }
    }
    for (const file of yamlFiles(join(provisioning, 'datasources'))) {
      const sources = ((parseYaml(readFileSync(file, 'utf8')) as { datasources?: JsonObject[] }).datasources ?? []);
      expect(sources.length, `${rel(file)} has data sources`).toBeGreaterThan(0);
      for (const source of sources) {
        const host = new URL(String(source.url)).hostname;
        expect(Object.keys(services), `${rel(file)}: ${String(source.url)}`).toContain(host);
      }
    }
  });

  it('gives NGINX every variable its templates use', () => {
    const templates = repoPath('nginx', 'templates');
    const names = new Set<string>();
    const walk = (dir: string) => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) walk(path);
        else for (const m of readFileSync(path, 'utf8').matchAll(/\$\{(NGINX_[A-Z0-9_]+)\}/g)) names.add(m[1]!);
      }
    };
    walk(templates);
    expect(names.size).toBeGreaterThan(10);
    const nginx = base().nginx!;
    const nginxEnv = env(nginx);
    expect([...names].filter((name) => !(name in nginxEnv)), 'template variables compose does not set').toEqual([]);
    expect(nginxEnv).toMatchObject({ NGINX_ENVSUBST_OUTPUT_DIR: '/etc/nginx', NGINX_ENVSUBST_FILTER: '^NGINX_', NGINX_CLIENT_MAX_BODY_SIZE: '16m' });
    // The body limit matches the gateway's default REQUEST_BODY_LIMIT_BYTES (16 MiB).
    const limit = describeSettings().find((s) => s.env === 'REQUEST_BODY_LIMIT_BYTES');
    expect(limit).toBeDefined();
    expect(loadConfig({ JWT_SECRET: DEPLOYMENT_SECRETS.JWT_SECRET }).requestBodyLimitBytes).toBe(16 * 1024 * 1024);
    expect((nginx.volumes as Json[]).map(volumeMount).find((m) => m.target === '/etc/nginx/templates')).toMatchObject({
      source: repoPath('nginx', 'templates'),
      readOnly: true,
    });
  });
});

// Keep the helper honest: the interpolation rules the checks above rely on.
describe('compose interpolation (test helper)', () => {
  it('follows the Compose Specification', async () => {
    const { interpolate } = await import('./helpers/compose.js');
    expect(interpolate('${A:-x} ${B-y} $$C ${D:+z} $E', { A: '', B: '', D: '1', E: 'e' })).toBe('x  $C z e');
    expect(() => interpolate('${A:?need A}', { A: '' })).toThrow('need A');
    expect(interpolate('${A?need A}', { A: '' })).toBe('');
  });
});

