import { createCipheriv, createDecipheriv, randomFillSync, randomUUID, scrypt, timingSafeEqual } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  linkSync,
  openSync,
  readSync,
  rmSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { type KeyValueBatch, type KeyValueStore, StoreLockedError } from './kv.ts';

/*
 * The Node implementation of the client's storage port: one SQLite file (better-sqlite3, WAL,
 * synchronous = FULL, secure_delete = ON) with two tables.
 *
 *   meta(name, value)            format, protection (JSON), wrapped_key
 *   kv(namespace, key, value)    value = nonce(12) ‖ AES-256-GCM ciphertext ‖ tag(16)
 *
 * Every value is encrypted under a random 32-byte storage key with the slot as associated data:
 *   "hush-kv-v1\0" ‖ u32be(len(namespace)) ‖ namespace ‖ u32be(len(key)) ‖ key    (UTF-8)
 * so a value copied or moved to another slot (or another namespace) fails authentication. The
 * length prefixes keep the encoding unambiguous whatever characters the identifiers contain.
 *
 * The storage key never touches the disk in the clear: it is stored wrapped (AES-256-GCM) under a
 * key-encryption key, which is either scrypt(passphrase) or a 32-byte key file (mode 0600). The
 * wrapping's associated data is "hush-kv-wrap-v1\0" ‖ the protection JSON (kind, scrypt parameters,
 * salt), so the parameters cannot be swapped under the wrapped key. A wrong passphrase or key file
 * is detected by the wrapped key's GCM tag and reported as StoreLockedError.
 *
 * Namespaces, keys and the sizes of values are not hidden (the port only ever uses identifiers as
 * keys). The file is not protected against rollback: someone who can write it can put back an older
 * copy of a slot's value, or of the whole file.
 */

const FORMAT = 'hush-kv-v1';
const SLOT_AAD_LABEL = Buffer.from('hush-kv-v1\0', 'utf8');
const WRAP_AAD_LABEL = Buffer.from('hush-kv-wrap-v1\0', 'utf8');
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const SALT_BYTES = 16;

const DEFAULT_SCRYPT_N = 2 ** 15;
const SCRYPT_R = 8;
const SCRYPT_P = 1;
/** Lowest and highest scrypt N accepted, for new passphrases and for stored parameters. */
const MIN_SCRYPT_N = 2 ** 10;
const MAX_SCRYPT_N = 2 ** 20;
/** Stored parameters may ask for at most this much scrypt memory (128·N·r bytes). */
const MAX_SCRYPT_MEMORY = 1024 * 1024 * 1024;

export interface SqliteKeyValueStoreOptions {
  /**
   * scrypt cost N (a power of two, 2^10 … 2^20) for a new passphrase wrapping: used by `create`
   * and `changePassphrase`. Defaults to 2^15 at creation; after `open`, to the store's current N.
   * Only tests should lower it.
   */
  scryptN?: number;
  /** How long a writer waits for another connection's lock before failing (ms). */
  busyTimeoutMs?: number;
}

export type StoreProtection = { passphrase: string } | { keyFile: string };

/** A stored value failed authentication: the file was modified (e.g. a value moved to another slot) or corrupted. */
export class StoreCorruptedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreCorruptedError';
  }
}

type ProtectionRecord =
  | { type: 'passphrase'; kdf: 'scrypt'; N: number; r: number; p: number; salt: string }
  | { type: 'key-file' };

interface KvRow {
  key: string;
  value: Uint8Array;
}

// ---- encodings and AEAD ----

/** Lone surrogates would be replaced by U+FFFD on the way to UTF-8, so two identifiers would share a slot. */
const LONE_SURROGATE = /\p{Cs}/u;

function checkIdentifier(what: string, value: unknown): asserts value is string {
  if (typeof value !== 'string') throw new TypeError(`${what} must be a string`);
  if (LONE_SURROGATE.test(value)) throw new TypeError(`${what} must be well-formed UTF-16 (no lone surrogates)`);
}

function checkValue(value: unknown): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) throw new TypeError('value must be a Uint8Array');
}

function slotAad(namespace: string, key: string): Buffer {
  const ns = Buffer.from(namespace, 'utf8');
  const k = Buffer.from(key, 'utf8');
  const out = Buffer.alloc(SLOT_AAD_LABEL.length + 4 + ns.length + 4 + k.length);
  let at = SLOT_AAD_LABEL.copy(out, 0);
  at = out.writeUInt32BE(ns.length, at);
  at += ns.copy(out, at);
  at = out.writeUInt32BE(k.length, at);
  k.copy(out, at);
  return out;
}

