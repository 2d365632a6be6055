import { FakeInstanceStore } from './instance-store.js';
import type { StoredJob } from './job-request.js';
import type { SessionStores } from './session-store.js';
import type { BatchStore, ClaimedSession, Dispatched, SessionEventStore, SessionStore } from './session-store-type.js';
import {
  TERMINAL_SESSION_STATUSES,
  type Batch,
  type BatchStatus,
  type NewSession,
  type Session,
  type SessionEnd,
  type SessionEvent,
  type SessionQuery,
  type SessionStatus,
  type SessionUpdate,
} from './session-types.js';

/**
 * In-memory stores for unit tests of session logic. They behave like the
 * database stores (same ordering, same rejections, JSON values copied the way
 * a JSON column would) and are checked against them by the same contract
 * tests. Integration tests use the real database.
 */

// What a JSON column gives back: a deep copy with undefined dropped and Dates as strings.
const jsonCopy = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;
const dateCopy = (value: Date | null): Date | null => (value === null ? null : new Date(value.getTime()));

function copySession(session: Session): Session {
  return {
    ...session,
    parameters: jsonCopy(session.parameters),
    result: session.result === null ? null : jsonCopy(session.result),
    error: session.error === null ? null : { ...session.error },
    createdAt: new Date(session.createdAt.getTime()),
    startedAt: dateCopy(session.startedAt),
    finishedAt: dateCopy(session.finishedAt),
  };
}

/** Newest first, ties broken by id, as the database orders them. */
const newestFirst = (a: { createdAt: Date; id: string }, b: { createdAt: Date; id: string }) =>
  b.createdAt.getTime() - a.createdAt.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);

export class FakeBatchStore implements BatchStore {
  readonly rows = new Map<string, Batch & { concurrency: number; cancelRequested: boolean }>();
  /** Set by createFakeSessionStores: the sessions finishIfDone reads. */
  sessions?: FakeSessionStore;

  async create(batch: { id: string; owner: string; itemCount: number; concurrency: number }): Promise<Batch> {
    if (this.rows.has(batch.id)) throw new Error(`duplicate key: batch ${batch.id}`);
    this.rows.set(batch.id, { ...batch, status: 'running', createdAt: new Date(), finishedAt: null, cancelRequested: false });
    return (await this.get(batch.id))!;
  }

  async get(id: string): Promise<Batch | undefined> {
    const row = this.rows.get(id);
    if (!row) return undefined;
    const { concurrency: _c, cancelRequested: _r, ...batch } = row;
    return { ...batch, createdAt: new Date(row.createdAt.getTime()), finishedAt: dateCopy(row.finishedAt) };
  }

  async requestCancel(id: string): Promise<void> {
    const row = this.rows.get(id);
    if (row && row.status === 'running') row.cancelRequested = true;
  }

  async finishIfDone(id: string, decide: (statuses: SessionStatus[], cancelled: boolean) => BatchStatus, at: Date): Promise<Batch | undefined> {
    const row = this.rows.get(id);
    if (!row || row.status !== 'running') return undefined;
    const statuses = [...(this.sessions?.rows.values() ?? [])].filter((s) => s.batchId === id).map((s) => s.status);
    if (statuses.length === 0 || statuses.some((s) => !TERMINAL_SESSION_STATUSES.includes(s))) return undefined;
    row.status = decide(statuses, row.cancelRequested);
    row.finishedAt = new Date(at.getTime());
    return this.get(id);
  }
}

/** What the database keeps of a session beside its domain fields. */
interface SessionMeta {
  ownerInstance: string | null;
  job: StoredJob | null;
  correlationId: string | null;
  queueDeadlineAt: Date | null;
  deadlineAt: Date | null;
  cancelRequested: boolean;
  dispatchCount: number;
  dispatchSequence: number;
}

export class FakeSessionStore implements SessionStore {
  readonly rows = new Map<string, Session>();
  readonly meta = new Map<string, SessionMeta>();

