/**
 * The Hush web app end to end, in real Chromium: the standalone server serves the exported web
 * build (apps/mobile/dist, built here if missing or older than its sources); Alice and Bob (two
 * browser contexts, each its own IndexedDB) register through the UI with the codes from the dev
 * SMS log, Alice starts a chat with Bob's account id and sends a text, Bob sees it live, reloads,
 * still has it, and his IndexedDB holds no plaintext.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { type RunningServer, loadConfig, readLatestDevCode, startServer } from '@hush/server/standalone';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WEB_DIST, exportWebBuild, webBuildState } from '../../../apps/mobile/scripts/web-build.mts';
import { launchChromium } from './support/browser.ts';
import { freshNumber } from './support/harness.ts';

let server: RunningServer;
let dataDir: string;
let browser: Browser;
let alice: Page;
let bob: Page;
const pageErrors: string[] = [];

beforeAll(async () => {
  if (webBuildState() !== 'fresh') exportWebBuild();
  dataDir = mkdtempSync(join(tmpdir(), 'hush-web-app-'));
  server = await startServer(
    loadConfig({
      HUSH_PORT: '0',
      HUSH_DATA_DIR: dataDir,
      HUSH_LOG_LEVEL: 'silent',
      HUSH_VERIFY_RESEND_COOLDOWN_SECONDS: '0',
      HUSH_WEB_DIR: WEB_DIST,
    }),
    { devSmsOutput: new PassThrough() },
  );
  expect(server.webDir).toBe(WEB_DIST);
  browser = await launchChromium();
  const open = async (who: string) => {
    const page = await (await browser.newContext()).newPage();
    page.on('pageerror', (error) => pageErrors.push(`${who}: ${error.message}`));
    page.setDefaultTimeout(30_000);
    await page.goto(`${server.url}/`);
    return page;
  };
  [alice, bob] = await Promise.all([open('alice'), open('bob')]);
}, 240_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

/** Number → SMS code (read from the server's dev SMS log) → keys made in the page → the Chats tab. */
async function register(page: Page): Promise<string> {
  const number = freshNumber();
  await page.getByTestId('register-number').fill(number);
  await page.getByTestId('register-request-code').click();
  await page.getByTestId('register-code').waitFor();
  const code = await readLatestDevCode(join(dataDir, 'dev-sms.log'), number);
  if (!code) throw new Error(`no dev SMS code for ${number}`);
  await page.getByTestId('register-code').fill(code);
  await page.getByTestId('register-verify').click();
  await page.getByTestId('tab-chats').waitFor({ timeout: 60_000 });
  await page.getByTestId('tab-me').click();
  const accountId = (await page.getByTestId('me-account-id').textContent())?.trim() ?? '';
  expect(accountId).toMatch(/^[0-9a-f-]{36}$/);
  await page.getByTestId('tab-chats').click();
  return accountId;
}

/** Every value in the page's IndexedDB store, raw (as the browser keeps it), and the storage key's properties. */
function rawIndexedDb(page: Page) {
  return page.evaluate(async () => {
    const db = await new Promise<IDBDatabase>((resolve, reject) => {
      const req = indexedDB.open('hush');
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    const all = <T>(store: string) =>
      new Promise<T[]>((resolve, reject) => {
        const req = db.transaction(store).objectStore(store).getAll();
        req.onsuccess = () => resolve(req.result as T[]);
        req.onerror = () => reject(req.error);
      });
    const records = await all<{ ns: string; k: string; v: Uint8Array }>('kv');
    const [key] = await all<CryptoKey>('meta');
    db.close();
    return {
      records: records.map((r) => ({ ns: r.ns, k: r.k, v: Array.from(r.v) })),
      key: { extractable: key?.extractable, algorithm: key?.algorithm.name },
    };
  });
}

describe('the Hush web app in Chromium', () => {
  const marker = `hello Bob, marker ${Date.now().toString(36)} ✓`;
  let aliceId = '';
  let bobId = '';

  it('Alice and Bob register through the UI (number, SMS code, keys made in the browser)', async () => {
    [aliceId, bobId] = await Promise.all([register(alice), register(bob)]);
    expect(aliceId).not.toBe(bobId);
  });

  it('Alice starts a chat with Bob’s account id and sends a text; Bob sees it live; ticks go to read', async () => {
    await alice.getByTestId('chats-new').click();
    await alice.getByTestId('chats-new-account').fill(bobId);
    await alice.getByTestId('chats-new-start').click();
    await alice.getByTestId('composer-input').fill(marker);
    await alice.getByTestId('composer-send').click();

    const sent = alice.locator('[data-testid^="message-"]', { hasText: marker });
    await sent.waitFor();
    const messageId = ((await sent.getAttribute('data-testid')) ?? '').slice('message-'.length);
    const tick = alice.getByTestId(`status-${messageId}`);
    await expect.poll(() => tick.getAttribute('aria-label'), { timeout: 20_000 }).toMatch(/^(Sent|Delivered|Read)$/);

    // Bob's chat list updates live over his WebSocket, with an unread count.
    const row = bob.getByTestId(`chat-${aliceId}`);
    await row.waitFor({ timeout: 20_000 });
    await expect.poll(() => bob.getByTestId(`chat-unread-${aliceId}`).textContent()).toBe('1');
    await row.click();
    await bob.locator('[data-testid^="message-"]', { hasText: marker }).waitFor();

    // Bob read it: Alice's tick turns to read (delivery and read receipts over the same sessions).
    await expect.poll(() => tick.getAttribute('aria-label'), { timeout: 20_000 }).toBe('Read');

    // And a reply comes back live to Alice's open conversation.
    await bob.getByTestId('composer-input').fill('hi Alice');
    await bob.getByTestId('composer-send').click();
    await alice.locator('[data-testid^="message-"]', { hasText: 'hi Alice' }).waitFor({ timeout: 20_000 });
  });

  it('after a reload Bob still has the conversation (IndexedDB), and IndexedDB holds no plaintext', async () => {
    await bob.reload();
    await bob.getByTestId(`chat-${aliceId}`).click();
    await bob.locator('[data-testid^="message-"]', { hasText: marker }).waitFor();

    const raw = await rawIndexedDb(bob);
    expect(raw.key).toEqual({ extractable: false, algorithm: 'AES-GCM' });
    expect(raw.records.some((r) => r.ns === 'messages')).toBe(true);
    expect(raw.records.length).toBeGreaterThan(100); // account, identity, prekeys, sessions, messages
    const needles = [marker, 'hello Bob', 'hi Alice'].map((t) => Buffer.from(t, 'utf8'));
    for (const record of raw.records) {
      const bytes = Buffer.from(record.v);
      for (const needle of needles) expect(bytes.includes(needle), `${record.ns}/${record.k}`).toBe(false);
      expect(`${record.ns}/${record.k}`).not.toContain('hello');
    }
  });

  it('a second tab of the same browser profile does not run the device a second time', async () => {
    const second = await alice.context().newPage();
    try {
      await second.goto(`${server.url}/`);
      await second.getByText('Hush is open in another tab').waitFor();
      // The first tab still works.
      await alice.getByTestId('composer-input').fill('still here');
      await alice.getByTestId('composer-send').click();
      await bob.locator('[data-testid^="message-"]', { hasText: 'still here' }).waitFor({ timeout: 20_000 });
    } finally {
      await second.close();
    }
  });

  it('the pages raised no uncaught errors', () => {
    expect(pageErrors).toEqual([]);
  });
});
