import {
  type KeyValueBatch,
  type KeyValueStore,
  StoreLockedError,
  StoreValueCorruptedError,
  checkIdentifier,
  checkValue,
  slotAad,
} from '@hush/client';
import { gcm } from '@noble/ciphers/aes.js';
import { randomBytes } from '@noble/ciphers/utils.js';

/*
 * The React Native implementation of the client's storage port, over any SQLite database with
 * expo-sqlite's async API (expo-sqlite-kv.ts passes the real one; tests pass better-sqlite3) and a
 * secret store for the key (expo-secure-store on phones). Two tables: meta(name, value) with
 * the check value, and kv(namespace, key, value), where every value is
 *
 *   nonce(12) ‖ AES-256-GCM ciphertext ‖ tag(16)    (@noble/ciphers)
 *
 * under a random 32-byte storage key with the slot as associated data (the same encoding as the
 * Node and web adapters). The storage key lives only in the secret store. A check value sealed
 * under the key detects a secret store that lost or changed it (StoreLockedError). A batch is one
 * exclusive SQLite transaction.
 */

export type SqlValue = string | number | null | Uint8Array;

/** The part of expo-sqlite's SQLiteDatabase this store uses. */
export interface SqlDatabase {
  execAsync(source: string): Promise<void>;
  getFirstAsync<T>(source: string, params: SqlValue[]): Promise<T | null>;
  getAllAsync<T>(source: string, params: SqlValue[]): Promise<T[]>;
  runAsync(source: string, params: SqlValue[]): Promise<unknown>;
  withExclusiveTransactionAsync(task: (tx: Pick<SqlDatabase, 'runAsync'>) => Promise<void>): Promise<void>;
  closeAsync(): Promise<void>;
}

/** Where the storage key is kept (hex): the Keychain / Keystore on phones. */
export interface SecretStore {
  get(name: string): Promise<string | null>;
  set(name: string, value: string): Promise<void>;
}

export const KEY_ITEM = 'hush.storage-key.v1';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
/** The check value lives in its own table, bound to this slot. */
const CHECK_NS = 'meta';
const CHECK_KEY = 'check';
const CHECK_TEXT = 'hush-kv-v1 check';

const toHex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
const fromHex = (text: string) => Uint8Array.from(text.match(/../g) ?? [], (h) => Number.parseInt(h, 16));

/** The smallest string above every string starting with `prefix` in SQLite's BINARY (code point) order. */
function codePointPrefixEnd(prefix: string): string | undefined {
  const chars = Array.from(prefix);
  while (chars.length > 0) {
    const cp = chars.pop()?.codePointAt(0) ?? 0;
    if (cp < 0x10ffff) return chars.join('') + String.fromCodePoint(cp === 0xd7ff ? 0xe000 : cp + 1);
  }
  return undefined;
}

function seal(key: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  const nonce = randomBytes(NONCE_BYTES);
  const body = gcm(key, nonce, aad).encrypt(plaintext);
  const out = new Uint8Array(NONCE_BYTES + body.length);
  out.set(nonce, 0);
  out.set(body, NONCE_BYTES);
  return out;
}

