import { describe, expect, it } from 'vitest';
import { createFakeSessionStores } from '../../src/features/sessions/fake-session-stores.js';
import { SessionEventLog } from '../../src/features/sessions/session-event-log.js';
import type { SessionEvent } from '../../src/features/sessions/session-types.js';
import { LocalSessionBus } from '../../src/infra/bus/session-bus.js';
import { createLogger } from '../../src/infra/logger.js';
import { LogCapture } from '../helpers/log-capture.js';
import { waitFor } from '../helpers/wait.js';

const refused = () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });

async function setup() {
  const stores = createFakeSessionStores();
  let down = false;
  const writes: number[] = [];
  const store = {
    append: (event: SessionEvent) => stores.events.append(event),
    listAfter: (id: string, after: number) => stores.events.listAfter(id, after),
    appendMany: async (events: readonly SessionEvent[]) => {
      if (down) throw refused();
      writes.push(events.length);
      await stores.events.appendMany(events);
    },
    lastSequences: (id: string) => stores.events.lastSequences(id),
  };
  const logs = new LogCapture();
  const bus = new LocalSessionBus();
  const announced: [string, number][] = [];
  const publish = bus.publishStored.bind(bus);
  bus.publishStored = (upTo) => {
    announced.push(...upTo);
    publish(upTo);
  };
  const log = new SessionEventLog(store, createLogger({ level: 'debug', stream: logs }), bus);
  const session = async () => {
    const s = await stores.sessions.create({
      id: crypto.randomUUID(),
      owner: 'alice',
      task: 'tensor',
      model: 'm',
      parameters: {},
      batchId: null,
      job: { kind: 'postprocess', task: 'enhance', model: '', sourceOutput: 'a/b.png' },
      correlationId: 'c',
      ownerInstance: 'me',
    });
    log.open(s.id);
    return s.id;
  };
  const event = (sessionId: string, sequence: number): SessionEvent => ({ sessionId, sequence, type: 'progress', data: { sequence }, createdAt: new Date() });
  return { stores, store, bus, log, logs, writes, session, event, announced, setDown: (value: boolean) => (down = value) };
}

describe('session event log', () => {
  it('writes the events of many sessions together, in one write', async () => {
    const { stores, log, writes, session, event } = await setup();
    const ids = await Promise.all([session(), session(), session()]);
    for (const id of ids) for (let i = 1; i <= 3; i += 1) log.append(event(id, i));
    await log.flush();
    expect(writes).toEqual([9]);
    for (const id of ids) expect((await stores.events.listAfter(id, 0)).map((e) => e.sequence)).toEqual([1, 2, 3]);
  });

  it('keeps events while the database is away and stores them, in order, once it is back', async () => {
    const { stores, log, logs, session, event, setDown } = await setup();
    const id = await session();
    setDown(true);
    log.append(event(id, 1));
    await log.flush();
    log.append(event(id, 2));
    expect(await stores.events.listAfter(id, 0)).toEqual([]);
    expect(logs.find((l) => l.message === 'could not store session events; will retry')).toHaveLength(1);
    setDown(false);
    await waitFor(async () => ((await stores.events.listAfter(id, 0)).length === 2 ? true : undefined), { timeoutMs: 5000, what: 'the events to be stored' });
    expect((await stores.events.listAfter(id, 0)).map((e) => e.sequence)).toEqual([1, 2]);
    expect(logs.find((l) => l.message === 'session events stored again')).toHaveLength(1);
  });

  it('drops only the events of a session the database refuses, stores the others, and does not retry for ever', async () => {
    const { stores, log, logs, writes, session, event } = await setup();
    const good = await session();
    const bad = await session();
    await stores.events.append(event(bad, 1)); // already stored: writing sequence 1 again is refused
    log.append(event(good, 1));
    log.append(event(bad, 1));
    log.append(event(good, 2));
    await log.flush();
    expect((await stores.events.listAfter(good, 0)).map((e) => e.sequence)).toEqual([1, 2]);
    const dropped = logs.find((l) => l.message === 'session events refused by the database and dropped');
    expect(dropped).toHaveLength(1);
    expect(dropped[0]).toMatchObject({ sessions: 1, sessionIds: [bad] });
    // Nothing left to retry: a later flush writes only new events.
    const before = writes.length;
    log.append(event(good, 3));
    await log.flush();
    expect(writes.slice(before)).toEqual([1]);
  });

  it('tells every instance how far each session is stored, after the write and only then', async () => {
    const { log, session, event, announced, setDown } = await setup();
    const [a, b] = [await session(), await session()];
    setDown(true);
    log.append(event(a, 1));
    await log.flush();
    expect(announced).toEqual([]);
    setDown(false);
    log.append(event(a, 2));
    log.append(event(b, 1));
    await log.flush();
    expect(new Map(announced)).toEqual(new Map([[a, 2], [b, 1]]));
  });

  it("follows a session relayed by another instance from the store, as the bus announces its events", async () => {
    const { stores, store, bus, session, event } = await setup();
    const id = await session();
    // Another instance writes them; this log does not relay the session.
    const elsewhere = new SessionEventLog(store, createLogger({ level: 'error', stream: new LogCapture() }), bus);
    const seen: number[] = [];
    await stores.events.append(event(id, 1));
    const here = new SessionEventLog(store, createLogger({ level: 'error', stream: new LogCapture() }), bus);
    const { unsubscribe, live } = await here.follow(id, 0, (e) => seen.push(e.sequence));
    expect(live).toBe(true);
    expect(seen).toEqual([1]);
    elsewhere.open(id, 2);
    for (const sequence of [2, 3, 4]) elsewhere.append(event(id, sequence));
    await elsewhere.flush();
    await waitFor(async () => (seen.length === 4 ? true : undefined), { what: 'the announced events' });
    expect(seen).toEqual([1, 2, 3, 4]);
    unsubscribe();
  });

  it('moves the followers of a session it stops relaying to the store, without a gap or a duplicate', async () => {
    const { store, bus, log, session, event } = await setup();
    const id = await session();
    const seen: number[] = [];
    log.append(event(id, 1));
    await log.follow(id, 0, (e) => seen.push(e.sequence));
    log.append(event(id, 2));
    await log.release(id);
    // The session goes on elsewhere.
    const elsewhere = new SessionEventLog(store, createLogger({ level: 'error', stream: new LogCapture() }), bus);
    elsewhere.open(id, 3);
    elsewhere.append(event(id, 3));
    await elsewhere.flush();
    await waitFor(async () => (seen.length === 3 ? true : undefined), { what: 'the event written elsewhere' });
    expect(seen).toEqual([1, 2, 3]);
  });
});
