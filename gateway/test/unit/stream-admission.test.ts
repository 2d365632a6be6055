import { describe, expect, it } from 'vitest';
import { ServiceUnavailableError, TooManyRequestsError } from '../../src/errors/gateway-error.js';
import { StreamAdmission } from '../../src/features/sessions/stream-admission.js';

/** What admit() threw, for assertions on what the client is told. */
function refusal(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected admit() to refuse');
}

describe('open event streams per principal and per process', () => {
  it('refuses a principal over its own limit with 429 (limiter sse-streams) and Retry-After', () => {
    const admission = new StreamAdmission({ perPrincipal: 2, total: 100 });
    admission.admit('alice');
    admission.admit('alice');
    const error = refusal(() => admission.admit('alice'));
    expect(error).toBeInstanceOf(TooManyRequestsError);
    expect(error).toMatchObject({ status: 429, type: 'rate-limited', limiter: 'sse-streams' });
    expect((error as TooManyRequestsError).headers['Retry-After']).toMatch(/^\d+$/);
    expect((error as TooManyRequestsError).detail).toMatch(/2 open event streams/);
    // The refusal took no slot.
    expect(admission.open).toBe(2);
  });

  it('keeps principals independent: one at its limit does not block another', () => {
    const admission = new StreamAdmission({ perPrincipal: 1, total: 100 });
    admission.admit('alice');
    expect(() => admission.admit('alice')).toThrow(TooManyRequestsError);
    expect(() => admission.admit('bob')).not.toThrow();
    expect(admission.open).toBe(2);
  });

  it('refuses any principal once the process is full, with 503 reason sse-streams and Retry-After', () => {
    const admission = new StreamAdmission({ perPrincipal: 10, total: 2 });
    admission.admit('alice');
    admission.admit('bob');
    const error = refusal(() => admission.admit('carol'));
    expect(error).toBeInstanceOf(ServiceUnavailableError);
    expect(error).toMatchObject({ status: 503, type: 'service-unavailable', reason: 'sse-streams' });
    expect((error as ServiceUnavailableError).headers['Retry-After']).toMatch(/^\d+$/);
    expect(admission.open).toBe(2);
  });

  it('gives the slot back on release, to the principal and to the process', () => {
    const admission = new StreamAdmission({ perPrincipal: 1, total: 1 });
    const release = admission.admit('alice');
    expect(() => admission.admit('bob')).toThrow(ServiceUnavailableError);
    release();
    expect(admission.open).toBe(0);
    const again = admission.admit('alice');
    expect(admission.open).toBe(1);
    again();
    expect(() => admission.admit('bob')).not.toThrow();
  });

  it('ignores a second release of the same slot', () => {
    const admission = new StreamAdmission({ perPrincipal: 2, total: 3 });
    const first = admission.admit('alice');
    admission.admit('alice');
    admission.admit('bob');
    first();
    first();
    first();
    // Only one slot was freed: the process holds 2, alice holds 1 and may take exactly one more.
    expect(admission.open).toBe(2);
    admission.admit('alice');
    expect(() => admission.admit('alice')).toThrow(TooManyRequestsError);
    expect(() => admission.admit('carol')).toThrow(ServiceUnavailableError);
  });

  it('checks the principal limit before the process limit', () => {
    const admission = new StreamAdmission({ perPrincipal: 1, total: 1 });
    admission.admit('alice');
    // Alice is over her own limit: she is told so (429), not that the gateway is full.
    expect(() => admission.admit('alice')).toThrow(TooManyRequestsError);
  });
});
