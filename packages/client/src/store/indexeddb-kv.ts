import { type KeyValueBatch, type KeyValueStore, StoreLockedError } from './kv.ts';
import { StoreValueCorruptedError, checkIdentifier, checkValue, prefixEnd, slotAad } from './slot.ts';

/*
 * The browser implementation of the client's storage port: one IndexedDB database with two object
 * stores.
 *
 *   meta   'storage-key' → a non-extractable AES-256-GCM CryptoKey (structured-cloned by the
 *          browser: the page can use it, but neither the page nor anyone reading the origin's
 *          storage through the page's APIs can export its bytes)
 *   kv     {ns, k, v}, key path [ns, k]; v = nonce(12) ‖ AES-256-GCM ciphertext ‖ tag(16)
 *
 * Every value is sealed under the storage key with the slot as associated data (the same encoding
 * as the Node adapter, see slot.ts), so a value copied to another slot fails authentication. A
 * batch is one readwrite transaction with strict durability: all of it or none of it.
 *
 * Namespaces, keys and the sizes of values are not hidden. What the non-extractable key buys: no
 * script in the page (an XSS payload included) can read the key bytes out and take them elsewhere;
 * it can only decrypt through the key while it runs in the page, as the app does. The browser keeps
 * the key in the same profile as the database, so someone holding a copy of the profile directory
 * holds both (full-disk encryption and the OS account protect that copy, as for any browser data).
 */

const DEFAULT_DB_NAME = 'hush';
const DB_VERSION = 1;
const KV = 'kv';
const META = 'meta';
const STORAGE_KEY = 'storage-key';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

interface KvRecord {
  ns: string;
  k: string;
  v: Uint8Array;
}

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error('IndexedDB request failed'));
  });
}

function completion(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error('IndexedDB transaction failed'));
    tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
  });
}

function openDatabase(name: string): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    if (typeof indexedDB === 'undefined') {
      reject(new StoreLockedError('IndexedDB is not available here (a private window may disable it)'));
      return;
    }
    const req = indexedDB.open(name, DB_VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains(META)) db.createObjectStore(META);
      if (!db.objectStoreNames.contains(KV)) db.createObjectStore(KV, { keyPath: ['ns', 'k'] });
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error(`cannot open IndexedDB database ${name}`));
    req.onblocked = () => reject(new Error(`IndexedDB database ${name} is blocked by another tab on an older version`));
  });
}

const subtle = (): SubtleCrypto => {
  if (!globalThis.crypto?.subtle)
    throw new StoreLockedError('WebCrypto is not available (the page needs a secure context)');
  return globalThis.crypto.subtle;
};

