import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isIncluded, readDockerignore } from './helpers/dockerignore.js';
import { dockerfileInstructions, finalStage } from './helpers/deployment.js';
import { filesUnder, repoPath, repoRoot } from './helpers/repo.js';
import { workerPythonForTests } from '../helpers/worker-python.js';

const workerPython = workerPythonForTests();

interface Image {
  dockerfile: string;
  /** Files the image must get from the context. */
  needs: string[];
}

const IMAGES: Record<string, Image> = {
  gateway: {
    dockerfile: 'gateway/Dockerfile',
    needs: [
      'package.json',
      'package-lock.json',
      'tsconfig.json',
      'gateway/package.json',
      'gateway/tsconfig.build.json',
      'gateway/src/server.ts',
      'gateway/src/config/config.ts',
      'scripts/gen-proto.mjs',
      'scripts/lib/project.mjs',
      'proto/device_ops/v1/worker_service.proto',
      'proto/grpc/health/v1/health.proto',
    ],
  },
  worker: {
    dockerfile: 'python-workers/Dockerfile',
    needs: [
      'python-workers/requirements.txt',
      'python-workers/requirements-dev.txt',
      'python-workers/src/device_ops_worker/__main__.py',
      'python-workers/src/device_ops_worker/settings.py',
      'proto/device_ops/v1/worker_service.proto',
    ],
  },
};

// Never sent to a builder: dependencies, build output, local data, secrets, tests.
const NEVER_SENT = [
  '.env',
  '.env.production',
  'node_modules/express/index.js',
  'gateway/node_modules/.bin/tsc',
  'gateway/dist/server.js',
  'gateway/src/generated/device_ops/v1/WorkerService.ts',
  'python-workers/.venv/bin/python',
  'python-workers/src/device_ops/v1/worker_service_pb2.py',
  'python-workers/src/device_ops_worker/__pycache__/settings.cpython-311.pyc',
  'var/models/tiny-sd/model_index.json',
  'var/data/gateway.sqlite3',
  'test-results/vitest.json',
  '.git/HEAD',
  'nginx/certs/privkey.pem',
  'gateway/test/deploy/compose.test.ts',
  'python-workers/tests/test_settings.py',
  'deploy/backup.sh',
];

