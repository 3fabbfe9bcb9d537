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

export function openAppClient(serverUrl: string): Promise<HushClient> {
  return openWebClient({ serverUrl });
}
