import type { Request } from 'express';
import { ipKeyGenerator } from 'express-rate-limit';

const IPV4_MAPPED = '::ffff:';

/**
 * The rate-limit key of a request's client address: `req.ip` as Express
 * computes it, so it honours the app's `trust proxy` setting (with the
 * default `false` it is the TCP peer, and a client-sent X-Forwarded-For
 * changes nothing).
 *
 * This runs on every request, so the common cases take no parsing: IPv4 as
 * is, and IPv4-mapped IPv6 (what a dual-stack listener reports for IPv4
 * clients) as the IPv4 address it carries. Other IPv6 addresses are grouped
 * by /56 with express-rate-limit's own helper, since one subscriber usually
 * holds a whole prefix and could otherwise rotate addresses to dodge the limit.
 */
export function clientAddressKey(req: Request): string {
  // Express leaves req.ip undefined once the socket is gone.
  return addressKey(req.ip);
}

/** The rate-limit key of a client address, however the front found it (req.ip, a gRPC peer). */
export function addressKey(ip: string | undefined): string {
  if (ip === undefined || ip === '') return 'unknown';
  if (!ip.includes(':')) return ip;
  if (ip.startsWith(IPV4_MAPPED) && ip.includes('.')) return ip.slice(IPV4_MAPPED.length);
  return ipKeyGenerator(ip, 56);
}
