import { spawnSync } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { describe, expect, it } from 'vitest';
import { filesUnder, repoPath } from './helpers/repo.js';
import { requireTool } from '../helpers/tools.js';

/** Every shell script of the deployment passes shellcheck (with the files it sources) and bash -n. */
const shellcheck = requireTool('shellcheck', 'apt-get install shellcheck');
const scripts = [...filesUnder('deploy', (name) => name.endsWith('.sh')), ...filesUnder('nginx', (name) => name.endsWith('.sh'))];
// Run directly; the others (deploy/lib/) are sourced.
const entryPoints = scripts.filter((script) => !script.includes('/lib/'));

describe('deployment shell scripts', () => {
  it('are all found', () => {
    expect(entryPoints).toEqual(
      expect.arrayContaining([
        'deploy/backup.sh',
        'deploy/deploy.sh',
        'deploy/generate-secrets.sh',
        'deploy/restore.sh',
        'deploy/rollback.sh',
        'nginx/scripts/make-self-signed-cert.sh',
        'nginx/scripts/render-config.sh',
      ]),
    );
  });

  it.skipIf(!shellcheck).each(scripts)('%s passes shellcheck', (script) => {
    const result = spawnSync(shellcheck!, ['--external-sources', '--source-path=SCRIPTDIR', '--severity=style', script], {
      cwd: dirname(repoPath(script)) === repoPath() ? repoPath() : repoPath(),
      encoding: 'utf8',
    });
    expect(result.stdout + result.stderr).toBe('');
    expect(result.status).toBe(0);
  });

  it.each(entryPoints)('%s is executable bash in strict mode, parses, and answers --help', (script) => {
    accessSync(repoPath(script), constants.X_OK);
    const text = readFileSync(repoPath(script), 'utf8');
    expect(text.startsWith('#!/usr/bin/env bash\n')).toBe(true);
    expect(text).toContain('set -euo pipefail');
    expect(spawnSync('bash', ['-n', repoPath(script)]).status).toBe(0);
    if (script.endsWith('render-config.sh')) return; // takes an output folder, nothing else
    const help = spawnSync(repoPath(script), ['--help'], { encoding: 'utf8', env: { PATH: process.env.PATH } });
    expect(help.status, help.stderr).toBe(0);
    expect(help.stdout.length).toBeGreaterThan(100);
  });
});
