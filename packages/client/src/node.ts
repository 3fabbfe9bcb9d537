import { nodeCrypto } from '@hush/protocol/node';
import WebSocket from 'ws';
import { HushClient } from './client.ts';
import { SqliteKeyValueStore, type SqliteKeyValueStoreOptions, type StoreProtection } from './store/sqlite-kv.ts';
import type { SocketFactory, WebSocketLike } from './transport/socket.ts';

export { SqliteKeyValueStore, type StoreProtection } from './store/sqlite-kv.ts';

/** Node's WebSocket: `ws`, which can send the Authorization header on the upgrade. */
export const openNodeSocket: SocketFactory = (url, headers) =>
  new WebSocket(url, { headers }) as unknown as WebSocketLike;

/**
 * A Hush client for Node (the CLI, tests): node:crypto, an encrypted SQLite store at `storePath`
 * (created on first use), and `ws` for the live connection.
 */
export async function openNodeClient(options: {
  serverUrl: string;
  /** See HushClientOptions.socketUrl. */
  socketUrl?: string;
  storePath: string;
  protection: StoreProtection;
  storeOptions?: SqliteKeyValueStoreOptions;
  now?: () => number;
}): Promise<HushClient> {
  const store = (await SqliteKeyValueStore.exists(options.storePath))
    ? await SqliteKeyValueStore.open(options.storePath, options.protection, options.storeOptions)
    : await SqliteKeyValueStore.create(options.storePath, options.protection, options.storeOptions);
  const client = new HushClient({
    serverUrl: options.serverUrl,
    ...(options.socketUrl ? { socketUrl: options.socketUrl } : {}),
    store,
    crypto: nodeCrypto,
    openSocket: openNodeSocket,
    ...(options.now ? { now: options.now } : {}),
  });
  await client.load();
  return client;
}
