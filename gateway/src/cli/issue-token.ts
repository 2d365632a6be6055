/**
 * Print a bearer token signed with JWT_SECRET (from the environment or .env):
 *   npm run token -- [--sub NAME] [--scope "a b"] [--ttl SECONDS]
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import jwt from 'jsonwebtoken';
import { ConfigError, loadConfig } from '../config/config.js';
import { repoRoot } from '../infra/paths.js';

const envFile = join(repoRoot, '.env');
if (existsSync(envFile)) process.loadEnvFile(envFile);

const { values } = parseArgs({
  options: {
    sub: { type: 'string', default: 'local-user' },
    scope: { type: 'string', default: 'inference' },
    ttl: { type: 'string', default: '3600' },
  },
});

try {
  const config = loadConfig(process.env);
  const ttl = Number(values.ttl);
  if (!Number.isInteger(ttl) || ttl <= 0) throw new Error('--ttl must be a positive number of seconds');
  if (config.jwtSecret === undefined) throw new Error('this command signs with JWT_SECRET, which is not set');
  const token = jwt.sign({ scope: values.scope }, config.jwtSecret, {
    algorithm: 'HS256',
    subject: values.sub,
    expiresIn: ttl,
    ...(config.jwtIssuer ? { issuer: config.jwtIssuer } : {}),
    ...(config.jwtAudience ? { audience: config.jwtAudience } : {}),
  });
  process.stdout.write(`${token}\n`);
} catch (error) {
  const message = error instanceof ConfigError ? error.message : (error as Error).message;
  process.stderr.write(`token: ${message}\n`);
  process.exit(1);
}
