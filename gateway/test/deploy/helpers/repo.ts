import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { repoRoot } from '../../../src/infra/paths.js';

export { repoRoot };

export const repoPath = (...parts: string[]) => join(repoRoot, ...parts);

/** Files under `dir` (recursively) whose name passes `keep`, as repository-relative paths. */
export function filesUnder(dir: string, keep: (name: string) => boolean): string[] {
  const out: string[] = [];
  const walk = (current: string) => {
    for (const entry of readdirSync(current, { withFileTypes: true })) {
      const path = join(current, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (keep(entry.name)) out.push(relative(repoRoot, path));
    }
  };
  walk(repoPath(dir));
  return out.sort();
}
