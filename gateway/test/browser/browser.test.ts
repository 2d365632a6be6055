import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { repoRoot } from '../../src/infra/paths.js';
import { startRealGatewayOn, type GatewayOnDatabase } from '../helpers/real-gateway.js';
import { signToken } from '../helpers/tokens.js';
import { requirement } from '../helpers/tools.js';
import { serveStaticSite, type StaticSite } from './helpers/static-site.js';
import { TcpProxy } from './helpers/tcp-proxy.js';

/**
 * A real browser (Debian's Chromium, headless, driven by puppeteer-core)
 * against the real gateway with real workers: a web app on its own origin
 * creates a session with fetch, follows it with a native EventSource through
 * a connection the test cuts mid-stream, and shows the output image; a page
 * of an unlisted origin is refused by CORS; Swagger UI runs a request.
 * Screenshots go to var/browser-artifacts/ (git-ignored).
 */
const CHROMIUM = requirement(
  ((path) => (existsSync(path) ? path : null))(process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'),
  'chromium',
  'apt-get install chromium, or set CHROMIUM_PATH',
);
const SITE = fileURLToPath(new URL('./site/', import.meta.url));
const ARTIFACTS = join(repoRoot, 'var', 'browser-artifacts');
const token = signToken({ sub: 'alice', scope: 'inference', expiresInSeconds: 3600 });
/** Seconds of denoising on a CPU, one progress event per step: long enough to cut the stream mid-way. */
const STEPS = 40;
const SIZE = 128;
const job = { task: 'text-to-image', model: 'tiny-sd', parameters: { prompt: 'a lighthouse at dusk', steps: STEPS, width: SIZE, height: SIZE, seed: 5 } };

interface PageState {
  events: { id: string; type: string }[];
  opens: number;
  connectionErrors: number;
  session: { id: string; links: { events: string } } | null;
  image: { width: number; height: number; type: string } | null;
  failure: string | null;
  done: boolean;
}

describe.skipIf(!CHROMIUM)('a real browser', () => {
  let real: GatewayOnDatabase;
  let app: StaticSite;
  let foreign: StaticSite;
  let proxy: TcpProxy;
  let browser: Browser;
  let followed: PageState;

  const newPage = async (): Promise<Page> => {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    return page;
  };
  const screenshot = (page: Page, name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
  const state = (page: Page) => page.evaluate(() => (globalThis as unknown as { state: PageState }).state);
  /** Wait until the page's state satisfies `predicate` (run in the page); on timeout, fail with what the page had. */
  const waitForState = async (page: Page, predicate: (s: PageState) => boolean, timeout: number) => {
    try {
      await page.waitForFunction((test: string) => new Function('s', `return (${test})(s)`)((globalThis as unknown as { state: PageState }).state), { polling: 20, timeout }, predicate.toString());
    } catch (error) {
      await screenshot(page, 'timed-out');
      throw new Error(`the page did not get there within ${timeout} ms: ${JSON.stringify(await state(page))}`, { cause: error });
    }
  };

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    [app, foreign] = await Promise.all([serveStaticSite(SITE), serveStaticSite(SITE)]);
    real = await startRealGatewayOn('sqlite', {
      MODEL_DIRECTORY: inject('demoModels'),
      OUTPUT_DIRECTORY: mkdtempSync(join(tmpdir(), 'device-ops-outputs-')),
      CORS_ORIGINS: app.origin,
      LOG_LEVEL: 'info',
    });
    const gateway = new URL(real.url);
    proxy = await TcpProxy.start({ host: gateway.hostname, port: Number(gateway.port) });
    browser = await puppeteer.launch({
      executablePath: CHROMIUM!,
      headless: true,
      // Root in a container: no user namespaces for Chromium's sandbox.
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    });
  });

  afterAll(async () => {
    await browser?.close();
    await proxy?.close();
    await Promise.all([app?.close(), foreign?.close()]);
    await real?.close();
  });

  it('creates a session with fetch, follows it with EventSource across a cut connection without gap or duplicate, and shows the image', async () => {
    const page = await newPage();
    await page.goto(`${app.origin}/index.html`);
    const flow = page
      .evaluate((gateway, bearer, body) => (globalThis as unknown as { followSession: (...a: unknown[]) => Promise<void> }).followSession(gateway, bearer, body), proxy.url, token, job)
      .catch((error: unknown) => error);

    // Mid-stream: the job runs and progress flows.
    await waitForState(page, (s) => s.done || s.events.filter((e) => e.type === 'progress').length >= 3, 120_000);
    const before = await state(page);
    expect(before.failure).toBeNull();
    expect(before.events.map((e) => e.type)).not.toContain('result');
    const lastSeen = Number(before.events.at(-1)!.id);
    expect(proxy.cut()).toBeGreaterThan(0);

    await waitForState(page, (s) => s.done, 120_000);
    expect(await flow).toBeUndefined();
    followed = await state(page);
    await screenshot(page, 'follow-session');
    expect(followed.failure).toBeNull();

    // The browser reconnected on its own, to the same URL, saying where it was.
    expect(followed.connectionErrors).toBeGreaterThanOrEqual(1);
    expect(followed.opens).toBe(2);
    const eventsPath = followed.session!.links.events;
    expect(eventsPath).toContain('access_token=');
    const streams = proxy.requests.filter((r) => r.method === 'GET' && r.path === eventsPath);
    expect(streams).toHaveLength(2);
    expect(streams[0]!.headers['last-event-id']).toBeUndefined();
    expect(Number(streams[1]!.headers['last-event-id'])).toBeGreaterThanOrEqual(lastSeen);
    expect(streams.every((r) => r.headers.origin === app.origin && r.headers.authorization === undefined)).toBe(true);

    // Every event once, in order, from the first to the result: no gap, no duplicate.
    const ids = followed.events.map((e) => Number(e.id));
    expect(ids).toEqual(ids.map((_, i) => i + 1));
    expect(followed.events.at(-1)!.type).toBe('result');
    expect(followed.events.filter((e) => e.type === 'progress')).toHaveLength(STEPS);
    expect(followed.events.filter((e) => Number(e.id) > Number(streams[1]!.headers['last-event-id'])).length).toBeGreaterThan(0);

    // The output, fetched with the credential, decoded by the browser.
    expect(followed.image).toEqual({ width: SIZE, height: SIZE, type: 'image/png' });
    const naturalWidth = await page.$eval('#output', (img) => (img as unknown as { naturalWidth: number }).naturalWidth);
    expect(naturalWidth).toBeGreaterThan(0);
    // The token went by in URLs, never into the gateway's log.
    expect(real.logs.text).not.toContain(new URL(eventsPath, 'http://x').searchParams.get('access_token')!);
    await page.close();
  }, 300_000);

  it('refuses a page of an origin CORS does not list: its fetch rejects, its EventSource fails', async () => {
    expect(followed, 'the session of the first test').toBeDefined();
    const page = await newPage();
    await page.goto(`${foreign.origin}/index.html`);
    const outcome = await page.evaluate(
      (gateway, bearer, events) => (globalThis as unknown as { probeCors: (...a: unknown[]) => Promise<Record<string, string>> }).probeCors(gateway, bearer, events),
      proxy.url,
      token,
      followed.session!.links.events,
    );
    await screenshot(page, 'foreign-origin');
    expect(outcome).toEqual({ authorized: 'rejected: TypeError', simple: 'rejected: TypeError', eventSource: 'closed' });
    // The same calls from the listed origin pass, so it is the origin that was refused.
    const listed = await newPage();
    await listed.goto(`${app.origin}/index.html`);
    const allowed = await listed.evaluate(
      (gateway, bearer) => fetch(new URL('/api/device/list', gateway as string), { headers: { authorization: `Bearer ${bearer as string}` } }).then((r) => r.status),
      proxy.url,
      token,
    );
    expect(allowed).toBe(200);
    await Promise.all([page.close(), listed.close()]);
  });

  it('runs Swagger UI: Authorize with a token, Try it out and Execute GET /api/device/list, 200 shown', async () => {
    const page = await newPage();
    await page.goto(`${real.url}/api-docs`, { waitUntil: 'networkidle0' });
    await page.click('.swagger-ui .auth-wrapper .btn.authorize');
    await page.waitForSelector('.modal-ux .auth-container');
    const containers = await page.$$('.modal-ux .auth-container');
    let authorized = false;
    for (const container of containers) {
      if (!(await container.evaluate((node) => node.textContent?.includes('bearerAuth') ?? false))) continue;
      await (await container.$('input'))!.type(token);
      await (await container.$('button.authorize'))!.click();
      authorized = true;
      break;
    }
    expect(authorized).toBe(true);
    await page.screenshot({ path: join(ARTIFACTS, 'swagger-authorized.png') });
    await page.click('.modal-ux button.close-modal');

    const operation = '#operations-Devices-listDevices';
    await page.click(`${operation} .opblock-summary-control`);
    await page.waitForSelector(`${operation} .try-out__btn`);
    await page.click(`${operation} .try-out__btn`);
    await page.click(`${operation} button.execute`);
    const status = await page.waitForSelector(`${operation} .live-responses-table .response .response-col_status`, { timeout: 30_000 });
    expect(await status!.evaluate((node) => node.textContent?.trim())).toBe('200');
    const body = await page.$eval(`${operation} .live-responses-table .response-col_description pre`, (node) => node.textContent ?? '');
    expect(JSON.parse(body)).toMatchObject({ devices: expect.any(Array) });
    await (await page.$(operation))!.screenshot({ path: join(ARTIFACTS, 'swagger-try-it-out.png') });
    await page.close();
  }, 120_000);
});
