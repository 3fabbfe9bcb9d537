import type { HushClient } from '@hush/client';
import { openWebClient } from '@hush/client/web';

/*
 * The web build: WebCrypto, the IndexedDB store with a non-extractable key, the page's WebSocket
 * with socket tokens. The server is the one that served the page.
 */

export const DEFAULT_SERVER_URL = typeof window === 'undefined' ? 'http://127.0.0.1:8080' : window.location.origin;

/** The web app always talks to the server it was served from. */
export const serverUrlEditable = false;

export async function loadServerUrl(): Promise<string> {
  return DEFAULT_SERVER_URL;
}

export async function saveServerUrl(_url: string): Promise<void> {}

/** Two tabs of one profile share one device (one IndexedDB): only one may run it at a time. */
export class OpenInAnotherTabError extends Error {
  constructor() {
    super('Hush is open in another tab or window of this browser. Close it there, then try again.');
    this.name = 'OpenInAnotherTabError';
  }
}

let tabLock: Promise<void> | undefined;

/**
 * Holds the Web Lock "hush-device" for the life of this page (it is released when the page goes
 * away). Waits a few seconds for it, so that a reload, whose old page is still letting go, works.
 */
function holdDeviceLock(): Promise<void> {
  const locks = (globalThis.navigator as Navigator | undefined)?.locks;
  if (!locks) return Promise.resolve();
  tabLock ??= new Promise<void>((resolve, reject) => {
    locks
      .request('hush-device', { signal: AbortSignal.timeout(5000) }, () => {
        resolve();
        return new Promise<void>(() => {}); // held until the page unloads
      })
      .catch(() => {
        tabLock = undefined;
        reject(new OpenInAnotherTabError());
      });
  });
  return tabLock;
}

export async function openAppClient(serverUrl: string): Promise<HushClient> {
  await holdDeviceLock();
  return openWebClient({ serverUrl });
}
