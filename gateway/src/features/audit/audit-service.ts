import type { Logger } from '../../infra/logger.js';
import type { AuditQuery, AuditStore, NewAuditEntry } from './audit-types.js';

/**
 * The audit trail of management actions. Recording never fails the action
 * it records: a store error is logged (error level: someone must look) and
 * the request goes on. Entries carry no secrets: callers pass names and ids.
 */
export class AuditService {
  constructor(
    private readonly store: AuditStore,
    private readonly logger: Logger,
  ) {}

  async record(entry: NewAuditEntry): Promise<void> {
    const complete = { ...entry, at: entry.at ?? new Date() };
    try {
      await this.store.append(complete);
    } catch (error) {
      this.logger.error('could not write the audit log', { action: entry.action, actor: entry.actor, err: error });
    }
  }

  list(query: AuditQuery) {
    return this.store.list(query);
  }
}
