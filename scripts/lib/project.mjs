// Shared helpers of the project scripts (setup, start, test, proto).
// Only Node built-ins here: these scripts run before `npm ci` has.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync, readdirSync, statSync } from 'node:fs';
import { join, dirname, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('../../', import.meta.url));
export const paths = {
  root,
  gateway: join(root, 'gateway'),
  proto: join(root, 'proto'),
  workers: join(root, 'python-workers'),
  venv: join(root, 'python-workers', '.venv'),
  venvPython: join(root, 'python-workers', '.venv', 'bin', 'python'),
  tsGenerated: join(root, 'gateway', 'src', 'generated'),
  pyGenerated: join(root, 'python-workers', 'src', 'device_ops'),
};

export function step(message) {
  process.stdout.write(`\u001b[1m› ${message}\u001b[0m\n`);
}

export function fail(message) {
  process.stderr.write(`✗ ${message}\n`);
  process.exit(1);
}

/** Run a command with inherited output; resolves on exit 0, rejects otherwise. */
export function run(command, args, options = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: 'inherit', cwd: root, ...options });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${command} ${args.join(' ')} exited with ${signal ?? code}`));
    });
  });
}

/** Run a command and capture stdout; rejects on non-zero exit. */
export function capture(command, args, options = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], ...options });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(err.trim() || `exit ${code}`))));
  });
}

function listFiles(path) {
  if (!existsSync(path)) return [];
  if (statSync(path).isFile()) return [path];
  return readdirSync(path, { withFileTypes: true })
    .filter((e) => !e.name.startsWith('.') && e.name !== 'node_modules' && e.name !== '__pycache__')
    .flatMap((e) => listFiles(join(path, e.name)))
    .sort();
}

/** A hash of the contents (and names) of files under the given paths. */
export function hashInputs(inputs) {
  const hash = createHash('sha256');
  for (const file of inputs.flatMap(listFiles)) {
    hash.update(relative(root, file));
    hash.update(readFileSync(file));
  }
  return hash.digest('hex');
}

/**
 * Run `action` only when the inputs changed since the last successful run,
 * recorded in `stampFile`.
 */
export async function whenChanged(stampFile, inputs, action) {
  const digest = hashInputs(inputs);
  if (existsSync(stampFile) && readFileSync(stampFile, 'utf8') === digest) return false;
  await action();
  writeFileSync(stampFile, digest);
  return true;
}

export { dirname };
