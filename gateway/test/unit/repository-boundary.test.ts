import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../../src/infra/paths.js';
import { outsidePaths } from '../helpers/outside-paths.js';

/**
 * A user's clone is the repository alone: no tracked file may read a path
 * beside or above it. `.ci/` is CI's own and may use what CI lays beside the
 * clone; the lockfile and binary files are not read.
 */
// Tracked files and new ones git does not ignore, as they are in the working tree.
const tracked = execFileSync('git', ['-C', repoRoot, 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], { encoding: 'utf8' })
  .split('\0')
  .filter((file) => file !== '' && !file.startsWith('.ci/') && file !== 'package-lock.json' && existsSync(join(repoRoot, file)));

// Built at run time, so this file does not hold the patterns it looks for.
const up = '..';
const beside = `${up}/${'shared'}`;

describe('the repository reads nothing outside itself', () => {
  it('finds no tracked file outside .ci/ that reads a path outside the repository', () => {
    expect(tracked.length).toBeGreaterThan(100);
    const found = tracked.flatMap((file) => {
      const bytes = readFileSync(join(repoRoot, file));
      if (bytes.includes(0)) return []; // binary
      return outsidePaths(file, bytes.toString('utf8'));
    });
    expect(found.map((f) => `${f.file}:${f.line} ${f.why}: ${f.text}`)).toEqual([]);
  });

  // The search itself: each kind of escape is found, and paths that stay inside are not.
  it.each([
    ['gateway/test/deploy/x.test.ts', `readFileSync(join(repoRoot, '${up}', 'shared', 'schema.json'))`, 'shared folder'],
    ['gateway/test/deploy/x.test.ts', `const schemaPath = '${beside}/schemas/compose-spec.json'`, 'shared folder'],
    ['gateway/test/deploy/x.test.ts', `const root = join(repoRoot, '${up}');`, 'climbs out'],
    ['gateway/test/x.test.ts', `import data from '${up}/${up}/${up}/outside.json';`, 'climbs out'],
    ['gateway/src/x.ts', `new URL('${up}/${up}/${up}/${up}/', import.meta.url)`, 'climbs out'],
    ['gateway/src/x.ts', `join(__dirname, '${up}', '${up}', '${up}')`, 'climbs out'],
    ['deploy/lib/x.sh', `ROOT=$(cd "$(dirname "$0")/${up}/${up}/${up}" && pwd)`, 'climbs out'],
    ['deploy/x.ps1', `$Root = Join-Path $PSScriptRoot '${up}/${up}'`, 'climbs out'],
    ['python-workers/tests/x.py', 'OUT = Path(__file__).resolve().parents[3] / "x"', 'climbs out'],
    ['python-workers/tests/x.py', 'OUT = Path(__file__).parent.parent.parent.parent', 'climbs out'],
    ['docs/adr/x.md', `see [the schema](${up}/${up}/${up}/schemas/compose.json)`, 'climbs out'],
    ['scripts/x.mjs', `const data = '/${'work'}/main/var/x';`, "developers' machines"],
  ])('finds the escape in %s: %s', (file, text, why) => {
    const found = outsidePaths(file, text);
    expect(found.length, JSON.stringify(found)).toBeGreaterThan(0);
    expect(found[0]!.why).toContain(why);
  });

  it.each([
    ['gateway/src/infra/paths.ts', `export const repoRoot = fileURLToPath(new URL('${up}/${up}/${up}/', import.meta.url));`],
    ['gateway/src/features/a/b.ts', `import { x } from '${up}/${up}/infra/logger.js';`],
    ['deploy/lib/common.sh', `DEPLOY_ROOT=$(cd "$(dirname "\${BASH_SOURCE[0]}")/${up}/${up}" && pwd)`],
    ['deploy/deploy.ps1', `$Root = (Resolve-Path (Join-Path $PSScriptRoot '${up}')).Path`],
    ['python-workers/tests/x.py', 'SRC = Path(__file__).resolve().parents[1] / "src"'],
    ['deploy/docker-compose.multi-gpu.yml', `      file: ${up}/docker-compose.yml`],
    ['gateway/test/x.test.ts', `rmSync(join(dataDirectory, '${up}', '${up}'))`],
    ['python-workers/tests/x.py', `for relative in ["${up}/x", "unet/${up}/${up}/x"]:`],
  ])('lets a path that stays inside pass in %s: %s', (file, text) => {
    expect(outsidePaths(file, text)).toEqual([]);
  });
});