/** The storage key: read from the meta store, or generated (non-extractable) and stored on first use. */
async function storageKey(db: IDBDatabase): Promise<CryptoKey> {
  const read = async () => {
    const tx = db.transaction(META, 'readonly');
    const key = await request(tx.objectStore(META).get(STORAGE_KEY));
    return key instanceof CryptoKey ? key : undefined;
  };
  const existing = await read();
  if (existing) return existing;
  const fresh = await subtle().generateKey({ name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
  const tx = db.transaction(META, 'readwrite', { durability: 'strict' });
  const done = completion(tx);
  // `add` fails if another tab stored a key in the meantime: then that one is the key.
  tx.objectStore(META).add(fresh, STORAGE_KEY);
  try {
    await done;
    return fresh;
  } catch {
    const winner = await read();
    if (!winner) throw new Error('could not store the storage key in IndexedDB');
    return winner;
  }
}

/**
 * The encrypted key-value store on IndexedDB with a non-extractable WebCrypto storage key.
 * `open` creates the database and the key on first use.
 */
export class IndexedDbKeyValueStore implements KeyValueStore {
  private closed = false;

  private constructor(
    private readonly db: IDBDatabase,
    private readonly key: CryptoKey,
  ) {
    // Another tab deletes or upgrades the database: let it, this connection is finished.
    db.onversionchange = () => {
      this.closed = true;
      db.close();
    };
  }

  static async open(name = DEFAULT_DB_NAME): Promise<IndexedDbKeyValueStore> {
    const db = await openDatabase(name);
    try {
      return new IndexedDbKeyValueStore(db, await storageKey(db));
    } catch (error) {
      db.close();
      throw error;
    }
  }

  /** Deletes the whole database (all data and the storage key). Close every open store first. */
  static delete(name = DEFAULT_DB_NAME): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = indexedDB.deleteDatabase(name);
      req.onsuccess = () => resolve();
      req.onerror = () => reject(req.error ?? new Error(`cannot delete IndexedDB database ${name}`));
    });
  }

  async get(namespace: string, key: string): Promise<Uint8Array | undefined> {
    this.ensureOpen();
    checkIdentifier('namespace', namespace);
    checkIdentifier('key', key);
    const tx = this.db.transaction(KV, 'readonly');
    const record = (await request(tx.objectStore(KV).get([namespace, key]))) as KvRecord | undefined;
    return record ? this.open(namespace, key, record.v) : undefined;
  }

  async list(namespace: string, prefix = ''): Promise<[key: string, value: Uint8Array][]> {
    this.ensureOpen();
    checkIdentifier('namespace', namespace);
    checkIdentifier('prefix', prefix);
    // [ns, prefix] up to [ns, successor of prefix); an array sorts above every string, so [ns, []]
    // bounds the whole namespace when there is no successor.
    const end = prefixEnd(prefix);
    const range = IDBKeyRange.bound([namespace, prefix], [namespace, end ?? []], false, true);
    const tx = this.db.transaction(KV, 'readonly');
    const records = (await request(tx.objectStore(KV).getAll(range))) as KvRecord[];
    // IndexedDB orders strings by UTF-16 code units, as the port does.
    const out: [string, Uint8Array][] = [];
    for (const r of records) out.push([r.k, await this.open(namespace, r.k, r.v)]);
    return out;
  }

  /**
   * Seals every value first (nothing is written if any entry is invalid), then writes the puts in
   * order (a later put to the same slot wins) and the deletes in one transaction.
   */
  async apply(batch: KeyValueBatch): Promise<void> {
    this.ensureOpen();
    if (typeof batch !== 'object' || batch === null) throw new TypeError('batch must be an object');
    const puts = batch.put ?? [];
    const deletes = batch.delete ?? [];
    if (!Array.isArray(puts) || !Array.isArray(deletes))
      throw new TypeError('batch.put and batch.delete must be arrays');
    const sealed: KvRecord[] = [];
    for (const entry of puts) {
      if (!Array.isArray(entry)) throw new TypeError('each put must be [namespace, key, value]');
      const [namespace, key, value] = entry;
      checkIdentifier('namespace', namespace);
      checkIdentifier('key', key);
      checkValue(value);
      sealed.push({ ns: namespace, k: key, v: await this.seal(namespace, key, value) });
    }
    for (const entry of deletes) {
      if (!Array.isArray(entry)) throw new TypeError('each delete must be [namespace, key]');
      checkIdentifier('namespace', entry[0]);
      checkIdentifier('key', entry[1]);
    }
    if (sealed.length === 0 && deletes.length === 0) return;
    this.ensureOpen();
    const tx = this.db.transaction(KV, 'readwrite', { durability: 'strict' });
    const done = completion(tx);
    const store = tx.objectStore(KV);
    for (const record of sealed) store.put(record);
    for (const [namespace, key] of deletes) store.delete([namespace, key]);
    await done;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }

  private ensureOpen(): void {
    if (this.closed) throw new Error('the store is closed');
  }

  private async seal(namespace: string, key: string, plaintext: Uint8Array): Promise<Uint8Array> {
    const nonce = globalThis.crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
    const data = plaintext.buffer instanceof ArrayBuffer ? (plaintext as Uint8Array<ArrayBuffer>) : plaintext.slice();
    const body = new Uint8Array(
      await subtle().encrypt(
        { name: 'AES-GCM', iv: nonce, additionalData: slotAad(namespace, key), tagLength: TAG_BYTES * 8 },
        this.key,
        data,
      ),
    );
    const out = new Uint8Array(NONCE_BYTES + body.length);
    out.set(nonce, 0);
    out.set(body, NONCE_BYTES);
    return out;
  }

  private async open(namespace: string, key: string, sealed: Uint8Array): Promise<Uint8Array> {
    if (!(sealed instanceof Uint8Array) || sealed.length < NONCE_BYTES + TAG_BYTES)
      throw new StoreValueCorruptedError(namespace, key);
    try {
      return new Uint8Array(
        await subtle().decrypt(
          {
            name: 'AES-GCM',
            iv: sealed.slice(0, NONCE_BYTES),
            additionalData: slotAad(namespace, key),
            tagLength: TAG_BYTES * 8,
          },
          this.key,
          sealed.slice(NONCE_BYTES),
        ),
      );
    } catch {
      throw new StoreValueCorruptedError(namespace, key);
    }
  }
}
