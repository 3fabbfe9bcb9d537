import { webCrypto } from '@hush/protocol/web';
import { HushClient } from './client.ts';
import { IndexedDbKeyValueStore } from './store/indexeddb-kv.ts';
import type { SocketFactory, WebSocketLike } from './transport/socket.ts';

/*
 * The browser entry (`@hush/client/web`): WebCrypto, the IndexedDB store and the browser's own
 * WebSocket. Everything it imports is browser-safe (no node:*, no better-sqlite3, no ws).
 */
export * from './index.ts';
export { IndexedDbKeyValueStore } from './store/indexeddb-kv.ts';

/** The browser's WebSocket: it cannot send headers, so the client authenticates with a single-use token. */
export const openBrowserSocket: SocketFactory = (url) => new WebSocket(url) as unknown as WebSocketLike;

/**
 * A Hush client for the browser: WebCrypto, an encrypted IndexedDB store (`dbName`, default
 * "hush"; created on first use with its non-extractable storage key), and the page's WebSocket
 * with socket tokens. The page must be a secure context (https, or http on localhost/127.0.0.1).
 */
export async function openWebClient(options: {
  serverUrl: string;
  /** See HushClientOptions.socketUrl. */
  socketUrl?: string;
  dbName?: string;
  now?: () => number;
}): Promise<HushClient> {
  const store = await IndexedDbKeyValueStore.open(options.dbName);
  const client = new HushClient({
    serverUrl: options.serverUrl,
    ...(options.socketUrl ? { socketUrl: options.socketUrl } : {}),
    store,
    crypto: webCrypto,
    openSocket: openBrowserSocket,
    socketAuth: 'token',
    ...(options.now ? { now: options.now } : {}),
  });
  try {
    await client.load();
  } catch (error) {
    await store.close();
    throw error;
  }
  return client;
}
