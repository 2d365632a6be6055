import proxyaddr from 'proxy-addr';

/**
 * A gRPC caller's address as Express computes req.ip for the same
 * TRUST_PROXY: the TCP peer, or — through trusted proxies only — the
 * address X-Forwarded-For names (NGINX's internal gRPC listener sets it).
 */
export function clientAddressResolver(trustProxy: boolean | number | readonly string[]): (peer: string, forwardedFor: string | undefined) => string {
  const trust =
    trustProxy === true
      ? () => true
      : trustProxy === false
        ? () => false
        : typeof trustProxy === 'number'
          ? (_address: string, hop: number) => hop < trustProxy
          : proxyaddr.compile([...trustProxy]);
  return (peer, forwardedFor) => {
    const socketAddress = peerAddress(peer);
    if (trustProxy === false) return socketAddress;
    const req = { headers: forwardedFor ? { 'x-forwarded-for': forwardedFor } : {}, socket: { remoteAddress: socketAddress } };
    return proxyaddr(req as unknown as Parameters<typeof proxyaddr>[0], trust);
  };
}

/** grpc-js peers: "127.0.0.1:5000", "[::1]:5000", "ipv4:…" / "ipv6:[…]:…" forms, or a unix socket. */
export function peerAddress(peer: string): string {
  const bare = peer.replace(/^ipv[46]:/, '');
  if (bare.startsWith('[')) return bare.slice(1, bare.indexOf(']'));
  const colon = bare.lastIndexOf(':');
  return colon > 0 && bare.indexOf(':') === colon ? bare.slice(0, colon) : bare;
}
