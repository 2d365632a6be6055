// `npm start`: set up what is missing, then run the gateway with its local
// worker(s) on PORT (default 8080). Variables already in the environment win
// over .env.
import { isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ensureEnvFile, setup } from './setup.mjs';
import { fail, paths, run, step } from './lib/project.mjs';

try {
  await setup();
  ensureEnvFile();
  process.loadEnvFile(join(paths.root, '.env'));
  // The demo models (a tiny diffusion pipeline, MiniLM, TorchScript models),
  // built offline so a first inference works; skipped when already there.
  const models = process.env.MODEL_DIRECTORY || 'var/models';
  step(`Preparing the demo models in ${models}`);
  await run(paths.venvPython, ['-m', 'device_ops_worker_tools.demo_models', '--model-directory', isAbsolute(models) ? models : resolve(paths.root, models)], {
    env: { ...process.env, PYTHONPATH: join(paths.workers, 'src'), HF_HUB_OFFLINE: '1' },
  });
} catch (error) {
  fail(error.message);
}

const { runServer } = await import(pathToFileURL(join(paths.gateway, 'dist', 'server.js')).href);
const gateway = await runServer(process.env);
const url = gateway.url;
process.stdout.write(
  [
    '',
    '  device-operations gateway is running',
    `    URL        ${url}`,
    `    API docs   ${url}/api-docs`,
    `    Health     ${url}/health/detailed`,
    '    Token      npm run -s token          (signed with JWT_SECRET from .env; --sub, --scope, --ttl)',
    `    Try        curl -H "Authorization: Bearer $(npm run -s token)" ${url}/api/device/list`,
    '    Stop       Ctrl-C (drains requests, stops the workers)',
    '',
  ].join('\n') + '\n',
);
