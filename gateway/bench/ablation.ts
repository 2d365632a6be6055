/**
 * Layer ablation (gateway-bench.ts, BENCH_ONLY=ablation): what each layer of
 * an authenticated relayed request costs. The gateway's CPU per request of
 * GET /api/device/list (JWT) with every layer, and without each layer of
 * src/ablation/layers.ts in turn; the difference is that layer's cost, and
 * what the layers do not account for is "what remains". Beside them the
 * floor: Express 5 with no middleware relaying ListDevices to the same
 * worker (floor-server.ts), in its own process.
 *
 * The gateway variants run in one process (ablation-server.ts says why),
 * pinned to the gateway's core like the floor's. After a warm-up, each
 * round measures, a second each: all layers, a variant, all layers, the
 * next variant, …, all layers (the floor is one of the variants; the order
 * is reversed every other round). Each variant's sample is taken as a
 * fraction of the two all-layers samples either side of it, so that a
 * slowdown of the machine lasting seconds (another process on the core)
 * cancels out; the median fraction over the rounds, times the median of all
 * the all-layers samples, is its figure, and all layers minus that is the
 * layer's cost. The CPU both processes spend idle (their timers) is measured
 * first and taken off every sample. How much successive all-layers samples
 * differ, and the figures of the layers this request never passes through,
 * show how small a cost the run can tell from zero.
 */
import autocannon from 'autocannon';
import { LAYER_NAMES, type LayerName } from '../src/ablation/layers.js';
import { cpuMicros, sleep } from './fault-report-lib.js';

export const ABLATION_PATH = '/api/device/list';

/** Servers under measurement in one process: `urls` by variant name. */
export interface MeasuredProcess {
  pid: number;
  urls: Record<string, string>;
  stop(): Promise<void>;
}

export interface AblationLauncher {
  /** ablation-server.ts: "all" and one variant per layer. */
  gateways(): Promise<MeasuredProcess>;
  /** floor-server.ts, its one url named "floor". */
  floor(): Promise<MeasuredProcess>;
}

/**
 * Layers a GET with no params, query or body never passes through: the
 * route declares no request schema (no body parser, no validator) and the
 * problem writer runs on errors only. Their figures show the noise, and are
 * left out of what the layers account for.
 */
export const OFF_PATH: ReadonlySet<LayerName> = new Set(['body-parsing', 'validation', 'problem-writer']);

export interface LayerCost {
  layer: LayerName;
  withoutMicros: number;
  /** allMicros − withoutMicros. */
  costMicros: number;
}

export interface AblationResult {
  path: string;
  rounds: number;
  secondsPerSample: number;
  /** Median of every all-layers sample. */
  allMicros: number;
  /** Median change from one all-layers sample to the next, as µs at allMicros: costs below it are noise. */
  noiseMicros: number;
  floorMicros: number;
  layers: LayerCost[];
  /** allMicros minus the costs of the layers on the path: Node's HTTP, Express's routing, the response, and what no layer owns. */
  remainingMicros: number;
  /** µs per second each process spent idle, taken off the samples. */
  idleMicrosPerSecond: { gateways: number; floor: number };
  /** Every sample, by variant, in round order. */
  samples: Record<string, number[]>;
}

interface Target {
  name: 'all' | LayerName | 'floor';
  url: string;
  pid: number;
  /** Idle CPU of its process, µs per second. */
  idle: number;
  samples: number[];
  /** Each sample ÷ the mean of the all-layers samples either side of it. */
  fractions: number[];
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};