  /**
   * With `batches`, a session naming an unknown batch is refused, as the
   * foreign key does; with `instances`, takeOver reads their leases.
   */
  constructor(
    private readonly batches?: FakeBatchStore,
    private readonly instances?: FakeInstanceStore,
  ) {}

  async create(session: NewSession): Promise<Session> {
    if (this.rows.has(session.id)) throw new Error(`duplicate key: session ${session.id}`);
    const batchId = session.batchId ?? null;
    if (batchId !== null && this.batches && !this.batches.rows.has(batchId)) {
      throw new Error(`foreign key: batch ${batchId} does not exist`);
    }
    const row: Session = {
      id: session.id,
      owner: session.owner,
      task: session.task,
      model: session.model,
      deviceId: null,
      workerId: null,
      status: 'queued',
      parameters: jsonCopy(session.parameters),
      result: null,
      error: null,
      batchId,
      createdAt: new Date(),
      startedAt: null,
      finishedAt: null,
    };
    this.rows.set(row.id, row);
    this.meta.set(row.id, {
      ownerInstance: session.ownerInstance,
      job: jsonCopy(session.job),
      correlationId: session.correlationId,
      queueDeadlineAt: session.queueDeadlineAt ?? null,
      deadlineAt: null,
      cancelRequested: false,
      dispatchCount: 0,
      dispatchSequence: 0,
    });
    return copySession(row);
  }

  async get(id: string): Promise<Session | undefined> {
    const row = this.rows.get(id);
    return row && copySession(row);
  }

  async list(query: SessionQuery): Promise<{ items: Session[]; total: number }> {
    const matching = [...this.rows.values()]
      .filter(
        (row) =>
          (query.owner === undefined || row.owner === query.owner) &&
          (query.status === undefined || row.status === query.status) &&
          (query.batchId === undefined || row.batchId === query.batchId),
      )
      .sort(newestFirst);
    return {
      items: matching.slice(query.offset, query.offset + query.limit).map(copySession),
      total: matching.length,
    };
  }

  async update(id: string, update: SessionUpdate): Promise<Session> {
    const row = this.rows.get(id);
    if (!row) throw new Error(`session ${id} does not exist`);
    apply(row, update);
    return copySession(row);
  }

  async finish(id: string, end: SessionEnd, owner: string | null): Promise<Session | undefined> {
    const row = this.rows.get(id);
    const meta = this.meta.get(id);
    if (!row || !meta || TERMINAL_SESSION_STATUSES.includes(row.status) || meta.ownerInstance !== owner) return undefined;
    apply(row, { status: end.status, finishedAt: end.finishedAt, result: end.result, error: end.error, ...(end.workerId !== undefined ? { workerId: end.workerId } : {}) });
    meta.job = null;
    return copySession(row);
  }

  async dispatch(id: string, owner: string, target: { workerId: string; deadlineAt: Date; afterSequence: number }): Promise<Dispatched | null> {
    const row = this.rows.get(id);
    const meta = this.meta.get(id);
    if (!row || !meta || meta.ownerInstance !== owner || !UNENDED.includes(row.status)) return null;
    row.workerId = target.workerId;
    meta.deadlineAt = target.deadlineAt;
    meta.dispatchSequence = target.afterSequence;
    meta.dispatchCount += 1;
    return { cancelRequested: meta.cancelRequested };
  }

  async hasQueued(): Promise<boolean> {
    return [...this.rows.values()].some((s) => s.status === 'queued' && this.meta.get(s.id)!.ownerInstance === null);
  }

  async claimNext(owner: string): Promise<ClaimedSession | undefined> {
    const relayed = (batchId: string) =>
      [...this.rows.values()].filter((s) => s.batchId === batchId && UNENDED.includes(s.status) && this.meta.get(s.id)?.ownerInstance).length;
    const candidate = [...this.rows.values()]
      .filter((s) => s.status === 'queued' && this.meta.get(s.id)!.ownerInstance === null)
      .filter((s) => s.batchId === null || relayed(s.batchId) < (this.batches?.rows.get(s.batchId)?.concurrency ?? Number.POSITIVE_INFINITY))
      .sort(oldestFirst)[0];
    if (!candidate) return undefined;
    this.meta.get(candidate.id)!.ownerInstance = owner;
    return this.claimed(candidate.id);
  }

