import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFakeSessionStores } from '../../src/features/sessions/fake-session-stores.js';
import { createSessionStores, type SessionStores } from '../../src/features/sessions/session-store.js';
import type { NewSession, SessionStatus } from '../../src/features/sessions/session-types.js';
import { toDbTimestamp } from '../../src/infra/database/columns.js';
import { createDatabase, SQLITE_FILE_NAME, type Database, type Dialect } from '../../src/infra/database/database.js';
import { createLogger } from '../../src/infra/logger.js';
import { dialectAvailable, openTestDatabase, postgresServer } from '../helpers/databases.js';
import { LogCapture } from '../helpers/log-capture.js';
import { postgresUrl } from '../helpers/postgres.js';
import { MACHINE_MARGIN_MS } from '../helpers/wait.js';

/**
 * The session, event and batch stores against real PostgreSQL and SQLite,
 * and the same contract against the in-memory fakes that unit tests use.
 */

interface Harness {
  stores: SessionStores;
  /** Moves a session's created_at, to test ordering without waiting on the clock. */
  setCreatedAt(id: string, at: Date): Promise<void>;
  close(): Promise<void>;
}

interface Backend {
  name: string;
  available: boolean;
  open(): Promise<Harness>;
}

const databaseBackend = (dialect: Dialect): Backend => ({
  name: dialect,
  available: dialectAvailable(dialect),
  open: async () => {
    const db = await openTestDatabase(dialect);
    return {
      stores: createSessionStores(db.knex),
      setCreatedAt: async (id, at) => {
        await db.knex('sessions').update({ created_at: toDbTimestamp(at) }).where({ id });
      },
      close: () => db.close(),
    };
  },
});

const fakeBackend: Backend = {
  name: 'in-memory fakes',
  available: true,
  open: async () => {
    const stores = createFakeSessionStores();
    return {
      stores,
      setCreatedAt: async (id, at) => {
        const row = stores.sessions.rows.get(id);
        if (row) row.createdAt = at;
      },
      close: async () => {},
    };
  },
};

/** A new session row as the service writes one (the job and its request id are not under test here). */
const row = (fields: { id: string; owner: string; task: string; model: string | null; parameters: Record<string, unknown>; batchId?: string | null }, extra: Partial<NewSession> = {}): NewSession => ({
  ...fields,
  job: { kind: 'postprocess', task: 'enhance', model: '', sourceOutput: 'x/y.png', adjustments: { contrast: 1 } },
  correlationId: 'test',
  ownerInstance: null,
  ...extra,
});

let counter = 0;
const unique = (prefix: string) => `${prefix}-${(counter += 1)}-${randomUUID().slice(0, 8)}`;

const at = (iso: string) => new Date(iso);

const richJson = {
  prompt: 'a lighthouse at dusk, 灯台, маяк, 🌅 — "quoted" \\ back\\slash\nnew line\ttab',
  rtl: 'مرحبا',
  combining: 'é vs é',
  numbers: { int: 42, negative: -7, float: 0.1 + 0.2, big: Number.MAX_SAFE_INTEGER, tiny: 1e-12 },
  flags: [true, false, null],
  nested: { deeper: { deepest: [1, [2, [3, { four: 4 }]]] }, empty: {}, list: [] },
};