function wrapAad(protectionJson: string): Buffer {
  return Buffer.concat([WRAP_AAD_LABEL, Buffer.from(protectionJson, 'utf8')]);
}

function seal(key: Buffer, plaintext: Uint8Array, aad: Uint8Array): Buffer {
  const nonce = Buffer.alloc(NONCE_BYTES);
  randomFillSync(nonce);
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const body = cipher.update(plaintext);
  const rest = cipher.final();
  return Buffer.concat([nonce, body, rest, cipher.getAuthTag()]);
}

/** The plaintext, or undefined when the tag does not verify (nothing unauthenticated is returned). */
function unseal(key: Buffer, sealed: Uint8Array, aad: Uint8Array): Buffer | undefined {
  if (sealed.length < NONCE_BYTES + TAG_BYTES) return undefined;
  const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, NONCE_BYTES), {
    authTagLength: TAG_BYTES,
  });
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  const body = decipher.update(sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES));
  try {
    const rest = decipher.final();
    return rest.length === 0 ? body : Buffer.concat([body, rest]);
  } catch {
    body.fill(0);
    return undefined;
  }
}

/**
 * The smallest string above every string that starts with `prefix`, in SQLite's BINARY order (UTF-8
 * bytes, i.e. code point order); undefined when there is none (empty prefix, or only U+10FFFF).
 */
function prefixEnd(prefix: string): string | undefined {
  const chars = Array.from(prefix);
  while (chars.length > 0) {
    const cp = chars.pop()?.codePointAt(0) ?? 0;
    if (cp < 0x10ffff) return chars.join('') + String.fromCodePoint(cp === 0xd7ff ? 0xe000 : cp + 1);
  }
  return undefined;
}

/** JavaScript's string order (UTF-16 code units), as StagedStore and IndexedDB order keys. */
const byKey = (a: KvRow, b: KvRow) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

// ---- key-encryption keys ----

function scryptKey(passphrase: string, salt: Buffer, N: number, r: number, p: number): Promise<Buffer> {
  // Passphrases are NFC-normalized so the same words typed on another keyboard or OS still unlock.
  const secret = Buffer.from(passphrase.normalize('NFC'), 'utf8');
  const maxmem = 128 * r * (N + p + 2) + 1024 * 1024;
  return new Promise((resolve, reject) => {
    scrypt(secret, salt, KEY_BYTES, { N, r, p, maxmem }, (error, key) => {
      secret.fill(0);
      if (error) reject(error);
      else resolve(key);
    });
  });
}

function checkScryptN(N: number): void {
  if (!Number.isInteger(N) || N < MIN_SCRYPT_N || N > MAX_SCRYPT_N || (N & (N - 1)) !== 0) {
    throw new RangeError(`scrypt N must be a power of two between 2^10 and 2^20, got ${N}`);
  }
}

function checkPassphrase(passphrase: unknown): asserts passphrase is string {
  if (typeof passphrase !== 'string' || passphrase.length === 0) {
    throw new TypeError('the passphrase must be a non-empty string');
  }
}

const isPassphrase = (p: StoreProtection): p is { passphrase: string } => 'passphrase' in p;

/** Reads a 32-byte key file, refusing one that group or others may read or write. */
function readKeyFile(path: string): Buffer {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new StoreLockedError(`key file not found: ${path}`);
    throw error;
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new Error(`key file ${path} is not a regular file`);
    // Windows has no POSIX mode bits (stat reports 0o666 for every writable file); rely on its ACLs.
    if (process.platform !== 'win32' && (stat.mode & 0o077) !== 0) {
      throw new Error(
        `key file ${path} is accessible by group or others (mode ${(stat.mode & 0o777).toString(8)}); ` +
          `refusing to use it: restrict it with chmod 600`,
      );
    }
    if (stat.size !== KEY_BYTES) throw new Error(`key file ${path} must hold exactly ${KEY_BYTES} bytes`);
    const key = Buffer.alloc(KEY_BYTES + 1);
    let read = 0;
    for (let n = 1; n > 0 && read < key.length; read += n) n = readSync(fd, key, read, key.length - read, null);
    if (read !== KEY_BYTES) {
      key.fill(0);
      throw new Error(`key file ${path} must hold exactly ${KEY_BYTES} bytes`);
    }
    const out = Buffer.from(key.subarray(0, KEY_BYTES));
    key.fill(0);
    return out;
  } finally {
    closeSync(fd);
  }
}

