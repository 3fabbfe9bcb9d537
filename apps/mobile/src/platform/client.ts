import { HushClient, type WebSocketLike } from '@hush/client';
import { jsCrypto } from '@hush/protocol/js';
import * as SecureStore from 'expo-secure-store';
import { Platform } from 'react-native';
import { openExpoSqliteStore } from '../store/expo-sqlite-kv';

/*
 * iOS and Android: @noble crypto (Hermes has no WebCrypto), the expo-sqlite store with its key in
 * the Keychain/Keystore, and React Native's WebSocket (it can send the Authorization header).
 * Metro picks client.web.ts instead for the web build.
 */

const SERVER_URL_ITEM = 'hush.server-url';

/** The emulator reaches the host's loopback at 10.0.2.2; the iOS simulator shares the host's. */
export const DEFAULT_SERVER_URL = Platform.OS === 'android' ? 'http://10.0.2.2:8080' : 'http://127.0.0.1:8080';

/** Native builds talk to a server the user chooses (before registering). */
export const serverUrlEditable = true;

export async function loadServerUrl(): Promise<string> {
  return (await SecureStore.getItemAsync(SERVER_URL_ITEM)) ?? DEFAULT_SERVER_URL;
}

export async function saveServerUrl(url: string): Promise<void> {
  await SecureStore.setItemAsync(SERVER_URL_ITEM, url);
}

/** React Native's WebSocket takes headers as a third argument (browsers' does not). */
type NativeWebSocket = new (
  url: string,
  protocols: string[] | undefined,
  options: { headers: Record<string, string> },
) => WebSocketLike;

export async function openAppClient(serverUrl: string): Promise<HushClient> {
  const store = await openExpoSqliteStore();
  const client = new HushClient({
    serverUrl,
    store,
    crypto: jsCrypto,
    openSocket: (url, headers) => new (WebSocket as unknown as NativeWebSocket)(url, undefined, { headers }),
    socketAuth: 'header',
  });
  await client.load();
  return client;
}