/** Gateway CPU per request under load at 10 connections, for `seconds` or for `amount` requests, less its idle CPU. */
async function cpuPerRequest(target: Target, headers: Record<string, string>, length: { seconds: number } | { amount: number }): Promise<number> {
  const before = cpuMicros(target.pid);
  const started = performance.now();
  const url = `${target.url}${ABLATION_PATH}`;
  const result = await autocannon({ url, headers, connections: 10, ...('seconds' in length ? { duration: length.seconds } : { amount: length.amount }) });
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${target.name}: ${result.non2xx} non-2xx responses, ${result.errors} errors`);
  const idle = (target.idle * (performance.now() - started)) / 1000;
  return (cpuMicros(target.pid) - before - idle) / result['2xx'];
}

/** CPU a process spends with no requests, µs per second. */
async function idleCpu(pid: number, seconds: number): Promise<number> {
  const before = cpuMicros(pid);
  await sleep(seconds * 1000);
  return (cpuMicros(pid) - before) / seconds;
}

/** The answer's top-level fields: a removed layer must leave the response as it was. */
async function shapeOf(target: Target, headers: Record<string, string>): Promise<string> {
  const response = await fetch(`${target.url}${ABLATION_PATH}`, { headers });
  if (response.status !== 200) throw new Error(`${target.name}: ${ABLATION_PATH} answered ${response.status}: ${await response.text()}`);
  return Object.keys((await response.json()) as object).sort().join(', ');
}

/** One round: all layers, then each variant followed by all layers again; returns the all-layers samples. */
async function round(all: Target, variants: Target[], sample: (target: Target) => Promise<number>): Promise<number[]> {
  const around = [await sample(all)];
  for (const variant of variants) {
    const own = await sample(variant);
    around.push(await sample(all));
    variant.samples.push(own);
    variant.fractions.push(own / ((around.at(-2)! + around.at(-1)!) / 2));
  }
  return around;
}

export async function layerAblation(
  launch: AblationLauncher,
  headers: Record<string, string>,
  { rounds = 5, secondsPerSample = 1, warmUpRequests = 6000 } = {},
): Promise<AblationResult> {
  const since = performance.now();
  const progress = (what: string) => process.stderr.write(`layer ablation: ${what} after ${((performance.now() - since) / 1000).toFixed(0)} s\n`);
  const started = await Promise.allSettled([launch.gateways(), launch.floor()]);
  const running = started.flatMap((outcome) => (outcome.status === 'fulfilled' ? [outcome.value] : []));
  try {
    const failed = started.find((outcome) => outcome.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    const [gateways, floor] = running as [MeasuredProcess, MeasuredProcess];
    progress('processes up');
    const target = (name: Target['name'], owner: MeasuredProcess): Target => ({ name, url: owner.urls[name]!, pid: owner.pid, idle: 0, samples: [], fractions: [] });
    const all = target('all', gateways);
    const variants = [...LAYER_NAMES.map((layer) => target(layer, gateways)), target('floor', floor)];
    const expected = await shapeOf(all, headers);
    for (const variant of variants.slice(0, -1)) {
      const shape = await shapeOf(variant, headers);
      if (shape !== expected) throw new Error(`without ${variant.name} the answer has ${shape}, not ${expected}`);
    }
    // The gateway process's shared code warms up on the first variant; each other needs only its own few functions warmed.
    for (const each of [all, ...variants]) {
      await cpuPerRequest(each, headers, { amount: each === all || each.name === 'floor' ? warmUpRequests : warmUpRequests / 6 });
    }
    const idle = { gateways: await idleCpu(gateways.pid, 3), floor: await idleCpu(floor.pid, 3) };
    for (const each of [all, ...variants]) each.idle = each.name === 'floor' ? idle.floor : idle.gateways;
    progress('warmed up');
    const sample = (each: Target) => cpuPerRequest(each, headers, { seconds: secondsPerSample });
    const steps: number[] = [];
    for (let r = 0; r < rounds; r += 1) {
      const around = await round(all, r % 2 === 0 ? variants : [...variants].reverse(), sample);
      all.samples.push(...around);
      steps.push(...around.slice(1).map((value, i) => Math.abs(value / around[i]! - 1)));
    }
    progress(`${rounds} rounds done`);
    const allMicros = median(all.samples);
    const figureOf = (variant: Target) => allMicros * median(variant.fractions);
    const layers = variants.slice(0, -1).map((variant) => {
      const withoutMicros = figureOf(variant);
      return { layer: variant.name as LayerName, withoutMicros, costMicros: allMicros - withoutMicros };
    });
    return {
      path: ABLATION_PATH,
      rounds,
      secondsPerSample,
      allMicros,
      noiseMicros: allMicros * median(steps),
      floorMicros: figureOf(variants.at(-1)!),
      layers,
      remainingMicros: allMicros - layers.reduce((sum, l) => sum + (OFF_PATH.has(l.layer) ? 0 : l.costMicros), 0),
      idleMicrosPerSecond: idle,
      samples: Object.fromEntries([all, ...variants].map((each) => [each.name, each.samples.map((v) => Math.round(v))])),
    };
  } finally {
    await Promise.all(running.map((owner) => owner.stop()));
  }
}

/** The gateway against the floor, measured by turns in the same rounds. */
export const floorRatio = (result: AblationResult) => result.allMicros / result.floorMicros;

/** The ablation as table rows: layer, µs with all layers, µs without it, its cost. */
export function ablationRows(result: AblationResult): [string, string, string, string][] {
  const us = (value: number) => value.toFixed(0);
  return [
    ...result.layers.map(({ layer, withoutMicros, costMicros }): [string, string, string, string] => [
      OFF_PATH.has(layer) ? `${layer} (not on this path: noise)` : layer,
      us(result.allMicros),
      us(withoutMicros),
      us(costMicros),
    ]),
    ['what remains (all layers − costs on the path)', us(result.allMicros), '', us(result.remainingMicros)],
    ['floor: Express 5 + grpc-js relay, no middleware', '', us(result.floorMicros), ''],
    ['all layers ÷ floor', '', '', `${floorRatio(result).toFixed(2)}×`],
  ];
}

const HEADINGS = ['layer removed', 'all layers (µs)', 'without it (µs)', 'its cost (µs)'] as const;

function caption(result: AblationResult): string {
  return (
    `Layer ablation: CPU µs per request of GET ${result.path} (JWT), 10 connections, the gateway variants in one process and the ` +
    `floor in another, both on the gateway's core; ${result.rounds} rounds of ${result.secondsPerSample} s samples, each variant ` +
    `between two all-layers samples; idle CPU (${result.idleMicrosPerSecond.gateways.toFixed(0)} and ` +
    `${result.idleMicrosPerSecond.floor.toFixed(0)} µs/s) taken off. Successive all-layers samples differed by a median ` +
    `${result.noiseMicros.toFixed(0)} µs: costs much below that are not told from zero`
  );
}

/** For the console. */
export function ablationText(result: AblationResult): string {
  const rows = [HEADINGS, ...ablationRows(result)];
  return [caption(result), ...rows.map(([name, all, without, cost]) => `${name.padEnd(48)}${all.padStart(16)}${without.padStart(16)}${cost.padStart(14)}`)].join('\n');
}

/** For RESULTS.md, under the run's table. */
export function ablationMarkdown(result: AblationResult): string {
  return [
    `${caption(result)}:`,
    '',
    `| ${HEADINGS.join(' | ')} |`,
    '| --- | --- | --- | --- |',
    ...ablationRows(result).map((row) => `| ${row.join(' | ')} |`),
  ].join('\n');
}
