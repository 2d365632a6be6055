export interface SseEvent {
  id: string | null;
  event: string;
  data: unknown;
}

/**
 * Read Server-Sent Events from a fetch response as a browser EventSource
 * would: `stop` decides after each event whether to stop reading (the
 * connection is then aborted); otherwise reads to the end of the stream.
 */
export async function readSse(
  response: Response,
  stop: (event: SseEvent, all: SseEvent[]) => boolean = () => false,
  abort?: AbortController,
): Promise<SseEvent[]> {
  const events: SseEvent[] = [];
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let boundary: number;
    while ((boundary = buffer.indexOf('\n\n')) >= 0) {
      const frame = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary + 2);
      const event = parseFrame(frame);
      if (!event) continue;
      events.push(event);
      if (stop(event, events)) {
        abort?.abort();
        await reader.cancel().catch(() => {});
        return events;
      }
    }
  }
  return events;
}

function parseFrame(frame: string): SseEvent | null {
  let id: string | null = null;
  let event = 'message';
  const data: string[] = [];
  for (const line of frame.split('\n')) {
    if (line.startsWith(':') || line.startsWith('retry:')) continue;
    const [field, ...rest] = line.split(':');
    const value = rest.join(':').replace(/^ /, '');
    if (field === 'id') id = value;
    else if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (data.length === 0) return null;
  return { id, event, data: JSON.parse(data.join('\n')) };
}
