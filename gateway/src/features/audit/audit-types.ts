export type AuditOutcome = 'success' | 'failure' | 'denied';

export interface AuditEntry {
  id: string;
  at: Date;
  /** Principal id ("jwt:alice", "key:<id>") or "anonymous". */
  actor: string;
  /** e.g. model.load, key.create, session.cancel, auth.failed */
  action: string;
  target: string | null;
  clientAddress: string | null;
  outcome: AuditOutcome;
  details: Record<string, unknown> | null;
}

export type NewAuditEntry = Omit<AuditEntry, 'id' | 'at'> & { at?: Date };

export interface AuditQuery {
  actor?: string;
  action?: string;
  from?: Date;
  to?: Date;
  limit: number;
  offset: number;
}

export interface AuditStore {
  append(entry: NewAuditEntry & { at: Date }): Promise<void>;
  list(query: AuditQuery): Promise<{ items: AuditEntry[]; total: number }>;
}
