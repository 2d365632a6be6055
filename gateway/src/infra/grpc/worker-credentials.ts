import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { ConfigError, type Config } from '../../config/config.js';

/**
 * How the gateway proves itself to a worker (a bearer token in metadata,
 * a client certificate) and checks it reached the right worker (TLS against
 * a CA). Workers accept calls only from their gateway.
 */
export interface WorkerChannelSecurity {
  /** TLS or plaintext; plaintext by default. */
  credentials: grpc.ChannelCredentials;
  /** Sent as `authorization: Bearer <token>` on every call; never logged. */
  token: string | undefined;
  /** Extra channel options, e.g. the host name to verify when connecting to a resolved address. */
  channelOptions?: grpc.ChannelOptions;
}

export const PLAINTEXT_CHANNEL: WorkerChannelSecurity = Object.freeze({
  credentials: grpc.credentials.createInsecure(),
  token: undefined,
});

/**
 * Local workers: plaintext on loopback with a fresh random token per gateway
 * process, handed to each child in its environment (never argv, which `ps`
 * shows), so even on loopback a local worker answers only its gateway.
 */
export function localWorkerChannel(): WorkerChannelSecurity {
  return { credentials: grpc.credentials.createInsecure(), token: randomBytes(32).toString('base64url') };
}

type RemoteSettings = Pick<Config, 'workerToken' | 'workerTlsCa' | 'workerTlsCert' | 'workerTlsKey'>;

/** Remote workers: WORKER_TOKEN, and TLS when WORKER_TLS_CA is set (mutual with WORKER_TLS_CERT/KEY). */
export function remoteWorkerChannel(config: RemoteSettings): WorkerChannelSecurity {
  if (config.workerTlsCa === undefined) {
    return { credentials: grpc.credentials.createInsecure(), token: config.workerToken };
  }
  const credentials = grpc.credentials.createSsl(
    readPem('WORKER_TLS_CA', config.workerTlsCa),
    config.workerTlsKey === undefined ? null : readPem('WORKER_TLS_KEY', config.workerTlsKey),
    config.workerTlsCert === undefined ? null : readPem('WORKER_TLS_CERT', config.workerTlsCert),
  );
  return { credentials, token: config.workerToken };
}

/** Read at startup so a wrong path is one line naming the setting, not a failed handshake later. */
function readPem(setting: string, path: string): Buffer {
  let pem: Buffer;
  try {
    pem = readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new ConfigError([`${setting} cannot be read (${code}): ${path}`]);
  }
  if (!pem.includes('-----BEGIN ')) throw new ConfigError([`${setting} must be a PEM file: ${path}`]);
  return pem;
}
