import { describe, expect, it } from 'vitest';
import { createFakeSessionStores } from '../../src/features/sessions/fake-session-stores.js';
import { SessionEventLog } from '../../src/features/sessions/session-event-log.js';
import type { SessionEvent } from '../../src/features/sessions/session-types.js';
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
  };
  const logs = new LogCapture();
  const log = new SessionEventLog(store, createLogger({ level: 'debug', stream: logs }));
  const session = async () => {
    const s = await stores.sessions.create({ id: crypto.randomUUID(), owner: 'alice', task: 'tensor', model: 'm', parameters: {}, batchId: null });
    log.open(s.id);
    return s.id;
  };
  const event = (sessionId: string, sequence: number): SessionEvent => ({ sessionId, sequence, type: 'progress', data: { sequence }, createdAt: new Date() });
  return { stores, log, logs, writes, session, event, setDown: (value: boolean) => (down = value) };
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
});
