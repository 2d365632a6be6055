import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { freePort } from '../../helpers/servers.js';

export interface RunningNodeExporter {
  /** host:port, as a scrape target. */
  target: string;
  stop(): Promise<void>;
}

/**
 * Debian's prometheus-node-exporter on a free loopback port, with only the
 * memory collector: the host-memory rollback trigger reads it, as it reads
 * the node exporter of the compose stack.
 */
export async function startNodeExporter(binary: string): Promise<RunningNodeExporter> {
  const port = await freePort();
  const target = `127.0.0.1:${port}`;
  const child = spawn(binary, [`--web.listen-address=${target}`, '--collector.disable-defaults', '--collector.meminfo'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let output = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-2000);
  });
  const kill = () => child.kill('SIGKILL');
  process.once('exit', kill);
  const stop = async () => {
    process.off('exit', kill);
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    await exited;
  };
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) break;
    try {
      if ((await fetch(`http://${target}/metrics`)).ok) return { target, stop };
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await stop();
  throw new Error(`prometheus-node-exporter did not answer on ${target}: ${output}`);
}
