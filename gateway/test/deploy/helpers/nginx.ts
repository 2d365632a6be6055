import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { asMapping, loadCompose, servicesOf } from './compose.js';
import { COMPOSE_FILE, DEPLOYMENT_SECRETS } from './deployment.js';
import { freePort } from '../../helpers/servers.js';
import { repoPath } from './repo.js';

/**
 * The real NGINX configuration (nginx/templates/) rendered the way the nginx
 * image's entrypoint renders it, and a real nginx run from it on free
 * loopback ports as any user, with its pid file, temp folders and logs in a
 * folder of its own (never /etc/nginx or /var).
 */

const TEMPLATES = repoPath('nginx', 'templates');
const NAME = /\$\{(NGINX_[A-Za-z0-9_]*)\}|\$(NGINX_[A-Za-z0-9_]*)/g;

/** The NGINX_* values docker-compose.yml gives the nginx service. */
export function composeNginxVariables(): Record<string, string> {
  const nginx = servicesOf(loadCompose([COMPOSE_FILE], DEPLOYMENT_SECRETS)).nginx!;
  const env = asMapping(nginx.environment);
  return Object.fromEntries(Object.entries(env).filter(([name]) => name.startsWith('NGINX_')).map(([k, v]) => [k, v ?? '']));
}

/**
 * envsubst as the image's 20-envsubst-on-templates.sh runs it with
 * NGINX_ENVSUBST_FILTER=^NGINX_: `${NAME}` and `$NAME` of the given NGINX_*
 * variables are replaced, nothing else. A name the templates use that has no
 * value is an error here (envsubst would silently leave it empty).
 */
export function renderTemplates(outDir: string, variables: Record<string, string>): string[] {
  const written: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        walk(path);
        continue;
      }
      if (!entry.name.endsWith('.template')) continue;
      const text = readFileSync(path, 'utf8').replace(NAME, (match, braced?: string, bare?: string) => {
        const name = (braced ?? bare)!;
        const value = variables[name];
        if (value === undefined) throw new Error(`${relative(TEMPLATES, path)} uses ${name}, which has no value`);
        return value;
      });
      const target = join(outDir, relative(TEMPLATES, path).replace(/\.template$/, ''));
      mkdirSync(dirname(target), { recursive: true });
      writeFileSync(target, text);
      written.push(target);
    }
  };
  walk(TEMPLATES);
  return written;
}

export interface Certificate {
  certificate: string;
  key: string;
}

/** A self-signed pair from nginx/scripts/make-self-signed-cert.sh. */
export function makeCertificate(dir: string): Certificate {
  execFileSync(repoPath('nginx', 'scripts', 'make-self-signed-cert.sh'), ['--days', '2', dir], { stdio: 'pipe' });
  return { certificate: join(dir, 'fullchain.pem'), key: join(dir, 'privkey.pem') };
}

export interface EdgePorts {
  http: number;
  https: number;
  grpc: number;
  status: number;
}

export interface PreparedEdge {
  root: string;
  config: string;
  ports: EdgePorts;
  certificate: Certificate;
}

/** Render the configuration for a run on loopback: compose's values, with this machine's ports, paths and upstreams. */
export async function prepareEdge(upstreams: { gateway: string; gatewayGrpc: string }, overrides: Record<string, string> = {}): Promise<PreparedEdge> {
  const root = mkdtempSync(join(tmpdir(), 'device-ops-nginx-'));
  // nginx's workers run as an unprivileged user when started as root: they must reach the temp folders.
  chmodSync(root, 0o755);
  const temp = join(root, 'temp');
  mkdirSync(temp);
  const certificate = makeCertificate(join(root, 'certs'));
  const ports = { http: await freePort(), https: await freePort(), grpc: await freePort(), status: await freePort() };
  const variables = {
    ...composeNginxVariables(),
    NGINX_HTTP_PORT: String(ports.http),
    NGINX_HTTPS_PORT: String(ports.https),
    NGINX_PUBLIC_HTTPS_PORT: String(ports.https),
    NGINX_GRPC_PORT: String(ports.grpc),
    NGINX_STATUS_PORT: String(ports.status),
    NGINX_TLS_CERTIFICATE: certificate.certificate,
    NGINX_TLS_CERTIFICATE_KEY: certificate.key,
    NGINX_GATEWAY_UPSTREAM: upstreams.gateway,
    NGINX_GATEWAY_GRPC_UPSTREAM: upstreams.gatewayGrpc,
    // Upstreams are IP addresses here: the resolver is configured but never asked.
    NGINX_RESOLVER: '127.0.0.1',
    NGINX_PID_FILE: join(root, 'nginx.pid'),
    NGINX_ACCESS_LOG: join(root, 'access.log'),
    NGINX_TEMP_DIRECTORY: temp,
    ...overrides,
  };
  renderTemplates(join(root, 'conf'), variables);
  return { root, config: join(root, 'conf', 'nginx.conf'), ports, certificate };
}

/** `nginx -t` on a prepared configuration: [exit code, output]. */
export function testConfig(nginx: string, edge: PreparedEdge): { status: number | null; output: string } {
  const result = spawnSync(nginx, ['-t', '-p', edge.root, '-c', edge.config, '-e', 'stderr'], { encoding: 'utf8', timeout: 30_000 });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

export interface RunningEdge extends PreparedEdge {
  process: ChildProcess;
  /** Access-log lines (JSON) so far. */
  accessLog(): Record<string, unknown>[];
  errorLog(): string;
  stop(): Promise<void>;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Start nginx in the foreground on a prepared configuration; resolves once every listener accepts. */
export async function startEdge(nginx: string, edge: PreparedEdge): Promise<RunningEdge> {
  const child = spawn(nginx, ['-p', edge.root, '-c', edge.config, '-e', 'stderr', '-g', 'daemon off;'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stdout!.resume();
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(edge.root, { recursive: true, force: true });
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}: ${stderr}`);
    const open = await Promise.all(Object.values(edge.ports).map(portOpen));
    if (open.every(Boolean)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`nginx did not listen within 10 s: ${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    ...edge,
    process: child,
    accessLog: () =>
      (existsSync(join(edge.root, 'access.log')) ? readFileSync(join(edge.root, 'access.log'), 'utf8') : '')
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as Record<string, unknown>),
    errorLog: () => stderr,
    stop,
  };
}
