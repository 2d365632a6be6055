import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';

/**
 * HTTP(S) requests as an outside client would send them to NGINX, with what
 * fetch() cannot do: trust a self-signed certificate, pick the local address
 * (127.0.0.x: a different client for per-address limits and
 * X-Forwarded-For), see repeated headers (rawHeaders), and Expect: 100-continue.
 */
export interface EdgeRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  ca?: Buffer;
  localAddress?: string;
  /** Send the headers with Expect: 100-continue and no body; resolve on 100 or a final answer. */
  expectContinue?: boolean;
}

export interface EdgeResponse {
  status: number;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
  body: string;
}

/** The response as it starts, for streams. */
export function openRequest(url: string, options: EdgeRequest = {}): Promise<IncomingMessage & { continued?: boolean }> {
  const target = new URL(url);
  const request = target.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(
      target,
      {
        method: options.method ?? 'GET',
        headers: { ...(options.expectContinue ? { expect: '100-continue' } : {}), ...options.headers },
        agent: false,
        ...(options.ca ? { ca: options.ca } : {}),
        ...(options.localAddress ? { localAddress: options.localAddress } : {}),
      },
      resolve,
    );
    req.on('error', reject);
    if (options.expectContinue) {
      req.on('continue', () => {
        // The server would take the body: report it, and send none.
        const fake = Object.assign(Object.create(null) as IncomingMessage, { statusCode: 100, continued: true });
        req.destroy();
        resolve(fake);
      });
      req.flushHeaders();
      return;
    }
    req.end(options.body);
  });
}

export async function edgeRequest(url: string, options: EdgeRequest = {}): Promise<EdgeResponse> {
  const response = await openRequest(url, options);
  if (response.continued) return { status: 100, headers: {}, rawHeaders: [], body: '' };
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  return { status: response.statusCode!, headers: response.headers, rawHeaders: response.rawHeaders, body: Buffer.concat(chunks).toString('utf8') };
}

/** How many times a header appears (rawHeaders keeps repeats apart). */
export const headerCount = (response: EdgeResponse, name: string) =>
  response.rawHeaders.filter((value, i) => i % 2 === 0 && value.toLowerCase() === name.toLowerCase()).length;