/** Writes a new random key file with mode 0600; fails if the file exists. */
function createKeyFile(path: string): Buffer {
  const key = Buffer.alloc(KEY_BYTES);
  randomFillSync(key);
  const fd = openSync(path, 'wx', 0o600);
  try {
    writeSync(fd, key);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return key;
}

function syncDirectory(path: string): void {
  try {
    const fd = openSync(dirname(path), 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Not every platform can fsync a directory (Windows); the rename is still atomic there.
  }
}

function configure(db: Database.Database, busyTimeoutMs: number): void {
  db.pragma(`busy_timeout = ${busyTimeoutMs}`);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  // Freed cells and pages are zeroed in the database file: a changed passphrase leaves no old wrapped
  // key behind, and a deleted value no ciphertext for someone who later learns the storage key (the
  // WAL keeps older page images until they are checkpointed and overwritten).
  db.pragma('secure_delete = ON');
  // The file may have been edited by someone else: never run functions from its schema.
  db.pragma('trusted_schema = OFF');
}

function parseProtection(json: unknown): ProtectionRecord {
  const bad = () => new Error('the store metadata is malformed (protection)');
  if (typeof json !== 'string') throw bad();
  let p: unknown;
  try {
    p = JSON.parse(json);
  } catch {
    throw bad();
  }
  if (typeof p !== 'object' || p === null) throw bad();
  const r = p as Record<string, unknown>;
  if (r.type === 'key-file') return { type: 'key-file' };
  if (r.type !== 'passphrase' || r.kdf !== 'scrypt') throw bad();
  const { N, r: blocks, p: parallel, salt } = r;
  if (typeof N !== 'number' || typeof blocks !== 'number' || typeof parallel !== 'number') throw bad();
  if (typeof salt !== 'string' || Buffer.from(salt, 'base64').length !== SALT_BYTES) throw bad();
  checkScryptN(N);
  if (!Number.isInteger(blocks) || blocks < 1 || blocks > 32 || !Number.isInteger(parallel) || parallel < 1) {
    throw bad();
  }
  if (parallel > 16 || 128 * N * blocks > MAX_SCRYPT_MEMORY) throw bad();
  return { type: 'passphrase', kdf: 'scrypt', N, r: blocks, p: parallel, salt };
}

function newPassphraseProtection(N: number): { record: ProtectionRecord & { type: 'passphrase' }; salt: Buffer } {
  const salt = Buffer.alloc(SALT_BYTES);
  randomFillSync(salt);
  return {
    record: { type: 'passphrase', kdf: 'scrypt', N, r: SCRYPT_R, p: SCRYPT_P, salt: salt.toString('base64') },
    salt,
  };
}

// ---- the store ----

/**
 * The encrypted key-value store on a SQLite file. better-sqlite3 is synchronous: the methods do
 * their work before they return and hand back settled promises (only scrypt runs off the thread).
 */
export class SqliteKeyValueStore implements KeyValueStore {
  private readonly db: Database.Database;
  private readonly storageKey: Buffer;
  private readonly kind: ProtectionRecord['type'];
  private readonly scryptN: number | undefined;
  private closed = false;
  private readonly q;
  private readonly applyTx;

  private constructor(db: Database.Database, storageKey: Buffer, kind: ProtectionRecord['type'], scryptN?: number) {
    this.db = db;
    this.storageKey = storageKey;
    this.kind = kind;
    this.scryptN = scryptN;
    this.q = {
      get: db.prepare<[string, string], { value: Uint8Array }>('SELECT value FROM kv WHERE namespace = ? AND key = ?'),
      listAll: db.prepare<[string], KvRow>('SELECT key, value FROM kv WHERE namespace = ? ORDER BY key'),
      listFrom: db.prepare<[string, string], KvRow>(
        'SELECT key, value FROM kv WHERE namespace = ? AND key >= ? ORDER BY key',
      ),
      listRange: db.prepare<[string, string, string], KvRow>(
        'SELECT key, value FROM kv WHERE namespace = ? AND key >= ? AND key < ? ORDER BY key',
      ),
      put: db.prepare<[string, string, Uint8Array]>(
        'INSERT INTO kv (namespace, key, value) VALUES (?, ?, ?) ' +
          'ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value',
      ),
      delete: db.prepare<[string, string]>('DELETE FROM kv WHERE namespace = ? AND key = ?'),
      meta: db.prepare<[string], { value: unknown }>('SELECT value FROM meta WHERE name = ?'),
      setMeta: db.prepare<[string | Uint8Array, string]>('UPDATE meta SET value = ? WHERE name = ?'),
    };
    this.applyTx = db.transaction((batch: KeyValueBatch) => this.applyWrite(batch));
  }

  /**
   * Creates a new store at `path` (which must not exist) protected by a passphrase or a key file.
   * A key file that does not exist is created (32 random bytes, mode 0600); an existing one is used
   * if it passes the same checks as on open. The store appears at `path` complete or not at all.
   */
  static async create(
    path: string,
    protection: StoreProtection,
    options: SqliteKeyValueStoreOptions = {},
  ): Promise<SqliteKeyValueStore> {
    const busyTimeoutMs = options.busyTimeoutMs ?? 10_000;
    const scryptN = options.scryptN ?? DEFAULT_SCRYPT_N;
    checkScryptN(scryptN);
    if (isPassphrase(protection)) checkPassphrase(protection.passphrase);
    else if (typeof protection.keyFile !== 'string') throw new TypeError('keyFile must be a path');
    if (existsSync(path)) throw new Error(`cannot create a store at ${path}: a file already exists there`);

    let kek: Buffer | undefined;
    let createdKeyFile: string | undefined;
    const storageKey = Buffer.alloc(KEY_BYTES);
    randomFillSync(storageKey);
    const tmp = `${path}.${randomUUID()}.creating`;
    let db: Database.Database | undefined;
    let linked = false;
    try {
      let record: ProtectionRecord;
      if (isPassphrase(protection)) {
        const fresh = newPassphraseProtection(scryptN);
        record = fresh.record;
        kek = await scryptKey(protection.passphrase, fresh.salt, scryptN, SCRYPT_R, SCRYPT_P);
      } else {
        record = { type: 'key-file' };
        if (existsSync(protection.keyFile)) {
          kek = readKeyFile(protection.keyFile);
        } else {
          kek = createKeyFile(protection.keyFile);
          createdKeyFile = protection.keyFile;
        }
      }
      const protectionJson = JSON.stringify(record);
      const wrapped = seal(kek, storageKey, wrapAad(protectionJson));

      // Build the file under a temporary name (mode 0600; SQLite gives -wal and -shm the same mode),
      // then link it into place: a crash never leaves a half-made store at `path`, and a store that
      // appeared there meanwhile is not overwritten (link fails with EEXIST).
      closeSync(openSync(tmp, 'wx', 0o600));
      db = new Database(tmp, { fileMustExist: true, timeout: busyTimeoutMs });
      configure(db, busyTimeoutMs);
      const init = db;
      init.transaction(() => {
        init.exec(`
          CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID;
          CREATE TABLE kv (
            namespace TEXT NOT NULL,
            key TEXT NOT NULL,
            value BLOB NOT NULL,
            PRIMARY KEY (namespace, key)
          ) WITHOUT ROWID;
        `);
        const insert = init.prepare<[string, string | Uint8Array]>('INSERT INTO meta (name, value) VALUES (?, ?)');
        insert.run('format', FORMAT);
        insert.run('protection', protectionJson);
        insert.run('wrapped_key', wrapped);
      })();
      db.close(); // checkpoints the WAL into the file and removes it
      db = undefined;
      linkSync(tmp, path);
      linked = true;
      unlinkSync(tmp);
      syncDirectory(path);

      db = new Database(path, { fileMustExist: true, timeout: busyTimeoutMs });
      configure(db, busyTimeoutMs);
      return new SqliteKeyValueStore(db, storageKey, record.type, options.scryptN);
    } catch (error) {
      db?.close();
      storageKey.fill(0);
      for (const f of [tmp, `${tmp}-wal`, `${tmp}-shm`]) rmSync(f, { force: true });
      // Once the store is in place its key file must stay, whatever failed after.
      if (createdKeyFile && !linked) rmSync(createdKeyFile, { force: true });
      throw error;
    } finally {
      kek?.fill(0);
    }
  }

  /**
   * Opens an existing store. A wrong passphrase or key file (or one of the wrong kind) raises
   * StoreLockedError; so does a key file that does not exist.
   */
  static async open(
    path: string,
    protection: StoreProtection,
    options: SqliteKeyValueStoreOptions = {},
  ): Promise<SqliteKeyValueStore> {
    const busyTimeoutMs = options.busyTimeoutMs ?? 10_000;
    if (options.scryptN !== undefined) checkScryptN(options.scryptN);
    if (!existsSync(path)) throw new Error(`there is no store at ${path}`);
    const db = new Database(path, { fileMustExist: true, timeout: busyTimeoutMs });
    let kek: Buffer | undefined;
    try {
      // Read the metadata before anything writes to the file (journal_mode = WAL would convert a
      // foreign database), and trust nothing in its schema.
      db.pragma(`busy_timeout = ${busyTimeoutMs}`);
      db.pragma('trusted_schema = OFF');
      const meta = new Map<string, unknown>();
      try {
        for (const row of db.prepare<[], { name: string; value: unknown }>('SELECT name, value FROM meta').all()) {
          meta.set(row.name, row.value);
        }
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        if (code === 'SQLITE_NOTADB' || code === 'SQLITE_ERROR') throw new Error(`${path} is not a Hush store`);
        throw error;
      }
      const format = meta.get('format');
      if (format === undefined) throw new Error(`${path} is not a Hush store`);
      if (format !== FORMAT) throw new Error(`unsupported store format ${String(format)} at ${path}`);
      configure(db, busyTimeoutMs);
      const protectionJson = meta.get('protection');
      const record = parseProtection(protectionJson);
      const wrapped = meta.get('wrapped_key');
      if (!(wrapped instanceof Uint8Array)) throw new Error('the store metadata is malformed (wrapped key)');

      if (record.type === 'passphrase') {
        if (!isPassphrase(protection)) throw new StoreLockedError('this store is protected by a passphrase');
        if (typeof protection.passphrase !== 'string') throw new TypeError('the passphrase must be a string');
        const salt = Buffer.from(record.salt, 'base64');
        kek = await scryptKey(protection.passphrase, salt, record.N, record.r, record.p);
      } else {
        if (isPassphrase(protection)) throw new StoreLockedError('this store is protected by a key file');
        kek = readKeyFile(protection.keyFile);
      }
      const storageKey = unseal(kek, wrapped, wrapAad(protectionJson as string));
      if (!storageKey || storageKey.length !== KEY_BYTES) {
        storageKey?.fill(0);
        throw new StoreLockedError();
      }
      const scryptN = options.scryptN ?? (record.type === 'passphrase' ? record.N : undefined);
      return new SqliteKeyValueStore(db, storageKey, record.type, scryptN);
    } catch (error) {
      db.close();
      throw error;
    } finally {
      kek?.fill(0);
    }
  }

  /** Whether a Hush store is at `path` (false for a missing file or any other file). */
  static async exists(path: string): Promise<boolean> {
    if (!existsSync(path)) return false;
    let db: Database.Database | undefined;
    try {
      db = new Database(path, { readonly: true, fileMustExist: true });
      const row = db.prepare<[], { value: unknown }>("SELECT value FROM meta WHERE name = 'format'").get();
      return typeof row?.value === 'string' && row.value.startsWith('hush-kv-');
    } catch {
      return false;
    } finally {
      db?.close();
    }
  }

  async get(namespace: string, key: string): Promise<Uint8Array | undefined> {
    this.ensureOpen();
    checkIdentifier('namespace', namespace);
    checkIdentifier('key', key);
    const row = this.q.get.get(namespace, key);
    return row ? this.decrypt(namespace, key, row.value) : undefined;
  }

  async list(namespace: string, prefix = ''): Promise<[key: string, value: Uint8Array][]> {
    this.ensureOpen();
    checkIdentifier('namespace', namespace);
    checkIdentifier('prefix', prefix);
    // A range on the primary key: [prefix, successor of prefix) holds exactly the keys that start
    // with prefix, whatever characters it contains (no LIKE, nothing to escape).
    const end = prefixEnd(prefix);
    const rows =
      prefix === ''
        ? this.q.listAll.all(namespace)
        : end === undefined
          ? this.q.listFrom.all(namespace, prefix)
          : this.q.listRange.all(namespace, prefix, end);
    // SQLite orders by code point; the port's order is JavaScript's (they differ only when a key
    // mixes characters above U+FFFF with U+E000–U+FFFF), so sort again, almost always a no-op.
    rows.sort(byKey);
    return rows.map((r) => [r.key, this.decrypt(namespace, r.key, r.value)]);
  }

  /**
   * Applies the batch in one transaction: the puts in order (a later put to the same slot wins),
   * then the deletes. Anything invalid in it (a value that is not a Uint8Array, a key that is not a
   * string) throws and rolls the whole batch back.
   */
  async apply(batch: KeyValueBatch): Promise<void> {
    this.ensureOpen();
    if (typeof batch !== 'object' || batch === null) throw new TypeError('batch must be an object');
    this.applyTx.immediate(batch);
  }

  /**
   * Re-wraps the storage key under a new passphrase (new salt); the values are not re-encrypted.
   * A wrong `oldPassphrase` raises StoreLockedError and changes nothing.
   */
  async changePassphrase(oldPassphrase: string, newPassphrase: string): Promise<void> {
    this.ensureOpen();
    if (this.kind !== 'passphrase') throw new Error('this store is protected by a key file, not a passphrase');
    checkPassphrase(newPassphrase);
    if (typeof oldPassphrase !== 'string') throw new TypeError('the passphrase must be a string');

    const currentJson = this.q.meta.get('protection')?.value;
    const current = parseProtection(currentJson);
    const currentWrapped = this.q.meta.get('wrapped_key')?.value;
    if (current.type !== 'passphrase' || !(currentWrapped instanceof Uint8Array)) {
      throw new Error('the store metadata is malformed');
    }
    const N = this.scryptN ?? current.N;
    const fresh = newPassphraseProtection(N);
    const [oldKek, newKek] = await Promise.all([
      scryptKey(oldPassphrase, Buffer.from(current.salt, 'base64'), current.N, current.r, current.p),
      scryptKey(newPassphrase, fresh.salt, N, SCRYPT_R, SCRYPT_P),
    ]);
    try {
      this.ensureOpen();
      const unwrapped = unseal(oldKek, currentWrapped, wrapAad(currentJson as string));
      if (!unwrapped) throw new StoreLockedError('wrong passphrase');
      const same = unwrapped.length === KEY_BYTES && timingSafeEqual(unwrapped, this.storageKey);
      unwrapped.fill(0);
      if (!same) throw new Error('the stored key does not match the open store');

      const freshJson = JSON.stringify(fresh.record);
      const wrapped = seal(newKek, this.storageKey, wrapAad(freshJson));
      this.db
        .transaction(() => {
          // Another connection may have changed the passphrase while scrypt ran.
          const now = this.q.meta.get('wrapped_key')?.value;
          if (!(now instanceof Uint8Array) || Buffer.compare(now, currentWrapped) !== 0) {
            throw new Error('the passphrase was changed concurrently; nothing was changed');
          }
          this.q.setMeta.run(freshJson, 'protection');
          this.q.setMeta.run(wrapped, 'wrapped_key');
        })
        .immediate();
      // secure_delete zeroed the old cells in the pages; move them into the file and empty the WAL
      // so no copy of the old wrapping stays there either.
      this.db.pragma('wal_checkpoint(TRUNCATE)');
    } finally {
      oldKek.fill(0);
      newKek.fill(0);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      this.db.close();
    } finally {
      this.storageKey.fill(0);
    }
  }

  private ensureOpen(): void {
    if (this.closed) throw new Error('the store is closed');
  }

  private applyWrite(batch: KeyValueBatch): void {
    const puts = batch.put ?? [];
    const deletes = batch.delete ?? [];
    if (!Array.isArray(puts) || !Array.isArray(deletes))
      throw new TypeError('batch.put and batch.delete must be arrays');
    // Validation happens entry by entry inside the transaction, so a bad entry rolls back the
    // earlier ones too.
    for (const entry of puts) {
      if (!Array.isArray(entry)) throw new TypeError('each put must be [namespace, key, value]');
      const [namespace, key, value] = entry;
      checkIdentifier('namespace', namespace);
      checkIdentifier('key', key);
      checkValue(value);
      this.q.put.run(namespace, key, seal(this.storageKey, value, slotAad(namespace, key)));
    }
    for (const entry of deletes) {
      if (!Array.isArray(entry)) throw new TypeError('each delete must be [namespace, key]');
      const [namespace, key] = entry;
      checkIdentifier('namespace', namespace);
      checkIdentifier('key', key);
      this.q.delete.run(namespace, key);
    }
  }

  private decrypt(namespace: string, key: string, sealed: Uint8Array): Uint8Array {
    const plain = unseal(this.storageKey, sealed, slotAad(namespace, key));
    if (!plain) {
      throw new StoreCorruptedError(
        `the stored value at ${JSON.stringify(namespace)}/${JSON.stringify(key)} failed authentication: ` +
          'the store file was modified (e.g. a value moved between slots) or is corrupted',
      );
    }
    const out = new Uint8Array(plain);
    plain.fill(0);
    return out;
  }
}