  async takeOver(owner: string, liveSince: Date, limit: number): Promise<ClaimedSession[]> {
    const orphans = [...this.rows.values()]
      .filter((s) => UNENDED.includes(s.status))
      .filter((s) => {
        const holder = this.meta.get(s.id)!.ownerInstance;
        return holder !== null && holder !== owner && !this.instances?.isLive(holder, liveSince);
      })
      .sort(oldestFirst)
      .slice(0, limit);
    for (const s of orphans) this.meta.get(s.id)!.ownerInstance = owner;
    return orphans.map((s) => this.claimed(s.id));
  }

  async release(id: string, owner: string): Promise<boolean> {
    const row = this.rows.get(id);
    const meta = this.meta.get(id);
    if (!row || !meta || meta.ownerInstance !== owner || row.status !== 'queued') return false;
    meta.ownerInstance = null;
    row.workerId = null;
    return true;
  }

  async expireQueued(now: Date): Promise<Session[]> {
    const expired: Session[] = [];
    for (const row of this.rows.values()) {
      const meta = this.meta.get(row.id)!;
      if (row.status !== 'queued' || meta.ownerInstance !== null || !meta.queueDeadlineAt || meta.queueDeadlineAt >= now) continue;
      apply(row, {
        status: 'failed',
        finishedAt: now,
        error: { code: 'QUEUE_TIMEOUT', message: 'no worker had room for the job before its queue deadline (QUEUE_TIMEOUT_SECONDS)' },
      });
      meta.job = null;
      expired.push(copySession(row));
    }
    return expired;
  }

  async cancelQueued(id: string, at: Date): Promise<Session | undefined> {
    const row = this.rows.get(id);
    const meta = this.meta.get(id);
    if (!row || !meta || row.status !== 'queued' || meta.ownerInstance !== null) return undefined;
    apply(row, { status: 'cancelled', finishedAt: at, result: { reason: 'cancel-requested' } });
    meta.job = null;
    return copySession(row);
  }

  async requestCancel(id: string): Promise<void> {
    const row = this.rows.get(id);
    if (row && UNENDED.includes(row.status)) this.meta.get(id)!.cancelRequested = true;
  }

  async isCancelRequested(id: string): Promise<boolean> {
    return this.meta.get(id)?.cancelRequested ?? false;
  }

  async queuePosition(id: string, held = false): Promise<number | null> {
    const row = this.rows.get(id);
    if (!row || row.status !== 'queued' || (this.meta.get(id)!.ownerInstance !== null && !held)) return null;
    const waiting = [...this.rows.values()].filter((s) => s.status === 'queued' && this.meta.get(s.id)!.ownerInstance === null).sort(oldestFirst);
    return waiting.findIndex((s) => s.id === id);
  }

  async ownedBy(owner: string): Promise<string[]> {
    return [...this.rows.values()].filter((s) => UNENDED.includes(s.status) && this.meta.get(s.id)!.ownerInstance === owner).map((s) => s.id);
  }

  private claimed(id: string): ClaimedSession {
    const meta = this.meta.get(id)!;
    return {
      session: copySession(this.rows.get(id)!),
      job: jsonCopy(meta.job!),
      correlationId: meta.correlationId,
      deadlineAt: meta.deadlineAt,
      cancelRequested: meta.cancelRequested,
      dispatchCount: meta.dispatchCount,
      dispatchSequence: meta.dispatchSequence,
    };
  }
}

const UNENDED: SessionStatus[] = ['queued', 'running'];

