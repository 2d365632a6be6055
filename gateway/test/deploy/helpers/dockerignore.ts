import { readFileSync } from 'node:fs';
import { posix } from 'node:path';

/**
 * .dockerignore matching as Docker's builder does it (moby/patternmatcher):
 * patterns are cleaned paths relative to the context root with `*`, `?`,
 * `[...]` and `**`; a leading `!` re-includes. A file is left out when the
 * last pattern that matches it, or any folder above it, is not a `!` one.
 */
interface Pattern {
  regex: RegExp;
  exclusion: boolean;
  source: string;
}

function toRegex(pattern: string): RegExp {
  let out = '^';
  for (let i = 0; i < pattern.length; i += 1) {
    const char = pattern[i]!;
    if (char === '*') {
      if (pattern[i + 1] === '*') {
        i += 1;
        // `**/` also matches nothing at all.
        if (pattern[i + 1] === '/') {
          i += 1;
          out += '(?:.*/)?';
        } else {
          out += '.*';
        }
      } else {
        out += '[^/]*';
      }
    } else if (char === '?') {
      out += '[^/]';
    } else if (char === '[') {
      const end = pattern.indexOf(']', i);
      out += pattern.slice(i, end + 1).replace(/^\[!/, '[^');
      i = end;
    } else if (char === '\\') {
      i += 1;
      out += `\\${pattern[i] ?? ''}`;
    } else {
      out += /[.+^${}()|]/.test(char) ? `\\${char}` : char;
    }
  }
  return new RegExp(`${out}$`);
}

export function readDockerignore(file: string): Pattern[] {
  return readFileSync(file, 'utf8')
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const exclusion = line.startsWith('!');
      const cleaned = posix.normalize(exclusion ? line.slice(1).trim() : line).replace(/^\/+|\/+$/g, '');
      return { regex: toRegex(cleaned), exclusion, source: line };
    });
}

/** Whether `path` (relative to the context, with /) is sent to the builder. */
export function isIncluded(patterns: Pattern[], path: string): boolean {
  const parts = path.split('/');
  const candidates = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
  let excluded = false;
  for (const pattern of patterns) {
    if (candidates.some((candidate) => pattern.regex.test(candidate))) excluded = !pattern.exclusion;
  }
  return !excluded;
}
