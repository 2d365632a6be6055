import { posix } from 'node:path';

/**
 * Static search for paths a tracked file would read outside the repository:
 * a user's clone is the repository alone, so anything beside it (such as a
 * `shared` folder some machines have) or above it is not there.
 *
 * What counts, from the text of one file:
 * - the folder named "shared" beside the repository, in any spelling that
 *   reaches it (a relative path one level up into it, a join of '..' and
 *   that name, or a variable named after it as a root);
 * - absolute paths under the two top folders of the machines the project is
 *   developed on (see MACHINE_PATH);
 * - a relative path that climbs out of the repository: runs of `../` in the
 *   text (imports, links, compose `file:` entries), `join`/`resolve` calls
 *   with `'..'` arguments from the repository root or the file's own folder,
 *   `$(dirname "$0")/..` in shell, `Join-Path $PSScriptRoot '..'` in
 *   PowerShell, and `Path(__file__).parents[N]` / `.parent` in Python —
 *   each resolved from where it starts.
 * Paths from other bases (a temp folder, an installed package) are not judged.
 */
export interface OutsidePath {
  file: string;
  line: number;
  text: string;
  why: string;
}

type Base = 'file' | 'root';

interface Climb {
  index: number;
  base: Base;
  /** Path below the base, posix style, e.g. '../../x'. */
  path: string;
}

// Spelled in pieces, so that this file does not hold the text it looks for.
const SHARED = ['sha', 'red'].join('');
const BESIDE = new RegExp(`\\.\\.[\\\\/]+${SHARED}\\b|['"]\\.\\.['"]\\s*,\\s*['"]${SHARED}['"]|\\b${SHARED}Root\\b`, 'g');
const MACHINE_PATH = new RegExp(`(?<![\\w.\\-])/(?:${['wo', 'rk'].join('')}|${['fa', 'rm'].join('')})/`, 'g');

const ROOT_BASE = /^(repoRoot|REPO_ROOT|root|paths\.root|projectRoot)$/;
const FILE_BASE = /(__dirname|import\.meta\.(url|dirname)|\bhere\b|PSScriptRoot)/;

function climbs(text: string): Climb[] {
  const found: Climb[] = [];
  // A run of ../ at the start of a path: 'x/../' inside a path is not a climb from the file.
  for (const m of text.matchAll(/(?<![\w.\-/$}])((?:\.\.\/)+\.{0,2})/g)) {
    found.push({ index: m.index, base: 'file', path: m[1]! });
  }
  for (const m of text.matchAll(/\b(?:join|resolve)\(\s*([\w.$]+(?:\([^()]*\))?)\s*((?:,\s*['"]\.\.['"]\s*)+)/g)) {
    const base = m[1]!.trim();
    const ups = (m[2]!.match(/\.\./g) ?? []).length;
    const kind: Base | null = ROOT_BASE.test(base) ? 'root' : FILE_BASE.test(base) ? 'file' : null;
    if (kind) found.push({ index: m.index, base: kind, path: '../'.repeat(ups) });
  }
  for (const m of text.matchAll(/dirname\s+"?\$\{?(?:0|BASH_SOURCE\[0\])\}?"?\s*\)"?((?:\/\.\.)+)/g)) {
    found.push({ index: m.index, base: 'file', path: m[1]!.slice(1) });
  }
  for (const m of text.matchAll(/Join-Path\s+\$PSScriptRoot\s+['"]((?:\.\.[\\/]?)+)['"]/g)) {
    found.push({ index: m.index, base: 'file', path: m[1]!.replace(/\\/g, '/') });
  }
  for (const m of text.matchAll(/Path\(__file__\)(?:\.resolve\(\))?\.parents\[(\d+)\]/g)) {
    found.push({ index: m.index, base: 'file', path: '../'.repeat(Number(m[1])) });
  }
  for (const m of text.matchAll(/Path\(__file__\)(?:\.resolve\(\))?((?:\.parent)+)/g)) {
    const parents = (m[1]!.match(/\.parent/g) ?? []).length;
    found.push({ index: m.index, base: 'file', path: '../'.repeat(parents - 1) });
  }
  return found;
}

const lineOf = (text: string, index: number) => text.slice(0, index).split('\n').length;
const lineText = (text: string, line: number) => text.split('\n')[line - 1]!.trim().slice(0, 160);

/** Every path in `text` (the content of `file`, relative to the repository root) that leaves the repository. */
export function outsidePaths(file: string, text: string): OutsidePath[] {
  const out: OutsidePath[] = [];
  const report = (index: number, why: string) => {
    const line = lineOf(text, index);
    out.push({ file, line, text: lineText(text, line), why });
  };
  for (const m of text.matchAll(BESIDE)) report(m.index, 'reads the shared folder beside the repository');
  for (const m of text.matchAll(MACHINE_PATH)) report(m.index, "names a path of the developers' machines");
  const fileDir = posix.dirname(file);
  for (const climb of climbs(text)) {
    const start = climb.base === 'root' ? '.' : fileDir;
    const target = posix.normalize(posix.join(start, climb.path));
    if (target === '..' || target.startsWith('../')) {
      report(climb.index, `climbs out of the repository (${climb.path} from ${climb.base === 'root' ? 'the repository root' : start})`);
    }
  }
  return out;
}
