// A browser client of the gateway, as a web app would be written: fetch with
// an Authorization header, and a native EventSource, which cannot send one,
// on the session's events link with its stream token (ADR 0028).
'use strict';

const EVENT_TYPES = ['accepted', 'queued', 'started', 'progress', 'requeued', 'result', 'error', 'cancelled'];

window.state = { events: [], opens: 0, connectionErrors: 0, session: null, image: null, failure: null, done: false };

function show(text) {
  document.querySelector('#status').textContent = text;
}

function record(id, type) {
  window.state.events.push({ id, type });
  const item = document.createElement('li');
  item.textContent = `${id} ${type}`;
  document.querySelector('#log').append(item);
}

/** The session's events through EventSource until its result (rejects on an error or cancelled end). */
function followEvents(url) {
  const state = window.state;
  const source = new EventSource(url);
  source.addEventListener('open', () => {
    state.opens += 1;
    show(`following (connection ${state.opens})`);
  });
  return new Promise((resolve, reject) => {
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (event) => {
        // A dropped connection is an 'error' Event too; the session's own error events are messages.
        if (!(event instanceof MessageEvent)) {
          state.connectionErrors += 1;
          show(`connection lost; EventSource reconnects (readyState ${source.readyState})`);
          return;
        }
        record(event.lastEventId, type);
        if (type === 'result' || type === 'error' || type === 'cancelled') {
          // The server ends the stream after its terminal event; without close() EventSource would reconnect.
          source.close();
          if (type === 'result') resolve(JSON.parse(event.data));
          else reject(new Error(`the session ended with ${type}: ${event.data}`));
        }
      });
    }
  });
}

window.followSession = async (gateway, token, job) => {
  const state = window.state;
  const auth = { authorization: `Bearer ${token}` };
  try {
    const created = await fetch(new URL('/api/inference/sessions', gateway), {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify(job),
    });
    if (created.status !== 202) throw new Error(`creating the session answered ${created.status}: ${await created.text()}`);
    state.session = await created.json();
    const result = await followEvents(new URL(state.session.links.events, gateway));
    // Outputs need the credential: fetched with it, shown through an object URL.
    const file = result.files[0];
    const response = await fetch(new URL(file.url, gateway), { headers: auth });
    if (!response.ok) throw new Error(`the output answered ${response.status}`);
    const img = document.querySelector('#output');
    img.src = URL.createObjectURL(await response.blob());
    await img.decode();
    state.image = { width: img.naturalWidth, height: img.naturalHeight, type: response.headers.get('content-type') };
    show(`done: ${state.events.length} events, image ${img.naturalWidth}×${img.naturalHeight}`);
  } catch (error) {
    state.failure = String(error);
    show(`failed: ${state.failure}`);
  }
  state.done = true;
};

/** What a page of an origin CORS does not list gets from the gateway. */
window.probeCors = async (gateway, token, eventsUrl) => {
  const outcome = {};
  const attempt = async (name, request) => {
    try {
      const response = await request();
      outcome[name] = `answered ${response.status}`;
    } catch (error) {
      outcome[name] = `rejected: ${error.name}`;
    }
  };
  await attempt('authorized', () => fetch(new URL('/api/device/list', gateway), { headers: { authorization: `Bearer ${token}` } }));
  await attempt('simple', () => fetch(new URL('/health', gateway)));
  outcome.eventSource = await new Promise((resolve) => {
    const source = new EventSource(new URL(eventsUrl, gateway));
    source.onopen = () => {
      source.close();
      resolve('opened');
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) resolve('closed');
    };
  });
  show(`CORS probe: ${JSON.stringify(outcome)}`);
  return outcome;
};
