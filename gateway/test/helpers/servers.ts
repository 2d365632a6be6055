import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processExists } from './wait.js';

/** A loopback port nothing listens on (at the time of the call). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Folders of throwaway servers (named `<prefix>…` in the temp dir, with the
 * owning test process's pid in `ownerFile`) whose owner is gone: runs killed
 * outright had no teardown, so the caller stops their server and deletes them.
 */
export function abandonedServerFolders(prefix: string, ownerFile: string): string[] {
  const folders: string[] = [];
  for (const name of readdirSync(tmpdir()).filter((entry) => entry.startsWith(prefix))) {
    const folder = join(tmpdir(), name);
    let owner: number;
    try {
      owner = Number(readFileSync(join(folder, ownerFile), 'utf8'));
    } catch {
      continue; // not ours, or still being created
    }
    if (Number.isInteger(owner) && owner > 0 && !processExists(owner)) folders.push(folder);
  }
  return folders;
}

/**
 * Start a throwaway server (a machine binary), note its pid in `pidFile` for
 * killAbandonedServers, and resolve once `ready` does; if it does not, the
 * server is killed and the error carries the end of its output.
 */
export async function spawnServer(binary: string, args: string[], pidFile: string, ready: (server: ChildProcess) => Promise<void>): Promise<ChildProcess> {
  const server = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-4000);
  };
  server.stdout?.on('data', collect);
  server.stderr?.on('data', collect);
  if (server.pid) writeFileSync(pidFile, String(server.pid));
  try {
    await ready(server);
    return server;
  } catch (error) {
    server.kill('SIGKILL');
    throw new Error(`${(error as Error).message}\n${output}`);
  }
}

/**
 * Throwaway servers of test processes killed outright (a timed-out worker,
 * SIGKILL) had no teardown: SIGKILL each one whose pid, in `serverFile`,
 * still runs `binary` (the pid may have been reused since), and delete its folder.
 */
export function killAbandonedServers(prefix: string, ownerFile: string, serverFile: string, binary: string): void {
  for (const dir of abandonedServerFolders(prefix, ownerFile)) {
    let server = 0;
    try {
      server = Number(readFileSync(join(dir, serverFile), 'utf8'));
    } catch {
      // no server was started
    }
    if (Number.isInteger(server) && server > 0 && commandLine(server).includes(binary)) {
      try {
        process.kill(server, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}