function unseal(key: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | undefined {
  if (sealed.length < NONCE_BYTES + TAG_BYTES) return undefined;
  try {
    return gcm(key, sealed.subarray(0, NONCE_BYTES), aad).decrypt(sealed.subarray(NONCE_BYTES));
  } catch {
    return undefined;
  }
}

interface Row {
  key: string;
  value: Uint8Array;
}

export class SealedSqliteKeyValueStore implements KeyValueStore {
  private closed = false;

  private constructor(
    private readonly db: SqlDatabase,
    private readonly key: Uint8Array,
  ) {}

  /** Opens the store in `db` (creating its table and, on first use, its key in `secrets`). */
  static async open(db: SqlDatabase, secrets: SecretStore): Promise<SealedSqliteKeyValueStore> {
    try {
      await db.execAsync(`
        PRAGMA journal_mode = WAL;
        PRAGMA synchronous = FULL;
        PRAGMA secure_delete = ON;
        CREATE TABLE IF NOT EXISTS kv (
          namespace TEXT NOT NULL,
          key TEXT NOT NULL,
          value BLOB NOT NULL,
          PRIMARY KEY (namespace, key)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID;
      `);
      const check = await db.getFirstAsync<{ value: Uint8Array }>('SELECT value FROM meta WHERE name = ?', [CHECK_KEY]);
      const stored = await secrets.get(KEY_ITEM);
      let key: Uint8Array;
      if (check) {
        if (!stored) throw new StoreLockedError('the storage key is missing from the keystore');
        key = fromHex(stored);
        const plain = unseal(key, check.value, slotAad(CHECK_NS, CHECK_KEY));
        if (!plain || new TextDecoder().decode(plain) !== CHECK_TEXT) throw new StoreLockedError();
      } else {
        // A new store: a fresh key (or the one a first attempt stored), kept only in the secret store.
        key = stored ? fromHex(stored) : randomBytes(32);
        if (key.length !== 32) throw new StoreLockedError('the storage key in the keystore is malformed');
        if (!stored) await secrets.set(KEY_ITEM, toHex(key));
        await db.runAsync('INSERT INTO meta (name, value) VALUES (?, ?)', [
          CHECK_KEY,
          seal(key, new TextEncoder().encode(CHECK_TEXT), slotAad(CHECK_NS, CHECK_KEY)),
        ]);
      }
      return new SealedSqliteKeyValueStore(db, key);
    } catch (error) {
      await db.closeAsync().catch(() => undefined);
      throw error;
    }
  }

  async get(namespace: string, key: string): Promise<Uint8Array | undefined> {
    this.ensureOpen();
    checkIdentifier('namespace', namespace);
    checkIdentifier('key', key);
    const row = await this.db.getFirstAsync<{ value: Uint8Array }>(
      'SELECT value FROM kv WHERE namespace = ? AND key = ?',
      [namespace, key],
    );
    return row ? this.decrypt(namespace, key, row.value) : undefined;
  }

  async list(namespace: string, prefix = ''): Promise<[key: string, value: Uint8Array][]> {
    this.ensureOpen();
    checkIdentifier('namespace', namespace);
    checkIdentifier('prefix', prefix);
    const end = codePointPrefixEnd(prefix);
    const rows =
      end === undefined
        ? await this.db.getAllAsync<Row>('SELECT key, value FROM kv WHERE namespace = ? AND key >= ? ORDER BY key', [
            namespace,
            prefix,
          ])
        : await this.db.getAllAsync<Row>(
            'SELECT key, value FROM kv WHERE namespace = ? AND key >= ? AND key < ? ORDER BY key',
            [namespace, prefix, end],
          );
    // The port's order is JavaScript's (UTF-16 code units); SQLite's is code points.
    rows.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return rows.map((r) => [r.key, this.decrypt(namespace, r.key, r.value)]);
  }

  async apply(batch: KeyValueBatch): Promise<void> {
    this.ensureOpen();
    if (typeof batch !== 'object' || batch === null) throw new TypeError('batch must be an object');
    const puts = batch.put ?? [];
    const deletes = batch.delete ?? [];
    if (!Array.isArray(puts) || !Array.isArray(deletes))
      throw new TypeError('batch.put and batch.delete must be arrays');
    // Validate and seal everything first: an invalid entry writes nothing.
    const sealed: [string, string, Uint8Array][] = [];
    for (const entry of puts) {
      if (!Array.isArray(entry)) throw new TypeError('each put must be [namespace, key, value]');
      const [namespace, key, value] = entry;
      checkIdentifier('namespace', namespace);
      checkIdentifier('key', key);
      checkValue(value);
      sealed.push([namespace, key, seal(this.key, value, slotAad(namespace, key))]);
    }
    for (const entry of deletes) {
      if (!Array.isArray(entry)) throw new TypeError('each delete must be [namespace, key]');
      checkIdentifier('namespace', entry[0]);
      checkIdentifier('key', entry[1]);
    }
    if (sealed.length === 0 && deletes.length === 0) return;
    await this.db.withExclusiveTransactionAsync(async (tx) => {
      for (const [namespace, key, value] of sealed)
        await tx.runAsync(
          'INSERT INTO kv (namespace, key, value) VALUES (?, ?, ?) ' +
            'ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value',
          [namespace, key, value],
        );
      for (const [namespace, key] of deletes)
        await tx.runAsync('DELETE FROM kv WHERE namespace = ? AND key = ?', [namespace, key]);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.key.fill(0);
    await this.db.closeAsync();
  }

  private ensureOpen(): void {
    if (this.closed) throw new Error('the store is closed');
  }

  private decrypt(namespace: string, key: string, sealed: Uint8Array): Uint8Array {
    const plain = unseal(this.key, sealed, slotAad(namespace, key));
    if (!plain) throw new StoreValueCorruptedError(namespace, key);
    return plain;
  }
}
