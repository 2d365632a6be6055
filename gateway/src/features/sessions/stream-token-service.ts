import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Config } from '../../config/config.js';
import type { Principal } from '../auth/principal.js';
import type { Session } from './session-types.js';

/** A stream token as handed to the session's owner. */
export interface StreamTokenGrant {
  token: string;
  expiresAt: Date;
}

export type StreamTokenOutcome = { principal: Principal } | { reason: string };

interface Payload {
  /** Session id. */
  s: string;
  /** Principal id of the owner it was issued to. */
  p: string;
  /** Expiry, Unix seconds. */
  e: number;
}

// The key is derived under this label, so the configured secret (often
// JWT_SECRET) is never used as is for a second purpose.
const KEY_LABEL = 'device-operations stream token v1';

/**
 * Short-lived, single-session, read-only tokens for browsers' EventSource,
 * which cannot send an Authorization header (ADR 0028): an HMAC over the
 * session id, the owner's principal id and the expiry, with a key every
 * replica derives from the same secret, so any replica verifies what any
 * other issued and nothing is stored.
 */
export class StreamTokenService {
  private readonly key: Buffer;

  constructor(
    secret: string,
    private readonly ttlSeconds: number,
    private readonly now: () => number = Date.now,
  ) {
    this.key = createHmac('sha256', secret).update(KEY_LABEL).digest();
  }

  /** The service of this configuration: STREAM_TOKEN_SECRET, else JWT_SECRET; null (tokens off) with neither. */
  static fromConfig(config: Config, now: () => number = Date.now): StreamTokenService | null {
    const secret = config.streamTokenSecret ?? config.jwtSecret;
    return secret === undefined ? null : new StreamTokenService(secret, config.streamTokenTtlSeconds, now);
  }

  /** A token for `sessionId`, standing for `principal` (the caller checks it owns the session). */
  issue(sessionId: string, principal: Principal): StreamTokenGrant {
    const expiry = Math.floor(this.now() / 1000) + this.ttlSeconds;
    const payload: Payload = { s: sessionId, p: principal.id, e: expiry };
    const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
    return { token: `${body}.${this.mac(body).toString('base64url')}`, expiresAt: new Date(expiry * 1000) };
  }

  /** A token for the session's owner only: null for anyone else (an admin reading another's session). */
  issueFor(session: Pick<Session, 'id' | 'owner'>, principal: Principal): StreamTokenGrant | null {
    return session.owner === principal.id ? this.issue(session.id, principal) : null;
  }

  /**
   * The owner a token stands for, when it is genuine, unexpired and was
   * issued for this very session; otherwise why not (for the log only).
   * The principal holds `inference` and nothing else.
   */
  verify(token: string, sessionId: string): StreamTokenOutcome {
    const [body, mac, extra] = token.split('.');
    if (!body || !mac || extra !== undefined) return { reason: 'malformed stream token' };
    // Compared as text: base64url decoding ignores trailing bits, which would let altered spellings of one MAC pass.
    const expected = Buffer.from(this.mac(body).toString('base64url'));
    const given = Buffer.from(mac);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { reason: 'invalid stream token signature' };
    const payload = parsePayload(body);
    if (!payload) return { reason: 'malformed stream token' };
    if (payload.e * 1000 <= this.now()) return { reason: 'stream token expired' };
    if (payload.s !== sessionId) return { reason: 'stream token is for another session' };
    return { principal: { id: payload.p, subject: payload.p, scopes: ['inference'], method: 'stream-token' } };
  }

  private mac(body: string): Buffer {
    return createHmac('sha256', this.key).update(body).digest();
  }
}

function parsePayload(body: string): Payload | null {
  try {
    const value = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as Partial<Payload>;
    if (typeof value.s !== 'string' || typeof value.p !== 'string' || typeof value.e !== 'number') return null;
    return value as Payload;
  } catch {
    return null;
  }
}
