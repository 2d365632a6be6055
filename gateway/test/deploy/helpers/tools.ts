import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Where sbin tools live on Debian when PATH lacks them (nginx is in /usr/sbin). */
const EXTRA_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/** The executable `name` on PATH (or in an sbin folder), or null. */
export function findTool(name: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

const warned = new Set<string>();

/**
 * A tool a test file needs. Missing outside CI: one line on stderr and null
 * (the file's tests skip). Missing under CI: an error, which fails the file —
 * CI must never pass by skipping.
 */
export function requireTool(name: string, install: string): string | null {
  const path = findTool(name);
  if (path) return path;
  const message = `${name} not found: its deployment tests are skipped; install it with: ${install}`;
  if (process.env.CI) throw new Error(message.replace('are skipped', 'cannot be skipped under CI'));
  if (!warned.has(name)) {
    warned.add(name);
    console.warn(message);
  }
  return null;
}
