/**
 * The real gateway once with every layer and once more without each layer
 * of src/ablation/layers.ts, all in this one process, each on its own port,
 * for the layer ablation of gateway-bench.ts only. Each variant is what
 * startGateway builds (config, database, worker channel, limits, app, HTTP
 * and gRPC servers), from the same environment as gateway/dist/server.js,
 * with its own data directory. Names on the command line: only those
 * variants ("all" for the one with every layer).
 *
 * Why one process: the variants then share one warmed-up JIT and one heap,
 * so only the layer differs between them. As separate processes they did
 * not compare: each needed thousands of requests to warm up, and two
 * identical gateways measured by turns differed by 100 µs per request.
 *
 *   node --import tsx gateway/bench/ablation-server.ts [all] [helmet] …
 */
import { join } from 'node:path';
import { isLayerName, LAYER_NAMES, type LayerName } from '../src/ablation/layers.js';
import { startGateway, type RunningGateway } from '../src/main.js';

const names = process.argv.length > 2 ? process.argv.slice(2) : ['all', ...LAYER_NAMES];
const unknown = names.filter((name) => name !== 'all' && !isLayerName(name));
if (unknown.length > 0) {
  process.stderr.write(`ablation-server: unknown layer ${unknown.join(', ')}; the layers are ${LAYER_NAMES.join(', ')}\n`);
  process.exit(2);
}
const dataDirectory = process.env.DATA_DIRECTORY ?? 'var/ablation';
const gateways = new Map<string, RunningGateway>();
for (const name of names) {
  const env = { ...process.env, DATA_DIRECTORY: join(dataDirectory, name) };
  gateways.set(name, await startGateway(env, { ablate: new Set(name === 'all' ? [] : [name as LayerName]) }));
}
// The line the bench waits for: where each variant listens.
const urls = Object.fromEntries([...gateways].map(([name, gateway]) => [name, gateway.url]));
console.log(JSON.stringify({ message: 'ablation listening', urls }));

process.once('SIGTERM', () => {
  void Promise.all([...gateways.values()].map((gateway) => gateway.close())).then(
    () => process.exit(0),
    (error: unknown) => {
      process.stderr.write(`ablation-server: ${String(error)}\n`);
      process.exit(1);
    },
  );
});
