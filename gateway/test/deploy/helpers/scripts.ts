import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { DEPLOYMENT_SECRETS } from './deployment.js';
import { repoPath } from './repo.js';

export interface ScriptResult {
  status: number | null;
  stdout: string;
  stderr: string;
  output: string;
}

/** Run one of deploy/*.sh without a terminal, as CI or cron would. */
export function runScript(script: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 120_000): ScriptResult {
  const result = spawnSync(repoPath(script), args, { env, encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr, output: `${result.stdout}${result.stderr}` };
}

/**
 * A PATH like this machine's without some commands: a folder of links to
 * every executable on PATH except the `without` ones (so a test can run on
 * "a machine without Docker" even where Docker is installed).
 */
export function pathWithout(dir: string, without: RegExp): string {
  mkdirSync(dir, { recursive: true });
  const seen = new Set<string>();
  for (const folder of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
    let entries: string[];
    try {
      entries = readdirSync(folder);
    } catch {
      continue;
    }
    for (const name of entries) {
      if (seen.has(name) || without.test(name)) continue;
      try {
        if (!statSync(join(folder, name)).isFile()) continue;
      } catch {
        continue;
      }
      seen.add(name);
      symlinkSync(join(folder, name), join(dir, name));
    }
  }
  return dir;
}

/** A complete deployment .env (what deploy/generate-secrets.sh leaves), plus `extra` lines. */
export function writeEnvFile(path: string, extra: Record<string, string> = {}): string {
  const values = { ...DEPLOYMENT_SECRETS, ADMIN_API_KEY: 'a'.repeat(40), ...extra };
  writeFileSync(path, Object.entries(values).map(([k, v]) => `${k}=${v}`).join('\n') + '\n');
  chmodSync(path, 0o600);
  return path;
}

/**
 * A stand-in for the docker CLI that records every call (one line each in
 * DOCKER_STUB_LOG, with the COMPOSE_FILE it saw) and answers what the deploy
 * scripts ask: versions, the compose model's images and services, a running
 * postgres, dumps. `docker run ... tar -czf /backup/X` writes an empty X into
 * the folder mounted at /backup.
 */
export function writeDockerStub(binDir: string): string {
  mkdirSync(binDir, { recursive: true });
  const path = join(binDir, 'docker');
  writeFileSync(
    path,
    `#!/usr/bin/env bash
printf '%s | COMPOSE_FILE=%s\\n' "$*" "\${COMPOSE_FILE:-}" >>"$DOCKER_STUB_LOG"
args=" $* "
case "$1" in
  version) echo 27.3.1 ;;
  info) echo '{"runc":{"path":"runc"}}' ;;
  run)
    backup=""
    previous=""
    for arg in "$@"; do
      if [ "$previous" = -v ] && [[ "$arg" == *:/backup ]]; then backup=\${arg%:/backup}; fi
      previous=$arg
    done
    if [[ "$args" == *" -czf /backup/"* ]]; then
      name=\${args##* -czf /backup/}
      name=\${name%% *}
      tar -czf "$backup/$name" -T /dev/null
    fi
    ;;
  compose)
    case "$args" in
      *" version --short "*) echo 2.29.7 ;;
      *" config --images "*) printf '%s\\n' device-operations/gateway:latest device-operations/worker:latest device-operations/nginx-exporter:latest postgres:17-alpine ;;
      *" config --services "*) printf '%s\\n' gateway worker postgres redis nginx ;;
      *" ps --status running --quiet postgres "*) echo 0123abcd ;;
      *" exec -T postgres "*pg_dump*) printf 'PGDMP-stub' ;;
      *" exec -T postgres "*pg_basebackup*) printf 'base-stub' | gzip ;;
      *" exec -T postgres "*pg_restore*) cat >/dev/null ;;
    esac
    ;;
esac
exit 0
`,
  );
  chmodSync(path, 0o755);
  return path;
}
