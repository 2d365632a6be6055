/**
 * A typed client generated from the document works: openapi-typescript
 * turns the running gateway's /api-docs/openapi.json into types, the
 * README's example client (examples/typescript-client/client.ts) compiles
 * against them under `strict`, and runs against the real gateway and worker.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import openapiTS, { astToString } from 'openapi-typescript';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { repoRoot } from '../../src/infra/paths.js';
import { startRealGatewayOn, type GatewayOnDatabase } from '../helpers/real-gateway.js';
import { signToken } from '../helpers/tokens.js';

const run = promisify(execFile);
// Under the repository, so the client resolves openapi-fetch from its node_modules as a project would.
const folder = join(repoRoot, 'var', 'typed-client');
let real: GatewayOnDatabase;

beforeAll(async () => {
  const models = mkdtempSync(join(tmpdir(), 'device-ops-typed-client-models-'));
  cpSync(join(inject('demoModels'), 'minilm'), join(models, 'minilm'), { recursive: true });
  real = await startRealGatewayOn('sqlite', { MODEL_DIRECTORY: models });
  rmSync(folder, { recursive: true, force: true });
  mkdirSync(folder, { recursive: true });
}, 180_000);

afterAll(async () => {
  await real?.close();
});

it('generates types from the document, compiles the example client under strict, and runs it', async () => {
  const document = await (await fetch(`${real.url}/api-docs/openapi.json`)).json();
  writeFileSync(join(folder, 'api.d.ts'), astToString(await openapiTS(document as never)));
  copyFileSync(join(repoRoot, 'examples', 'typescript-client', 'client.ts'), join(folder, 'client.ts'));
  writeFileSync(
    join(folder, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { strict: true, noEmit: true, target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', skipLibCheck: false, types: [] },
      files: ['client.ts'],
    }),
  );
  writeFileSync(join(folder, 'package.json'), JSON.stringify({ type: 'module' }));
  const tsc = join(repoRoot, 'node_modules', '.bin', 'tsc');
  const compiled = await run(tsc, ['-p', join(folder, 'tsconfig.json')]).then(
    () => '',
    (error: { stdout?: string }) => error.stdout ?? 'tsc failed',
  );
  expect(compiled).toBe('');

  const { embedAndList } = (await import(pathToFileURL(join(folder, 'client.ts')).href)) as {
    embedAndList: (baseUrl: string, token: string) => Promise<Record<string, unknown>>;
  };
  const answer = await embedAndList(real.url, signToken({ scope: 'inference' }));
  expect(answer).toEqual({
    deviceIds: [expect.stringMatching(/^worker-0:/)],
    sessionStatus: 'succeeded',
    dimensions: 384,
    refusedStatus: 400,
    refusedFields: ['body.parameters.texts'],
  });
}, 120_000);

it('fails to compile a client that calls a path the document does not have', async () => {
  writeFileSync(
    join(folder, 'wrong.ts'),
    "import createClient from 'openapi-fetch';\nimport type { paths } from './api.js';\nconst c = createClient<paths>({ baseUrl: 'http://x' });\nexport const p = c.GET('/api/device/lists');\n",
  );
  writeFileSync(
    join(folder, 'tsconfig.wrong.json'),
    JSON.stringify({ extends: './tsconfig.json', files: ['wrong.ts'] }),
  );
  const tsc = join(repoRoot, 'node_modules', '.bin', 'tsc');
  const failure = await run(tsc, ['-p', join(folder, 'tsconfig.wrong.json')]).then(
    () => 'compiled',
    (error: { stdout?: string }) => error.stdout ?? '',
  );
  // The call on line 4 (the misspelt path) is what the compiler refuses.
  expect(failure).toMatch(/wrong\.ts\(4,\d+\): error TS/);
}, 60_000);