describe.each([databaseBackend('postgres'), databaseBackend('sqlite'), fakeBackend])('session stores ($name)', (backend) => {
  let harness: Harness;
  let stores: SessionStores;

  beforeAll(async () => {
    if (!backend.available) return;
    harness = await backend.open();
    stores = harness.stores;
  });
  afterAll(async () => {
    await harness?.close();
  });

  // With a database of their own: the queue tests look at every row.
  const withFreshStores = async (work: (fresh: SessionStores, setCreatedAt: Harness['setCreatedAt']) => Promise<void>) => {
    const fresh = await backend.open();
    try {
      await work(fresh.stores, fresh.setCreatedAt);
    } finally {
      await fresh.close();
    }
  };

  const newSession = (owner: string, id = unique('session'), batchId: string | null = null) =>
    stores.sessions.create(row({ id, owner, task: 'text-to-image', model: 'tiny-sd', parameters: { steps: 4 }, batchId }));

  describe.skipIf(!backend.available)('sessions', () => {
    it('creates a queued session and reads it back', async () => {
      const before = Date.now();
      const created = await stores.sessions.create(row({
        id: unique('session'),
        owner: 'alice',
        task: 'text-embedding',
        model: null,
        parameters: { texts: ['hello'] },
      }));
      expect(created).toMatchObject({
        owner: 'alice',
        task: 'text-embedding',
        model: null,
        deviceId: null,
        workerId: null,
        status: 'queued',
        parameters: { texts: ['hello'] },
        result: null,
        error: null,
        batchId: null,
        startedAt: null,
        finishedAt: null,
      });
      expect(created.createdAt).toBeInstanceOf(Date);
      expect(created.createdAt.getTime()).toBeGreaterThanOrEqual(before - 1000);
      expect(created.createdAt.getTime()).toBeLessThanOrEqual(Date.now() + 1000);
      expect(await stores.sessions.get(created.id)).toEqual(created);
    });

    it('returns undefined for an unknown id', async () => {
      expect(await stores.sessions.get(unique('missing'))).toBeUndefined();
    });

    it('refuses a second session with the same id', async () => {
      const session = await newSession('alice');
      await expect(newSession('bob', session.id)).rejects.toThrow();
      expect((await stores.sessions.get(session.id))?.owner).toBe('alice');
    });

    it('round-trips nested, unicode JSON in parameters and result', async () => {
      const session = await stores.sessions.create(row({
        id: unique('session'),
        owner: 'alice',
        task: 'text-to-image',
        model: 'tiny-sd',
        parameters: richJson,
      }));
      expect(session.parameters).toEqual(richJson);
      const updated = await stores.sessions.update(session.id, { result: { files: [{ path: 'out/ß.png', bytes: 12 }], ...richJson } });
      expect(updated.result).toEqual({ files: [{ path: 'out/ß.png', bytes: 12 }], ...richJson });
      expect(await stores.sessions.get(session.id)).toEqual(updated);
    });

    it('walks a session through its transitions, dates exact to the millisecond', async () => {
      const session = await newSession('alice');
      const startedAt = at('2031-02-03T04:05:06.789Z');
      const running = await stores.sessions.update(session.id, {
        status: 'running',
        deviceId: 'worker-0:cuda:0',
        workerId: 'worker-0',
        startedAt,
      });
      expect(running).toMatchObject({ status: 'running', deviceId: 'worker-0:cuda:0', workerId: 'worker-0', startedAt });
      expect(running.startedAt?.getTime()).toBe(startedAt.getTime());

      const finishedAt = at('2031-02-03T04:05:07.001Z');
      const done = await stores.sessions.update(session.id, { status: 'succeeded', result: { seed: 7 }, finishedAt });
      // Fields the update leaves out keep their values.
      expect(done).toMatchObject({ status: 'succeeded', deviceId: 'worker-0:cuda:0', startedAt, finishedAt, result: { seed: 7 } });
      expect(done.createdAt).toEqual(session.createdAt);

      const fetched = await stores.sessions.get(session.id);
      expect(fetched).toEqual(done);
      expect(fetched?.startedAt?.toISOString()).toBe('2031-02-03T04:05:06.789Z');
      expect(fetched?.finishedAt?.toISOString()).toBe('2031-02-03T04:05:07.001Z');
    });

    it('records an error code and message, and clears fields set to null', async () => {
      const session = await newSession('alice');
      const failed = await stores.sessions.update(session.id, {
        status: 'failed',
        error: { code: 'RESOURCE_EXHAUSTED', message: 'device queue is full (64 jobs) — try later' },
        finishedAt: at('2030-01-01T00:00:00.000Z'),
      });
      expect(failed.error).toEqual({ code: 'RESOURCE_EXHAUSTED', message: 'device queue is full (64 jobs) — try later' });
      expect((await stores.sessions.get(session.id))?.error).toEqual(failed.error);

      const cleared = await stores.sessions.update(session.id, { error: null, finishedAt: null, deviceId: null });
      expect(cleared).toMatchObject({ status: 'failed', error: null, finishedAt: null, deviceId: null });
    });

    it('returns the row unchanged for an empty update', async () => {
      const session = await newSession('alice');
      expect(await stores.sessions.update(session.id, {})).toEqual(session);
    });

    it('throws when updating an unknown session', async () => {
      await expect(stores.sessions.update(unique('missing'), { status: 'running' })).rejects.toThrow(/does not exist/);
      await expect(stores.sessions.update(unique('missing'), {})).rejects.toThrow(/does not exist/);
    });

    it('lists newest first, ties by id, with filters, pagination and the total', async () => {
      const owner = unique('owner');
      const prefix = unique('ordered');
      const times: Record<string, string> = {
        a: '2030-01-01T00:00:00.001Z',
        b: '2030-01-01T00:00:00.003Z',
        c: '2030-01-01T00:00:00.002Z',
        d: '2030-01-01T00:00:00.003Z',
        e: '2030-01-01T00:00:00.000Z',
      };
      for (const [suffix, time] of Object.entries(times)) {
        await newSession(owner, `${prefix}-${suffix}`);
        await harness.setCreatedAt(`${prefix}-${suffix}`, at(time));
      }
      await newSession(unique('someone-else'));

      const ids = (items: { id: string }[]) => items.map((item) => item.id.slice(prefix.length + 1));
      const all = await stores.sessions.list({ owner, limit: 50, offset: 0 });
      expect(ids(all.items)).toEqual(['d', 'b', 'c', 'a', 'e']);
      expect(all.total).toBe(5);
      expect(all.items[0]?.createdAt.toISOString()).toBe(times.d);

      const page = await stores.sessions.list({ owner, limit: 2, offset: 1 });
      expect(ids(page.items)).toEqual(['b', 'c']);
      expect(page.total).toBe(5);
      expect(await stores.sessions.list({ owner, limit: 10, offset: 10 })).toEqual({ items: [], total: 5 });

      await stores.sessions.update(`${prefix}-b`, { status: 'running' });
      await stores.sessions.update(`${prefix}-e`, { status: 'running' });
      const running = await stores.sessions.list({ owner, status: 'running', limit: 1, offset: 0 });
      expect(ids(running.items)).toEqual(['b']);
      expect(running.total).toBe(2);

      const everyone = await stores.sessions.list({ limit: 10_000, offset: 0 });
      expect(everyone.total).toBeGreaterThanOrEqual(6);
      expect(everyone.items.filter((item) => item.owner === owner)).toHaveLength(5);
    });

    it('filters by batch', async () => {
      const batch = await stores.batches.create({ id: unique('batch'), owner: 'alice', itemCount: 2, concurrency: 2 });
      const first = await newSession('alice', unique('item'), batch.id);
      const second = await newSession('bob', unique('item'), batch.id);
      await newSession('alice');
      const listed = await stores.sessions.list({ batchId: batch.id, limit: 10, offset: 0 });
      expect(listed.total).toBe(2);
      expect(listed.items.map((item) => item.id).sort()).toEqual([first.id, second.id].sort());
      expect(listed.items.every((item) => item.batchId === batch.id)).toBe(true);
      expect((await stores.sessions.list({ batchId: batch.id, owner: 'bob', limit: 10, offset: 0 })).total).toBe(1);
    });

    it('refuses a session in an unknown batch', async () => {
      await expect(newSession('alice', unique('session'), unique('no-such-batch'))).rejects.toThrow();
    });

    it('claims queued sessions oldest first, each once, and ends a session once, fenced by its owner', async () => {
      await withFreshStores(async ({ sessions, instances }, setCreatedAt) => {
        await instances.register({ id: 'a', hostname: 'h', pid: 1, at: new Date() });
        await instances.register({ id: 'b', hostname: 'h', pid: 2, at: new Date() });
        const ids = [unique('q'), unique('q'), unique('q')];
        for (const [i, id] of ids.entries()) {
          await sessions.create(row({ id, owner: 'alice', task: 't', model: null, parameters: { i } }));
          await setCreatedAt(id, new Date(Date.UTC(2030, 0, 1, 0, 0, 3 - i)));
        }
        expect(await sessions.queuePosition(ids[2]!)).toBe(0);
        expect(await sessions.queuePosition(ids[0]!)).toBe(2);
        const first = await sessions.claimNext('a');
        expect(first?.session.id).toBe(ids[2]);
        expect(first).toMatchObject({ correlationId: 'test', cancelRequested: false, dispatchCount: 0, deadlineAt: null });
        expect(first!.job).toMatchObject({ kind: 'postprocess', task: 'enhance' });
        expect(await sessions.queuePosition(ids[2]!)).toBeNull();
        expect(await sessions.queuePosition(ids[1]!)).toBe(0);
        expect((await sessions.claimNext('b'))?.session.id).toBe(ids[1]);
        expect(await sessions.ownedBy('a')).toEqual([ids[2]]);

        // Only the owner records the dispatch and ends it; an end is written once.
        const deadlineAt = new Date(Date.now() + 60_000);
        expect(await sessions.dispatch(ids[2]!, 'b', { workerId: 'w', deadlineAt, afterSequence: 2 })).toBeNull();
        expect(await sessions.dispatch(ids[2]!, 'a', { workerId: 'w', deadlineAt, afterSequence: 2 })).toEqual({ cancelRequested: false });
        // A cancel asked for after the claim (through any replica) is what the next dispatch reads.
        await sessions.requestCancel(ids[1]!, new Date());
        expect(await sessions.dispatch(ids[1]!, 'b', { workerId: 'w', deadlineAt, afterSequence: 0 })).toEqual({ cancelRequested: true });
        const end = { status: 'succeeded' as const, finishedAt: new Date(), result: { ok: true }, error: null };
        expect(await sessions.finish(ids[2]!, end, 'b')).toBeUndefined();
        expect(await sessions.finish(ids[2]!, end, 'a')).toMatchObject({ status: 'succeeded', result: { ok: true }, workerId: 'w' });
        expect(await sessions.finish(ids[2]!, { ...end, status: 'failed' }, 'a')).toBeUndefined();
        expect(await sessions.finish(ids[2]!, { ...end, status: 'failed' }, null)).toBeUndefined();
        expect((await sessions.get(ids[2]!))?.status).toBe('succeeded');
        expect(await sessions.ownedBy('a')).toEqual([]);

        // Given back, it is claimable again; cancelled while unowned, it is not.
        expect(await sessions.release(ids[1]!, 'a')).toBe(false);
        expect(await sessions.release(ids[1]!, 'b')).toBe(true);
        expect(await sessions.cancelQueued(ids[1]!, new Date())).toMatchObject({ status: 'cancelled', result: { reason: 'cancel-requested' } });
        expect(await sessions.cancelQueued(ids[1]!, new Date())).toBeUndefined();
        expect((await sessions.claimNext('a'))?.session.id).toBe(ids[0]);
        expect(await sessions.cancelQueued(ids[0]!, new Date())).toBeUndefined();
        await sessions.requestCancel(ids[0]!, new Date());
        expect(await sessions.isCancelRequested(ids[0]!)).toBe(true);
        expect(await sessions.claimNext('a')).toBeUndefined();
      });
    });

    it("stores fenced events only while their writer owns the session: a relay that lost it cannot add to the history", async () => {
      await withFreshStores(async ({ sessions, events }) => {
        const id = unique('fenced');
        await sessions.create(row({ id, owner: 'alice', task: 't', model: null, parameters: {} }, { ownerInstance: 'old' }));
        const e = (sequence: number, writer: string | null | undefined) => ({ sessionId: id, sequence, type: 'progress', data: { sequence }, createdAt: new Date(), ...(writer !== undefined ? { writer } : {}) });
        await events.appendMany([e(1, 'old'), e(2, 'other'), e(3, undefined)]);
        expect((await events.listAfter(id, 0)).map((x) => x.sequence)).toEqual([1, 3]);
        // Taken over: the old owner's later writes are dropped, the new owner's kept.
        await sessions.takeOver('new', new Date(Date.now() + 60_000), 10);
        await events.appendMany([e(4, 'old'), e(5, 'new')]);
        expect((await events.listAfter(id, 0)).map((x) => x.sequence)).toEqual([1, 3, 5]);
        expect(await events.lastSequences(id)).toEqual({ sequence: 5, workerSequence: 0 });
      });
    });

    it('takes over only the sessions of instances whose lease ran out or that stopped', async () => {
      await withFreshStores(async ({ sessions, instances }) => {
        const now = Date.now();
        await instances.register({ id: 'live', hostname: 'h', pid: 1, at: new Date(now) });
        await instances.register({ id: 'dead', hostname: 'h', pid: 2, at: new Date(now - 60_000) });
        await instances.register({ id: 'stopped', hostname: 'h', pid: 3, at: new Date(now) });
        await instances.markStopped('stopped', new Date(now));
        const held: Record<string, string> = {};
        for (const owner of ['live', 'dead', 'stopped', 'me']) {
          const id = unique('held');
          await sessions.create(row({ id, owner: 'alice', task: 't', model: null, parameters: {} }, { ownerInstance: owner }));
          held[owner] = id;
        }
        const ended = unique('held');
        await sessions.create(row({ id: ended, owner: 'alice', task: 't', model: null, parameters: {} }, { ownerInstance: 'dead' }));
        await sessions.finish(ended, { status: 'failed', finishedAt: new Date(), result: null, error: null }, 'dead');
        await instances.heartbeat('live', new Date(now));
        const taken = await sessions.takeOver('me', new Date(now - 10_000), 10);
        expect(taken.map((t) => t.session.id).sort()).toEqual([held.dead, held.stopped].sort());
        expect((await sessions.ownedBy('me')).sort()).toEqual([held.dead, held.stopped, held.me].sort());
        expect(await sessions.ownedBy('live')).toEqual([held.live]);
        expect(await sessions.takeOver('me', new Date(now - 10_000), 10)).toEqual([]);
      });
    });

    it('ends queued sessions past their queue deadline, and none other', async () => {
      await withFreshStores(async ({ sessions }) => {
        const late = unique('late');
        const early = unique('early');
        const owned = unique('owned');
        await sessions.create(row({ id: late, owner: 'a', task: 't', model: null, parameters: {} }, { queueDeadlineAt: new Date(Date.now() - 1000) }));
        await sessions.create(row({ id: early, owner: 'a', task: 't', model: null, parameters: {} }, { queueDeadlineAt: new Date(Date.now() + 60_000) }));
        await sessions.create(
          row({ id: owned, owner: 'a', task: 't', model: null, parameters: {} }, { queueDeadlineAt: new Date(Date.now() - 1000), ownerInstance: 'x' }),
        );
        const expired = await sessions.expireQueued(new Date());
        expect(expired.map((s) => s.id)).toEqual([late]);
        expect(expired[0]).toMatchObject({ status: 'failed', error: { code: 'QUEUE_TIMEOUT' } });
        expect(await sessions.expireQueued(new Date())).toEqual([]);
        expect((await sessions.get(early))?.status).toBe('queued');
      });
    });

    it("claims no more of a batch's items at once than its concurrency", async () => {
      await withFreshStores(async ({ sessions, batches }) => {
        const batch = await batches.create({ id: unique('batch'), owner: 'alice', itemCount: 3, concurrency: 2 });
        for (let i = 0; i < 3; i += 1) await sessions.create(row({ id: unique('item'), owner: 'alice', task: 't', model: null, parameters: { i }, batchId: batch.id }));
        const claimed = [await sessions.claimNext('a'), await sessions.claimNext('b'), await sessions.claimNext('a')];
        expect(claimed.map((c) => c !== undefined)).toEqual([true, true, false]);
        await sessions.finish(claimed[0]!.session.id, { status: 'succeeded', finishedAt: new Date(), result: null, error: null }, 'a');
        expect(await sessions.claimNext('a')).toBeDefined();
      });
    });
  });

  describe.skipIf(!backend.available)('session events', () => {
    const event = (sessionId: string, sequence: number, data: Record<string, unknown> = { sequence }) => ({
      sessionId,
      sequence,
      type: sequence === 1 ? 'accepted' : 'progress',
      data,
      createdAt: new Date(Date.UTC(2030, 0, 1, 0, 0, 0, sequence)),
    });

    it('lists events after a sequence, in order, for that session only', async () => {
      const session = await newSession('alice');
      const other = await newSession('alice');
      for (const sequence of [3, 1, 2, 5, 4]) await stores.events.append(event(session.id, sequence));
      await stores.events.append(event(other.id, 1));

      const all = await stores.events.listAfter(session.id, 0);
      expect(all.map((item) => item.sequence)).toEqual([1, 2, 3, 4, 5]);
      expect(all[0]).toEqual(event(session.id, 1));
      expect((await stores.events.listAfter(session.id, 3)).map((item) => item.sequence)).toEqual([4, 5]);
      expect(await stores.events.listAfter(session.id, 5)).toEqual([]);
      expect(await stores.events.listAfter(unique('missing'), 0)).toEqual([]);
    });

    it('round-trips event data and timestamps', async () => {
      const session = await newSession('alice');
      const rich = { ...event(session.id, 1, richJson), createdAt: at('2029-12-31T23:59:59.999Z') };
      await stores.events.append(rich);
      expect(await stores.events.listAfter(session.id, 0)).toEqual([rich]);
    });

    it('refuses a second event with the same session and sequence', async () => {
      const session = await newSession('alice');
      const other = await newSession('alice');
      await stores.events.append(event(session.id, 1, { first: true }));
      await expect(stores.events.append(event(session.id, 1, { first: false }))).rejects.toThrow();
      await stores.events.append(event(other.id, 1));
      expect((await stores.events.listAfter(session.id, 0)).map((item) => item.data)).toEqual([{ first: true }]);
    });

    it('appends several events in one write, all or none', async () => {
      const session = await newSession('alice');
      await stores.events.appendMany([event(session.id, 1), event(session.id, 2), event(session.id, 3)]);
      expect((await stores.events.listAfter(session.id, 0)).map((item) => item.sequence)).toEqual([1, 2, 3]);
      await expect(stores.events.appendMany([event(session.id, 4), event(session.id, 2)])).rejects.toThrow();
      expect((await stores.events.listAfter(session.id, 0)).map((item) => item.sequence)).toEqual([1, 2, 3]);
    });

    it('appends a thousand sessions\' events in one write (beyond SQLite\'s 500-term insert), all or none', async () => {
      const sessions = await Promise.all(Array.from({ length: 4 }, () => newSession('alice')));
      const many = sessions.flatMap((s) => Array.from({ length: 300 }, (_, i) => event(s.id, i + 1)));
      await stores.events.appendMany(many);
      for (const s of sessions) expect((await stores.events.listAfter(s.id, 0)).map((item) => item.sequence)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
      // A duplicate in the last chunk undoes the chunks written before it.
      const fresh = await newSession('alice');
      const poisoned = [...Array.from({ length: 450 }, (_, i) => event(fresh.id, i + 1)), event(sessions[0]!.id, 1)];
      await expect(stores.events.appendMany(poisoned)).rejects.toThrow();
      expect(await stores.events.listAfter(fresh.id, 0)).toEqual([]);
    });

    it('refuses an event of an unknown session', async () => {
      await expect(stores.events.append(event(unique('missing'), 1))).rejects.toThrow();
    });
  });

  describe.skipIf(!backend.available)('batches', () => {
    it('creates a running batch and reads it back', async () => {
      const batch = await stores.batches.create({ id: unique('batch'), owner: 'alice', itemCount: 3, concurrency: 2 });
      expect(batch).toMatchObject({ owner: 'alice', status: 'running', itemCount: 3, finishedAt: null });
      expect(batch.createdAt).toBeInstanceOf(Date);
      expect(await stores.batches.get(batch.id)).toEqual(batch);
      expect(await stores.batches.get(unique('missing'))).toBeUndefined();
    });

    it('finishes a running batch once its last item ended, once, with the status its items give', async () => {
      const batch = await stores.batches.create({ id: unique('batch'), owner: 'alice', itemCount: 2, concurrency: 2 });
      const items = [await newSession('alice', unique('item'), batch.id), await newSession('alice', unique('item'), batch.id)];
      const decide = (statuses: SessionStatus[], cancelled: boolean) => (cancelled ? 'cancelled' : statuses.every((s) => s === 'succeeded') ? 'succeeded' : 'partial');
      const at1 = at('2030-05-05T05:05:05.555Z');
      await stores.sessions.finish(items[0]!.id, { status: 'succeeded', finishedAt: at1, result: null, error: null }, null);
      expect(await stores.batches.finishIfDone(batch.id, decide, at1)).toBeUndefined();
      await stores.sessions.finish(items[1]!.id, { status: 'failed', finishedAt: at1, result: null, error: null }, null);
      expect(await stores.batches.finishIfDone(batch.id, decide, at1)).toMatchObject({ status: 'partial', finishedAt: at1 });
      expect(await stores.batches.finishIfDone(batch.id, decide, at1)).toBeUndefined();
      expect(await stores.batches.get(batch.id)).toMatchObject({ status: 'partial', finishedAt: at1 });
    });

    it('ends a batch whose cancellation was requested as cancelled', async () => {
      const batch = await stores.batches.create({ id: unique('batch'), owner: 'alice', itemCount: 1, concurrency: 1 });
      const item = await newSession('alice', unique('item'), batch.id);
      await stores.batches.requestCancel(batch.id, new Date());
      await stores.sessions.cancelQueued(item.id, new Date());
      const decided: boolean[] = [];
      const ended = await stores.batches.finishIfDone(batch.id, (_s, cancelled) => (decided.push(cancelled), cancelled ? 'cancelled' : 'failed'), new Date());
      expect(decided).toEqual([true]);
      expect(ended?.status).toBe('cancelled');
    });
  });
});

describe.each(['postgres', 'sqlite'] as const)('database (%s)', (dialect) => {
  let db: Database;

  beforeAll(async () => {
    if (dialectAvailable(dialect)) db = await openTestDatabase(dialect);
  });
  afterAll(async () => {
    await db?.close();
  });

  describe.skipIf(!dialectAvailable(dialect))('schema and connection', () => {
    it('runs migrations idempotently', async () => {
      await db.migrate();
      await db.migrate();
      const applied = await db.knex('knex_migrations').select('name').orderBy('id');
      expect(applied.map((row: { name: string }) => row.name)).toEqual(['0001_sessions', '0002_api_keys_and_audit_log', '0003_session_ownership']);
    });

    it('has every table of the schema', async () => {
      for (const table of ['sessions', 'session_events', 'batches', 'api_keys', 'audit_log']) {
        expect(await db.knex.schema.hasTable(table), table).toBe(true);
      }
      await db.knex('api_keys').insert({
        id: 'key-1',
        name: 'ci',
        prefix: 'dok_abc',
        key_hash: 'hash',
        scopes: JSON.stringify(['inference']),
        created_by: 'admin',
        created_at: toDbTimestamp(new Date()),
      });
      await expect(
        db.knex('api_keys').insert({
          id: 'key-2',
          name: 'dup',
          prefix: 'dok_abc',
          key_hash: 'hash',
          scopes: '[]',
          created_by: 'admin',
          created_at: toDbTimestamp(new Date()),
        }),
      ).rejects.toThrow();
      await db.knex('audit_log').insert({ at: toDbTimestamp(new Date()), actor: 'admin', action: 'api-key.create', outcome: 'success' });
      expect(await db.knex('audit_log').count({ total: '*' })).toEqual([{ total: dialect === 'postgres' ? '1' : 1 }]);
    });

    it('deletes the events of a deleted session', async () => {
      const stores = createSessionStores(db.knex);
      const session = await stores.sessions.create(row({ id: unique('session'), owner: 'alice', task: 't', model: null, parameters: {} }));
      await stores.events.append({ sessionId: session.id, sequence: 1, type: 'accepted', data: {}, createdAt: new Date() });
      await stores.events.append({ sessionId: session.id, sequence: 2, type: 'queued', data: {}, createdAt: new Date() });
      await db.knex('sessions').where({ id: session.id }).del();
      expect(await stores.events.listAfter(session.id, 0)).toEqual([]);
      expect(await db.knex('session_events').where({ session_id: session.id })).toEqual([]);
    });

    it('runs stores inside a transaction, which rolls back as one', async () => {
      const id = unique('session');
      await expect(
        db.knex.transaction(async (trx) => {
          const stores = createSessionStores(trx);
          await stores.sessions.create(row({ id, owner: 'alice', task: 't', model: null, parameters: {} }));
          await stores.events.append({ sessionId: id, sequence: 1, type: 'accepted', data: {}, createdAt: new Date() });
          expect((await stores.sessions.get(id))?.id).toBe(id);
          throw new Error('roll back');
        }),
      ).rejects.toThrow('roll back');
      expect(await createSessionStores(db.knex).sessions.get(id)).toBeUndefined();
    });

    it('answers ping with a latency in milliseconds', async () => {
      const latency = await db.ping();
      expect(typeof latency).toBe('number');
      expect(Number.isFinite(latency)).toBe(true);
      expect(latency).toBeGreaterThanOrEqual(0);
    });
  });
});

describe.skipIf(!dialectAvailable('postgres'))('PostgreSQL specifics', () => {
  let db: Database;

  beforeAll(async () => {
    db = await openTestDatabase('postgres');
  });
  afterAll(async () => {
    await db?.close();
  });

  it('lets replicas claiming at once each take different sessions (FOR UPDATE SKIP LOCKED), every one exactly once', async () => {
    // Two replicas: two stores over two connection pools to the same database.
    const other = createDatabase({ databaseUrl: (db.knex.client.config.connection as { connectionString: string }).connectionString, dataDirectory: tmpdir() }, createLogger({ level: 'error', stream: new LogCapture() }));
    try {
      const a = createSessionStores(db.knex).sessions;
      const b = createSessionStores(other.knex).sessions;
      const ids: string[] = [];
      for (let i = 0; i < 40; i += 1) {
        const id = unique('race');
        ids.push(id);
        await a.create(row({ id, owner: 'alice', task: 't', model: null, parameters: { i } }));
      }
      const claimAll = async (store: typeof a, owner: string) => {
        const got: string[] = [];
        for (;;) {
          const claimed = await store.claimNext(owner);
          if (!claimed) return got;
          if (ids.includes(claimed.session.id)) got.push(claimed.session.id);
        }
      };
      // Both pools connected before the race starts.
      await Promise.all([db.ping(), other.ping()]);
      const [byA, byB] = await Promise.all([claimAll(a, 'replica-a'), claimAll(b, 'replica-b')]);
      expect([...byA, ...byB].sort()).toEqual([...ids].sort());
      expect(byA.filter((id) => byB.includes(id))).toEqual([]);
      expect(byA.length).toBeGreaterThan(0);
      expect(byB.length).toBeGreaterThan(0);
    } finally {
      await other.close();
    }
  });

  it('talks to a real PostgreSQL server', async () => {
    expect(db.dialect).toBe('postgres');
    const { rows } = (await db.knex.raw('select version() as version')) as { rows: { version: string }[] };
    expect(rows[0]?.version).toContain('PostgreSQL');
  });

  it('uses timestamptz and jsonb columns', async () => {
    const { rows } = (await db.knex.raw(
      `select column_name, data_type from information_schema.columns where table_name = 'sessions' and column_name in ('created_at', 'parameters', 'result')`,
    )) as { rows: { column_name: string; data_type: string }[] };
    expect(Object.fromEntries(rows.map((row) => [row.column_name, row.data_type]))).toEqual({
      created_at: 'timestamp with time zone',
      parameters: 'jsonb',
      result: 'jsonb',
    });
  });

  it('never logs the password of the connection string', async () => {
    const server = postgresServer()!;
    const logs = new LogCapture();
    const password = 'pa55-word-never-logged';
    const url = postgresUrl(server, server.templateDatabase).replace(`${server.user}@`, `${server.user}:${password}@`);
    const withPassword = createDatabase({ databaseUrl: url, dataDirectory: tmpdir() }, createLogger({ level: 'debug', stream: logs }));
    try {
      await withPassword.ping();
    } finally {
      await withPassword.close();
    }
    expect(logs.find((line) => line.message === 'database: postgres')).toEqual([
      expect.objectContaining({ host: `${server.host}:${server.port}`, database: server.templateDatabase }),
    ]);
    expect(logs.text).not.toContain(password);
  });

  it('fails fast when the server does not answer', async () => {
    // Accepts TCP connections and never speaks: a hung server, not a refused one.
    const sockets: Socket[] = [];
    const silent: Server = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as { port: number };
    const hung = createDatabase(
      { databaseUrl: `postgres://postgres@127.0.0.1:${port}/none`, dataDirectory: tmpdir(), connectTimeoutMs: 300 },
      createLogger({ level: 'error', stream: new LogCapture() }),
    );
    const started = Date.now();
    try {
      await expect(hung.ping()).rejects.toThrow();
      // The 300 ms connect timeout ends it, not pg's default (none: for ever).
      expect(Date.now() - started).toBeLessThan(300 + MACHINE_MARGIN_MS);
    } finally {
      await hung.close();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});

describe('SQLite specifics', () => {
  let dataDirectory: string;
  let db: Database;

  beforeAll(async () => {
    dataDirectory = join(mkdtempSync(join(tmpdir(), 'device-ops-sqlite-')), 'nested', 'data');
    db = createDatabase({ dataDirectory }, createLogger({ level: 'warn', stream: new LogCapture() }));
    await db.migrate();
  });
  afterAll(async () => {
    await db?.close();
    rmSync(join(dataDirectory, '..', '..'), { recursive: true, force: true });
  });

  it('creates its file under the data directory', () => {
    expect(db.dialect).toBe('sqlite');
    expect(existsSync(join(dataDirectory, SQLITE_FILE_NAME))).toBe(true);
  });

  it('sets WAL, foreign keys and a busy timeout on its connection', async () => {
    const pragma = async (name: string) => ((await db.knex.raw(`pragma ${name}`)) as Record<string, unknown>[])[0];
    expect(await pragma('journal_mode')).toEqual({ journal_mode: 'wal' });
    expect(await pragma('foreign_keys')).toEqual({ foreign_keys: 1 });
    expect(await pragma('busy_timeout')).toEqual({ timeout: 5000 });
  });
});

describe.each([databaseBackend('postgres'), databaseBackend('sqlite')])('database errors ($name)', (backend) => {
  it.skipIf(!backend.available)("name no value in a refused write's error: prompts stay out of the logs", async () => {
    const { stores, close } = await backend.open();
    try {
      const create = (owner: string, id: string, prompt: string) =>
        stores.sessions.create(row({ id, owner, task: 'text-to-image', model: 'tiny-sd', parameters: { prompt }, batchId: null }));
      const session = await create('alice', unique('session'), 'first');
      const secret = 'a private prompt 7f3a9c';
      const error = await create('bob', session.id, secret).then(
        () => new Error('the duplicate was accepted'),
        (e: unknown) => e as Error,
      );
      expect(error.message).not.toBe('the duplicate was accepted');
      expect(error.message).not.toContain(secret);
      expect(error.message).not.toContain(session.id);
    } finally {
      await close();
    }
  });
});
