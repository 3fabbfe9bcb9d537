/**
 * The phones' store logic (sealed-sqlite-kv.ts) on a real SQLite engine: better-sqlite3 behind
 * expo-sqlite's async API shape, and an in-memory secret store in place of the Keychain/Keystore
 * (expo-sqlite and expo-secure-store themselves only run on a device or emulator).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import {
  KEY_ITEM,
  SealedSqliteKeyValueStore,
  type SecretStore,
  type SqlDatabase,
  type SqlValue,
} from '../src/store/sealed-sqlite-kv.ts';

function sqlite(path: string): SqlDatabase & { raw: Database.Database } {
  const raw = new Database(path);
  const bind = (params: SqlValue[]) => params.map((v) => (v instanceof Uint8Array ? Buffer.from(v) : v));
  const db: SqlDatabase & { raw: Database.Database } = {
    raw,
    async execAsync(source) {
      raw.exec(source);
    },
    async getFirstAsync<T>(source: string, params: SqlValue[]) {
      return (raw.prepare(source).get(...bind(params)) as T | undefined) ?? null;
    },
    async getAllAsync<T>(source: string, params: SqlValue[]) {
      return raw.prepare(source).all(...bind(params)) as T[];
    },
    async runAsync(source, params) {
      return raw.prepare(source).run(...bind(params));
    },
    async withExclusiveTransactionAsync(task) {
      raw.exec('BEGIN EXCLUSIVE');
      try {
        await task(db);
        raw.exec('COMMIT');
      } catch (error) {
        raw.exec('ROLLBACK');
        throw error;
      }
    },
    async closeAsync() {
      raw.close();
    },
  };
  return db;
}

function memorySecrets(): SecretStore & { items: Map<string, string> } {
  const items = new Map<string, string>();
  return {
    items,
    get: async (name) => items.get(name) ?? null,
    set: async (name, value) => {
      items.set(name, value);
    },
  };
}

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array | undefined) => (b ? new TextDecoder().decode(b) : undefined);

async function fresh() {
  const path = join(mkdtempSync(join(tmpdir(), 'hush-sealed-')), 'hush.db');
  const secrets = memorySecrets();
  const db = sqlite(path);
  const store = await SealedSqliteKeyValueStore.open(db, secrets);
  return { path, secrets, db, store };
}

describe('SealedSqliteKeyValueStore (the phones’ store) on SQLite', () => {
  it('puts, gets, lists by prefix in JavaScript key order, overwrites, deletes', async () => {
    const { store } = await fresh();
    await store.apply({
      put: [
        ['sessions', 'bob.2', enc('b2')],
        ['sessions', 'bob.1', enc('b1')],
        ['sessions', 'bobby.1', enc('x')],
        ['sessions', 'alice.1', enc('a1')],
        ['other', 'bob.1', enc('other')],
        ['sessions', 'bob.1', enc('b1 again')],
        // SQLite orders by code point (U+E000 before U+1F600); the port by UTF-16 code unit (the reverse).
        ['order', '\ue000', enc('bmp')],
        ['order', '\u{1f600}', enc('astral')],
      ],
    });
    expect((await store.list('sessions', 'bob.')).map(([k, v]) => [k, dec(v)])).toEqual([
      ['bob.1', 'b1 again'],
      ['bob.2', 'b2'],
    ]);
    expect((await store.list('sessions')).map(([k]) => k)).toEqual(['alice.1', 'bob.1', 'bob.2', 'bobby.1']);
    expect((await store.list('order')).map(([k]) => k)).toEqual(['\u{1f600}', '\ue000']);
    expect(dec(await store.get('other', 'bob.1'))).toBe('other');
    await store.apply({ delete: [['sessions', 'bob.2']] });
    expect(await store.get('sessions', 'bob.2')).toBeUndefined();
    expect((await store.list('sessions', 'bob.')).map(([k]) => k)).toEqual(['bob.1']);
    await store.close();
  });

  it('writes only ciphertext to the file, and keeps the key in the secret store alone', async () => {
    const { store, db, secrets } = await fresh();
    const marker = 'plaintext marker 42';
    await store.apply({ put: [['messages', 'm1', enc(marker)]] });
    const rows = db.raw.prepare('SELECT namespace, key, value FROM kv').all() as { value: Buffer }[];
    expect(rows).toHaveLength(1);
    expect(rows[0]?.value.includes(Buffer.from(marker))).toBe(false);
    expect(rows[0]?.value.length).toBe(12 + marker.length + 16);
    const key = secrets.items.get(KEY_ITEM) ?? '';
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    const file = db.raw.prepare('SELECT value FROM meta').all() as { value: Buffer }[];
    for (const row of [...rows, ...file]) expect(row.value.includes(Buffer.from(key, 'hex'))).toBe(false);
    await store.close();
  });

  it('reopens with the key from the secret store; a lost or different key is StoreLockedError', async () => {
    const { path, secrets, store } = await fresh();
    await store.apply({ put: [['account', 'self', enc('me')]] });
    await store.close();

    const again = await SealedSqliteKeyValueStore.open(sqlite(path), secrets);
    expect(dec(await again.get('account', 'self'))).toBe('me');
    await again.close();

    await expect(SealedSqliteKeyValueStore.open(sqlite(path), memorySecrets())).rejects.toMatchObject({
      name: 'StoreLockedError',
    });
    const other = memorySecrets();
    other.items.set(KEY_ITEM, 'ab'.repeat(32));
    await expect(SealedSqliteKeyValueStore.open(sqlite(path), other)).rejects.toMatchObject({
      name: 'StoreLockedError',
    });
  });

  it('binds each value to its slot: a value moved to another key fails authentication', async () => {
    const { store, db } = await fresh();
    await store.apply({
      put: [
        ['contacts', 'alice', enc('alice')],
        ['contacts', 'bob', enc('bob')],
      ],
    });
    const alice = db.raw.prepare("SELECT value FROM kv WHERE key = 'alice'").get() as { value: Buffer };
    db.raw.prepare("UPDATE kv SET value = ? WHERE key = 'bob'").run(alice.value);
    await expect(store.get('contacts', 'bob')).rejects.toMatchObject({ name: 'StoreCorruptedError' });
    await expect(store.list('contacts')).rejects.toMatchObject({ name: 'StoreCorruptedError' });
    expect(dec(await store.get('contacts', 'alice'))).toBe('alice');
    await store.close();
  });

  it('applies a batch all or nothing', async () => {
    const { store, db } = await fresh();
    await store.apply({ put: [['ns', 'keep', new Uint8Array([1])]] });
    const bad = [
      {
        put: [
          ['ns', 'a', new Uint8Array([2])],
          ['ns', 'b', 'not bytes'],
        ],
        delete: [['ns', 'keep']],
      },
      {
        put: [['ns', 'a', new Uint8Array([2])]],
        delete: [
          ['ns', 'keep'],
          ['ns', '\ud800'],
        ],
      },
    ];
    for (const batch of bad) await expect(store.apply(batch as never)).rejects.toThrow(TypeError);
    expect((await store.list('ns')).map(([k]) => k)).toEqual(['keep']);

    // A failure inside the SQL transaction rolls back what it had written.
    db.raw.exec(
      `CREATE TRIGGER refuse BEFORE INSERT ON kv WHEN NEW.key = 'boom' BEGIN SELECT RAISE(ABORT, 'refused'); END`,
    );
    await expect(
      store.apply({
        put: [
          ['ns', 'first', new Uint8Array([3])],
          ['ns', 'boom', new Uint8Array([4])],
        ],
      }),
    ).rejects.toThrow('refused');
    expect((await store.list('ns')).map(([k]) => k)).toEqual(['keep']);
    await store.close();
  });
});
