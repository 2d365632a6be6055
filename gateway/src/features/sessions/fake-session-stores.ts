import type { SessionStores } from './session-store.js';
import type { BatchStore, SessionEventStore, SessionStore } from './session-store-type.js';
import type { Batch, BatchStatus, NewSession, Session, SessionEvent, SessionQuery, SessionStatus, SessionUpdate } from './session-types.js';

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
  readonly rows = new Map<string, Batch>();

  async create(batch: { id: string; owner: string; itemCount: number }): Promise<Batch> {
    if (this.rows.has(batch.id)) throw new Error(`duplicate key: batch ${batch.id}`);
    const row: Batch = { ...batch, status: 'running', createdAt: new Date(), finishedAt: null };
    this.rows.set(row.id, row);
    return { ...row, createdAt: new Date(row.createdAt.getTime()) };
  }

  async get(id: string): Promise<Batch | undefined> {
    const row = this.rows.get(id);
    return row && { ...row, createdAt: new Date(row.createdAt.getTime()), finishedAt: dateCopy(row.finishedAt) };
  }

  async update(id: string, update: { status: BatchStatus; finishedAt?: Date | null }): Promise<Batch> {
    const row = this.rows.get(id);
    if (!row) throw new Error(`batch ${id} does not exist`);
    row.status = update.status;
    if (update.finishedAt !== undefined) row.finishedAt = dateCopy(update.finishedAt);
    return (await this.get(id)) as Batch;
  }

  async interruptAll(finishedAt: Date): Promise<number> {
    let count = 0;
    for (const row of this.rows.values()) {
      if (row.status !== 'running') continue;
      row.status = 'interrupted';
      row.finishedAt = new Date(finishedAt.getTime());
      count += 1;
    }
    return count;
  }
}

export class FakeSessionStore implements SessionStore {
  readonly rows = new Map<string, Session>();

  /** With `batches`, a session naming an unknown batch is refused, as the foreign key does. */
  constructor(private readonly batches?: FakeBatchStore) {}

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
    if (update.status !== undefined) row.status = update.status;
    if (update.deviceId !== undefined) row.deviceId = update.deviceId;
    if (update.workerId !== undefined) row.workerId = update.workerId;
    if (update.result !== undefined) row.result = update.result === null ? null : jsonCopy(update.result);
    if (update.error !== undefined) row.error = update.error === null ? null : { ...update.error };
    if (update.startedAt !== undefined) row.startedAt = dateCopy(update.startedAt);
    if (update.finishedAt !== undefined) row.finishedAt = dateCopy(update.finishedAt);
    return copySession(row);
  }

  async interruptAll(statuses: readonly SessionStatus[], finishedAt: Date): Promise<number> {
    let count = 0;
    for (const row of this.rows.values()) {
      if (!statuses.includes(row.status)) continue;
      row.status = 'interrupted';
      row.finishedAt = new Date(finishedAt.getTime());
      count += 1;
    }
    return count;
  }
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
    for (const event of events) await this.append(event);
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
}

/** Linked fakes: sessions check their batch, events their session, like the foreign keys. */
export function createFakeSessionStores(): FakeSessionStores {
  const batches = new FakeBatchStore();
  const sessions = new FakeSessionStore(batches);
  return { sessions, events: new FakeSessionEventStore(sessions), batches };
}
