// `npm start`: set up what is missing, then run the gateway with its local
// worker(s) on PORT (default 8080). Variables already in the environment win
// over .env.
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ensureEnvFile, setup } from './setup.mjs';
import { fail, paths } from './lib/project.mjs';

try {
  await setup();
  ensureEnvFile();
} catch (error) {
  fail(error.message);
}
process.loadEnvFile(join(paths.root, '.env'));

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
