import * as SecureStore from 'expo-secure-store';
import * as SQLite from 'expo-sqlite';
import { SealedSqliteKeyValueStore, type SecretStore } from './sealed-sqlite-kv';

/*
 * The phones' store: a SQLite file in the app's private storage (expo-sqlite), every value sealed
 * with AES-256-GCM (sealed-sqlite-kv.ts) under a 32-byte key that lives only in the platform
 * keystore through expo-secure-store: the iOS Keychain with AFTER_FIRST_UNLOCK_THIS_DEVICE_ONLY
 * (readable after the first unlock since boot, never in backups or on another device), the
 * Android Keystore-backed secure storage.
 */

const keystore: SecretStore = {
  get: (name) => SecureStore.getItemAsync(name),
  set: (name, value) =>
    SecureStore.setItemAsync(name, value, { keychainAccessible: SecureStore.AFTER_FIRST_UNLOCK_THIS_DEVICE_ONLY }),
};

export async function openExpoSqliteStore(name = 'hush.db'): Promise<SealedSqliteKeyValueStore> {
  const db = await SQLite.openDatabaseAsync(name);
  return SealedSqliteKeyValueStore.open(db, keystore);
}
