import type { AuditService } from '../audit/audit-service.js';
import type { Principal } from '../auth/principal.js';
import type { SessionService } from '../sessions/session-service.js';
import type { Session } from '../sessions/session-types.js';

/** Cancel a session (both fronts); an admin stopping someone else's job is a management action, audited. */
export async function cancelSession(
  deps: { sessions: SessionService; audit: AuditService },
  id: string,
  principal: Principal,
  correlationId: string,
  clientAddress: string | null,
): Promise<Session> {
  const session = await deps.sessions.cancel(id, principal, correlationId);
  if (session.owner !== principal.id) {
    await deps.audit.record({
      actor: principal.id,
      action: 'session.cancel',
      target: session.id,
      clientAddress,
      outcome: 'success',
      details: { owner: session.owner },
    });
  }
  return session;
}
