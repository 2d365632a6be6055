import { ServiceUnavailableError, TooManyRequestsError } from '../../errors/gateway-error.js';

export interface StreamLimits {
  /** Open event streams one principal may hold (MAX_SSE_STREAMS_PER_PRINCIPAL). */
  perPrincipal: number;
  /** Open event streams in this process (MAX_SSE_STREAMS). */
  total: number;
}

/**
 * Caps on open Server-Sent Event streams, checked before a stream (or the
 * job behind it) starts: one principal holding too many gets 429 — its own
 * limit — and a full process gets 503 with Retry-After, the capacity answer.
 */
export class StreamAdmission {
  private total = 0;
  private readonly byPrincipal = new Map<string, number>();

  constructor(private readonly limits: StreamLimits) {}

  get open(): number {
    return this.total;
  }

  /** Take a slot, or throw; call the returned function once when the stream ends. */
  admit(principalId: string): () => void {
    const mine = this.byPrincipal.get(principalId) ?? 0;
    if (mine >= this.limits.perPrincipal) {
      throw new TooManyRequestsError(
        `You already have ${mine} open event streams, the limit per client; close one first.`,
        5,
        'sse-streams',
      );
    }
    if (this.total >= this.limits.total) {
      throw new ServiceUnavailableError(
        `The gateway holds ${this.total} open event streams, its limit; retry shortly.`,
        5,
        'sse-streams',
      );
    }
    this.total += 1;
    this.byPrincipal.set(principalId, mine + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.total -= 1;
      const left = (this.byPrincipal.get(principalId) ?? 1) - 1;
      if (left <= 0) this.byPrincipal.delete(principalId);
      else this.byPrincipal.set(principalId, left);
    };
  }
}
