import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join } from 'node:path';

const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8' };

export interface StaticSite {
  /** The page's origin, as the browser sends it in Origin. */
  origin: string;
  close(): Promise<void>;
}

/** The files of one folder on their own loopback origin: a web app served apart from the gateway. */
export async function serveStaticSite(folder: string): Promise<StaticSite> {
  const server: Server = createServer((req, res) => {
    const name = new URL(req.url ?? '/', 'http://site').pathname.replace(/^\/+/, '') || 'index.html';
    if (name.includes('/') || name.startsWith('.')) {
      res.writeHead(404).end();
      return;
    }
    readFile(join(folder, name)).then(
      (content) => res.writeHead(200, { 'content-type': TYPES[extname(name)] ?? 'application/octet-stream', 'cache-control': 'no-store' }).end(content),
      () => res.writeHead(404).end(),
    );
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
