/**
 * Real Chromium for browser tests (no IndexedDB or WebCrypto fakes): the Debian package at
 * /usr/bin/chromium (override with HUSH_CHROMIUM), driven by playwright-core,
 * with the flags that keep it off the network.
 */
import { existsSync } from 'node:fs';
import { type Browser, chromium } from 'playwright-core';

export const CHROMIUM = process.env.HUSH_CHROMIUM ?? '/usr/bin/chromium';

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * One headless Chromium; each `newContext()` is a separate profile (its own IndexedDB, kept across
 * reloads for the context's life). Playwright gives the browser a fresh temporary user-data-dir.
 */
export function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM))
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (as .ci/run does), or set HUSH_CHROMIUM`);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
}
