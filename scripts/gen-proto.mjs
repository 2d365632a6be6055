// Generate code from proto/: TypeScript types for the gateway
// (proto-loader-gen-types) and Python stubs with .pyi (grpcio-tools) for the
// worker. Generated files are build output: never edited, never committed.
import { mkdirSync, rmSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { paths, run, step, whenChanged } from './lib/project.mjs';

// Keep in step with gateway/src/infra/grpc/proto-loader-options.ts.
const TS_OPTIONS = ['--longs=Number', '--enums=String', '--defaults', '--oneofs'];

function protoFiles(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? protoFiles(join(dir, e.name)) : e.name.endsWith('.proto') ? [join(dir, e.name)] : [],
  );
}

export async function generateTypeScript() {
  const files = protoFiles(paths.proto).map((f) => relative(paths.proto, f));
  rmSync(paths.tsGenerated, { recursive: true, force: true });
  mkdirSync(paths.tsGenerated, { recursive: true });
  await run(
    join(paths.root, 'node_modules', '.bin', 'proto-loader-gen-types'),
    // Files first: --includeDirs is an array option and would swallow them.
    [
      ...files,
      ...TS_OPTIONS,
      '--includeComments',
      '--grpcLib=@grpc/grpc-js',
      '--importFileExtension=.js',
      `--outDir=${paths.tsGenerated}`,
      `--includeDirs=${paths.proto}`,
    ],
    { cwd: paths.proto },
  );
}

export async function generatePython(python = paths.venvPython) {
  // Only the worker contract: grpc.health.v1 comes with grpcio-health-checking,
  // and the gateway's public API (device_ops/gateway) is for callers, who
  // generate their own stubs (README, "Calling the gateway over gRPC").
  const files = protoFiles(join(paths.proto, 'device_ops', 'v1')).map((f) => relative(paths.proto, f));
  rmSync(paths.pyGenerated, { recursive: true, force: true });
  const out = join(paths.workers, 'src');
  await run(
    python,
    ['-m', 'grpc_tools.protoc', `-I${paths.proto}`, `--python_out=${out}`, `--pyi_out=${out}`, `--grpc_python_out=${out}`, ...files],
    { cwd: paths.proto },
  );
}

/** Regenerate both sides when proto/ (or this script) changed. */
export async function generateAll({ force = false } = {}) {
  const inputs = [paths.proto, join(paths.root, 'scripts', 'gen-proto.mjs')];
  // Stamps live inside the generated folders, so deleting a folder regenerates it.
  const tsStamp = join(paths.tsGenerated, '.stamp');
  const pyStamp = join(paths.pyGenerated, '.stamp');
  if (force) for (const stamp of [tsStamp, pyStamp]) rmSync(stamp, { force: true });
  await whenChanged(tsStamp, inputs, async () => {
    step('Generating TypeScript types from proto/');
    await generateTypeScript();
  });
  await whenChanged(pyStamp, inputs, async () => {
    step('Generating Python stubs from proto/');
    await generatePython();
  });
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  await generateAll({ force: true });
}
