import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Where Debian puts tools that a user's PATH may lack (nginx in /usr/sbin). */
const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/bin'];

/** The executable `name` on PATH (or in a system folder), or null. */
export function findTool(name: string, env: NodeJS.ProcessEnv = process.env): string | null {
  const dirs = [...(env.PATH ?? '').split(delimiter).filter(Boolean), ...SYSTEM_DIRS];
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
 * What a test file needs from the machine (a binary, a folder), as found,
 * or null to skip the tests that need it, with one line saying so. Under CI
 * a missing one is an error, which fails the file: CI must never pass by
 * skipping.
 *
 * `what` names it and `install` says how to get it, e.g.
 * `requirement(findTool('nginx'), 'nginx', 'apt-get install nginx')`.
 */
export function requirement<T>(found: T | null, what: string, install: string): T | null {
  if (found !== null) return found;
  if (process.env.CI) throw new Error(`${what} not found: its tests cannot be skipped under CI; ${install}`);
  if (!warned.has(what)) {
    warned.add(what);
    console.warn(`${what} not found: its tests are skipped; ${install}`);
  }
  return null;
}

/** A tool on PATH for a test file (see `requirement`). */
export const requireTool = (name: string, install: string): string | null => requirement(findTool(name), name, install);