const scratch = mkdtempSync(join(tmpdir(), 'device-ops-dockerfiles-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** COPY sources taken from the build context (not --from another stage). */
function contextCopies(dockerfile: string): string[] {
  return dockerfileInstructions(repoPath(dockerfile))
    .filter(([keyword, rest]) => keyword === 'COPY' && !/--from=/.test(rest))
    .flatMap(([, rest]) => {
      const words = rest.split(/\s+/).filter((word) => !word.startsWith('--'));
      return words.slice(0, -1);
    });
}

const runCommands = (dockerfile: string) =>
  dockerfileInstructions(repoPath(dockerfile))
    .filter(([keyword]) => keyword === 'RUN')
    .map(([, rest]) => rest.replace(/^--mount=\S+\s+/, ''));

describe.each(Object.entries(IMAGES))('the %s image', (name, image) => {
  const ignoreFiles = [`${image.dockerfile}.dockerignore`, '.dockerignore'];

  it.each(ignoreFiles)('%s sends what the Dockerfile copies and nothing that must stay out', (ignoreFile) => {
    const patterns = readDockerignore(repoPath(ignoreFile));
    for (const path of image.needs) expect(isIncluded(patterns, path), `${path} is sent`).toBe(true);
    for (const source of contextCopies(image.dockerfile)) {
      expect(existsSync(repoPath(source)), `${source} exists`).toBe(true);
      const files = filesUnderOrFile(source);
      expect(files.filter((file) => isIncluded(patterns, file)).length, `something of ${source} is sent`).toBeGreaterThan(0);
    }
    for (const path of NEVER_SENT) expect(isIncluded(patterns, path), `${path} is left out`).toBe(false);
  });

  it('builds in stages and runs as an unprivileged user with a healthcheck', () => {
    const all = dockerfileInstructions(repoPath(image.dockerfile));
    expect(all.filter(([keyword]) => keyword === 'FROM').length, 'stages').toBeGreaterThanOrEqual(2);
    const final = finalStage(repoPath(image.dockerfile));
    const user = final.filter(([keyword]) => keyword === 'USER').at(-1)?.[1];
    expect(user, 'USER').toBeDefined();
    expect(user!.split(':')[0]).not.toMatch(/^(root|0)$/);
    expect(final.some(([keyword]) => keyword === 'HEALTHCHECK'), `${name}: HEALTHCHECK`).toBe(true);
  });
});

function filesUnderOrFile(source: string): string[] {
  const path = repoPath(source);
  try {
    return filesUnder(source, () => true);
  } catch {
    return existsSync(path) ? [source] : [];
  }
}

describe('gateway/Dockerfile', () => {
  const dockerfile = 'gateway/Dockerfile';

  it('ships production dependencies only, the compiled JavaScript and proto/', () => {
    const instructions = dockerfileInstructions(repoPath(dockerfile));
    let current = '(before the first FROM)';
    const stages = new Map<string, string[]>([[current, []]]);
    for (const [keyword, rest] of instructions) {
      if (keyword === 'FROM') {
        current = rest.split(/\s+AS\s+/i)[1] ?? rest;
        stages.set(current, []);
      } else {
        stages.get(current)!.push(`${keyword} ${rest}`);
      }
    }
    const final = finalStage(repoPath(dockerfile)).map(([k, r]) => `${k} ${r}`);
    const nodeModulesFrom = final.find((line) => line.includes('node_modules'))!.match(/--from=(\S+)/)![1]!;
    expect(stages.get(nodeModulesFrom)!.some((line) => /npm ci .*--omit=dev/.test(line)), `${nodeModulesFrom} installs with --omit=dev`).toBe(true);
    expect(final.some((line) => /^COPY --from=build \S*gateway\/dist/.test(line))).toBe(true);
    expect(final.some((line) => /^COPY proto /.test(line)), 'proto/ for the gRPC loader at runtime').toBe(true);
    expect(final.find((line) => line.startsWith('CMD'))).toBe('CMD ["node", "gateway/dist/server.js"]');
    expect(final.find((line) => line.startsWith('HEALTHCHECK'))).toContain('/health');
  });

  it("generates the TypeScript types from proto/ exactly as the project's own generator does", () => {
    const command = runCommands(dockerfile).find((run) => run.includes('gen-proto.mjs'))!;
    const generate = command.split(/\s+&&\s+npx tsc/)[0]!;
    // The Dockerfile's own command, in a copy of the build stage's layout.
    const build = join(scratch, 'gateway-build');
    mkdirSync(join(build, 'gateway'), { recursive: true });
    cpSync(repoPath('scripts'), join(build, 'scripts'), { recursive: true });
    cpSync(repoPath('proto'), join(build, 'proto'), { recursive: true });
    symlinkSync(repoPath('node_modules'), join(build, 'node_modules'));
    execFileSync('sh', ['-c', generate], { cwd: build, stdio: 'pipe', timeout: 120_000 });
    // Generated files name their source by absolute path; compare the rest.
    const generated = (root: string) => {
      const dir = join(root, 'gateway', 'src', 'generated');
      return filesUnderAbsolute(dir).map((file) => [file, readFileSync(join(dir, file), 'utf8').split(`${root.replace(/\/+$/, '')}/`).join('<root>/')]);
    };
    const ours = generated(build);
    expect(ours.length).toBeGreaterThan(5);
    expect(ours).toEqual(generated(repoRoot).filter(([file]) => !file!.startsWith('.')));
  });
});

function filesUnderAbsolute(dir: string, prefix = ''): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((entry) =>
      entry.isDirectory()
        ? filesUnderAbsolute(join(dir, entry.name), `${prefix}${entry.name}/`)
        : entry.name.startsWith('.') ? [] : [`${prefix}${entry.name}`],
    )
    .sort();
}

describe('python-workers/Dockerfile', () => {
  const dockerfile = 'python-workers/Dockerfile';
  const pin = (file: string, name: string) =>
    readFileSync(repoPath('python-workers', file), 'utf8').match(new RegExp(`^${name}==(\\S+)`, 'm'))?.[1];

  it('starts from the PyTorch runtime image of the pinned torch release, with CUDA and cuDNN', () => {
    const torch = pin('requirements.txt', 'torch');
    expect(torch).toBeDefined();
    const arg = dockerfileInstructions(repoPath(dockerfile)).find(([k, r]) => k === 'ARG' && r.startsWith('PYTORCH_IMAGE='))![1];
    const tag = arg.split(':')[1]!;
    expect(arg).toMatch(/^PYTORCH_IMAGE=pytorch\/pytorch:/);
    expect(tag).toMatch(new RegExp(`^${torch!.replace(/\./g, '\\.')}-cuda\\d+\\.\\d+-cudnn9-runtime$`));
    const final = finalStage(repoPath(dockerfile)).map(([k, r]) => `${k} ${r}`);
    expect(final[0]).toBe('FROM ${PYTORCH_IMAGE} AS runtime');
    expect(final.some((line) => /^RUN .*pip install -r requirements\.txt/.test(line)), 'pinned requirements').toBe(true);
    expect(final.find((line) => line.startsWith('CMD'))).toBe('CMD ["python", "-m", "device_ops_worker"]');
    const healthcheck = final.find((line) => line.startsWith('HEALTHCHECK'))!;
    expect(healthcheck).toContain('grpc_health.v1');
    expect(healthcheck).toContain("os.environ.get('WORKER_TOKEN')");
  });

  it('generates the Python stubs with the pinned grpcio-tools', () => {
    expect(pin('requirements-dev.txt', 'grpcio-tools')).toBeDefined();
    const commands = runCommands(dockerfile);
    expect(commands.some((run) => run.includes("grep -E '^grpcio-tools==' requirements-dev.txt"))).toBe(true);
    expect(commands.some((run) => run.includes('grpc_tools.protoc'))).toBe(true);
  });

  it.skipIf(!workerPython)('generates the same Python stubs as the project generator', () => {
    const generate = runCommands(dockerfile).find((run) => run.includes('grpc_tools.protoc'))!;
    const python = workerPython!;
    const build = join(scratch, 'worker-build');
    mkdirSync(build, { recursive: true });
    cpSync(repoPath('proto'), join(build, 'proto'), { recursive: true });
    execFileSync('sh', ['-c', generate.replace(/\bpython -m grpc_tools/, `${python} -m grpc_tools`)], { cwd: build, stdio: 'pipe' });
    const ours = filesUnderAbsolute(join(build, 'out', 'device_ops'));
    const project = filesUnderAbsolute(repoPath('python-workers', 'src', 'device_ops')).filter((f) => !f.includes('__pycache__'));
    expect(ours.length).toBeGreaterThan(5);
    expect(ours).toEqual(project);
    for (const file of ours) {
      expect(readFileSync(join(build, 'out', 'device_ops', file), 'utf8'), file).toBe(
        readFileSync(repoPath('python-workers', 'src', 'device_ops', file), 'utf8'),
      );
    }
  });
});
