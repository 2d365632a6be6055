import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './infra/paths.js';

/** The gateway package's version. */
export function readGatewayVersion(): string {
  const manifest = JSON.parse(readFileSync(join(repoRoot, 'gateway', 'package.json'), 'utf8')) as { version: string };
  return manifest.version;
}