/** Oldest first, ties broken by id, as the queue orders them. */
const oldestFirst = (a: Session, b: Session) => a.createdAt.getTime() - b.createdAt.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

function apply(row: Session, update: SessionUpdate): void {
  if (update.status !== undefined) row.status = update.status;
  if (update.deviceId !== undefined) row.deviceId = update.deviceId;
  if (update.workerId !== undefined) row.workerId = update.workerId;
  if (update.result !== undefined) row.result = update.result === null ? null : jsonCopy(update.result);
  if (update.error !== undefined) row.error = update.error === null ? null : { ...update.error };
  if (update.startedAt !== undefined) row.startedAt = dateCopy(update.startedAt);
  if (update.finishedAt !== undefined) row.finishedAt = dateCopy(update.finishedAt);
}

export class FakeSessionEventStore implements SessionEventStore {
  /** By session id, in append order. */
  readonly rows = new Map<string, SessionEvent[]>();

  /** With `sessions`, an event of an unknown session is refused, as the foreign key does. */
  constructor(private readonly sessions?: FakeSessionStore) {}

  async append(event: SessionEvent): Promise<void> {
    if (this.sessions && !this.sessions.rows.has(event.sessionId)) {
      throw new Error(`foreign key: session ${event.sessionId} does not exist`);
    }
    const events = this.rows.get(event.sessionId) ?? [];
    if (events.some((existing) => existing.sequence === event.sequence)) {
      throw new Error(`duplicate key: event ${event.sessionId}#${event.sequence}`);
    }
    events.push({ ...event, data: jsonCopy(event.data), createdAt: new Date(event.createdAt.getTime()) });
    this.rows.set(event.sessionId, events);
  }

  async appendMany(events: readonly SessionEvent[]): Promise<void> {
    // All or none, as one INSERT: check every event before keeping any.
    const keys = new Set<string>();
    for (const event of events) {
      const key = `${event.sessionId}#${event.sequence}`;
      if (keys.has(key) || (this.rows.get(event.sessionId) ?? []).some((e) => e.sequence === event.sequence)) {
        throw new Error(`duplicate key: event ${key}`);
      }
      if (this.sessions && !this.sessions.rows.has(event.sessionId)) {
        throw new Error(`foreign key: session ${event.sessionId} does not exist`);
      }
      keys.add(key);
    }
    for (const event of events) {
      // Fenced rows: only while the session's owner is the writer, as the database's insert does.
      if (event.writer !== undefined && this.sessions && this.sessions.meta.get(event.sessionId)?.ownerInstance !== event.writer) continue;
      await this.append(event);
    }
  }

  async lastSequences(sessionId: string, since = 0): Promise<{ sequence: number; workerSequence: number }> {
    const events = this.rows.get(sessionId) ?? [];
    return {
      sequence: Math.max(0, ...events.map((e) => e.sequence)),
      workerSequence: Math.max(0, ...events.filter((e) => e.sequence > since).map((e) => e.workerSequence ?? 0)),
    };
  }

  async listAfter(sessionId: string, afterSequence: number): Promise<SessionEvent[]> {
    return (this.rows.get(sessionId) ?? [])
      .filter((event) => event.sequence > afterSequence)
      .sort((a, b) => a.sequence - b.sequence)
      .map((event) => ({ ...event, data: jsonCopy(event.data), createdAt: new Date(event.createdAt.getTime()) }));
  }
}

export interface FakeSessionStores extends SessionStores {
  sessions: FakeSessionStore;
  events: FakeSessionEventStore;
  batches: FakeBatchStore;
  instances: FakeInstanceStore;
}

/** Linked fakes: sessions check their batch, events their session, like the foreign keys. */
export function createFakeSessionStores(): FakeSessionStores {
  const batches = new FakeBatchStore();
  const instances = new FakeInstanceStore();
  const sessions = new FakeSessionStore(batches, instances);
  batches.sessions = sessions;
  return { sessions, events: new FakeSessionEventStore(sessions), batches, instances };
}
