// Set up whatever a fresh clone lacks, and nothing that is already there:
// npm dependencies, the Python virtual environment with the worker's pinned
// requirements, code generated from proto/, the compiled gateway, and (for
// `npm start`) a .env with a generated JWT secret. Each step is skipped when
// its inputs did not change, so a second run takes seconds.
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { generateAll } from './gen-proto.mjs';
import { capture, fail, paths, run, step, whenChanged } from './lib/project.mjs';

const MIN_PYTHON = [3, 10];

function checkNode() {
  const [major, minor] = process.versions.node.split('.').map(Number);
  if (major < 20 || (major === 20 && minor < 12)) fail(`Node.js 20.12 or newer is required (found ${process.version}).`);
}

async function ensureNodeModules() {
  const lock = join(paths.root, 'package-lock.json');
  const stamp = join(paths.root, 'node_modules', '.device-ops-stamp');
  if (!existsSync(join(paths.root, 'node_modules'))) {
    step('Installing npm dependencies (npm ci)');
    await run('npm', ['ci', '--no-audit', '--no-fund']);
  }
  await whenChanged(stamp, [lock, join(paths.gateway, 'package.json')], async () => {
    if (existsSync(stamp)) {
      step('package-lock.json changed: reinstalling npm dependencies (npm ci)');
      await run('npm', ['ci', '--no-audit', '--no-fund']);
    }
  });
}

/** The interpreter to build the venv from: $PYTHON, else python3.11, else python3. */
async function findPython() {
  const candidates = [process.env.PYTHON, 'python3.11', 'python3'].filter(Boolean);
  for (const candidate of candidates) {
    try {
      const version = (await capture(candidate, ['-c', 'import sys; print("%d.%d" % sys.version_info[:2])'])).trim();
      const [major, minor] = version.split('.').map(Number);
      if (major > MIN_PYTHON[0] || (major === MIN_PYTHON[0] && minor >= MIN_PYTHON[1])) return candidate;
    } catch {
      // not installed; try the next
    }
  }
  fail(`Python ${MIN_PYTHON.join('.')} or newer is required to run the workers; set PYTHON to its path.`);
}

async function ensureVenv() {
  const requirements = [join(paths.workers, 'requirements.txt'), join(paths.workers, 'requirements-dev.txt')];
  if (!existsSync(paths.venvPython)) {
    const python = await findPython();
    step(`Creating the worker's Python environment (python-workers/.venv) with ${python}`);
    await run(python, ['-m', 'venv', paths.venv]);
  }
  await whenChanged(join(paths.venv, '.requirements-stamp'), requirements, async () => {
    step('Installing the worker\'s pinned Python requirements (PyTorch is large: the first time takes a few minutes)');
    // pip prints a progress bar per download when attached to a terminal and
    // one line per package otherwise, so long installs always show progress.
    await run(paths.venvPython, [
      '-m', 'pip', 'install', '--disable-pip-version-check', '--progress-bar', 'on',
      ...requirements.flatMap((file) => ['-r', file]),
    ]);
  });
}

async function buildGateway() {
  step('Compiling the gateway (tsc, incremental)');
  await run(join(paths.root, 'node_modules', '.bin', 'tsc'), ['-p', join(paths.gateway, 'tsconfig.build.json')]);
}

/** A first `npm start` gets a .env with a fresh random JWT secret; an existing .env is never touched. */
export function ensureEnvFile() {
  const envFile = join(paths.root, '.env');
  if (existsSync(envFile)) return;
  copyFileSync(join(paths.root, '.env.example'), envFile);
  const secret = randomBytes(48).toString('base64url');
  const text = readFileSync(envFile, 'utf8').replace(/^JWT_SECRET=.*$/m, `JWT_SECRET=${secret}`);
  writeFileSync(envFile, text);
  // It holds a secret: readable by its owner only.
  chmodSync(envFile, 0o600);
  step('Created .env from .env.example with a generated JWT_SECRET');
}

export async function setup() {
  checkNode();
  await ensureNodeModules();
  await ensureVenv();
  await generateAll();
  await buildGateway();
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  await setup().catch((error) => fail(error.message));
}
