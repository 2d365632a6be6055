/** Sample values of one metric in Prometheus text, by their label set. */
export function samples(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  return text
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `))
    .map((line) => {
      const labels: Record<string, string> = {};
      for (const [, key, value] of line.matchAll(/(\w+)="([^"]*)"/g)) labels[key!] = value!;
      return { labels, value: Number(line.slice(line.lastIndexOf(' ') + 1)) };
    });
}

/**
 * One metric as a gateway's /metrics shows it now: the sample whose labels
 * are exactly `labels` (`'{reason="x"}'`, or '' for an unlabelled metric), or
 * NaN when there is none.
 */
export async function metric(url: string, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line ? Number(line.split(' ').at(-1)) : Number.NaN;
}

/** The sum of every sample of one metric (0 when it has none yet). */
export async function metricTotal(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return samples(text, name).reduce((sum, sample) => sum + sample.value, 0);
}
