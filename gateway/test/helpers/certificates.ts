import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** PEM file paths of a throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate. */
export interface Certificates {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

const CA_EXTENSIONS = 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n';
const leafExtensions = (usage: string, extra = '') =>
  `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=${usage}\n` +
  `subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n${extra}`;

const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 });

function keyAndRequest(dir: string, name: string): { key: string; request: string } {
  const key = join(dir, `${name}.key`);
  const request = join(dir, `${name}.csr`);
  openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key);
  openssl('req', '-new', '-key', key, '-subj', `/CN=device-ops-test-${name}`, '-out', request);
  return { key, request };
}

function sign(dir: string, name: string, extensions: string, issuer?: { cert: string; key: string }) {
  const { key, request } = keyAndRequest(dir, name);
  const extFile = join(dir, `${name}.ext`);
  writeFileSync(extFile, extensions);
  const cert = join(dir, `${name}.pem`);
  const by = issuer
    ? ['-CA', issuer.cert, '-CAkey', issuer.key, '-set_serial', `0x${randomBytes(8).toString('hex')}`]
    : ['-signkey', key];
  openssl('x509', '-req', '-in', request, ...by, '-days', '2', '-extfile', extFile, '-out', cert);
  return { cert, key };
}

/** Made with the openssl CLI into `dir` (EC P-256, valid two days). */
export function makeCertificates(dir: string): Certificates {
  mkdirSync(dir, { recursive: true });
  const ca = sign(dir, 'ca', CA_EXTENSIONS);
  const server = sign(dir, 'server', leafExtensions('serverAuth', 'subjectAltName=IP:127.0.0.1,DNS:localhost\n'), ca);
  const client = sign(dir, 'client', leafExtensions('clientAuth'), ca);
  return { ca: ca.cert, serverCert: server.cert, serverKey: server.key, clientCert: client.cert, clientKey: client.key };
}
