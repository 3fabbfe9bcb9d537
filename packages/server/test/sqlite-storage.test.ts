import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApiError, PayloadTooLargeError } from '../src/core/errors.ts';
import type { Account, Device, KeyUpload } from '../src/core/ports.ts';
import { FileAttachmentStore } from '../src/storage/sqlite/files-attachment-store.ts';
import { SCHEMA_VERSION, migrate, migrations } from '../src/storage/sqlite/migrations.ts';
import { SqliteStorage } from '../src/storage/sqlite/sqlite-storage.ts';
import { storageContract } from './storage-contract.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'hush-sqlite-test-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const tempDb = () => join(root, `${randomUUID()}.db`);

storageContract('sqlite', async () => {
  const storage = SqliteStorage.open(tempDb());
  return { storage, close: async () => storage.close() };
});

const T0 = 1_700_000_000_000;
const bytes = (length: number, seed: number) => Uint8Array.from({ length }, (_, i) => (seed * 31 + i * 7) & 0xff);

/** Creates a verified number and an account for it with device 1; returns the account id. */
async function register(storage: SqliteStorage, keys: KeyUpload = {}): Promise<Account> {
  const number = `+1415555${String(Math.floor(Math.random() * 1e4)).padStart(4, '0')}`;
  const sessionId = randomUUID();
  await storage.insertVerificationSession({
    id: sessionId,
    number,
    codeHash: bytes(32, 1),
    createdAt: T0,
    expiresAt: T0 + 600_000,
    failedAttempts: 0,
    verified: true,
    consumed: false,
  });
  const account: Account = { id: randomUUID(), number, identityKey: bytes(33, 5), createdAt: T0, name: 'A' };
  const device: Device = {
    accountId: account.id,
    deviceId: 1,
    registrationId: 7,
    passwordHash: bytes(32, 2),
    passwordSalt: bytes(16, 3),
    createdAt: T0,
  };
  await storage.createAccount(
    account,
    device,
    {
      signedPreKey: { keyId: 1, publicKey: bytes(33, 1), signature: bytes(64, 1) },
      pqLastResortPreKey: { keyId: 1, publicKey: bytes(1569, 1), signature: bytes(64, 2) },
      ...keys,
    },
    sessionId,
  );
  return account;
}

const ecKeys = (from: number, count: number) =>
  Array.from({ length: count }, (_, i) => ({ keyId: from + i, publicKey: bytes(33, from + i) }));

describe('SqliteStorage', () => {
  let path: string;
  let storage: SqliteStorage;
  beforeEach(() => {
    path = tempDb();
    storage = SqliteStorage.open(path);
  });
  afterEach(() => storage.close());

  it('opens with WAL, synchronous = FULL, foreign keys and a busy timeout', () => {
    expect(storage.db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(storage.db.pragma('synchronous', { simple: true })).toBe(2);
    expect(storage.db.pragma('foreign_keys', { simple: true })).toBe(1);
    expect(storage.db.pragma('busy_timeout', { simple: true })).toBeGreaterThan(0);
    expect(storage.db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
  });

  it('applies migrations once: reopening and migrating again change nothing', async () => {
    const schema = () => storage.db.prepare('SELECT type, name, sql FROM sqlite_schema ORDER BY name').all();
    const before = schema();
    expect(migrate(storage.db)).toBe(0);
    storage.close();
    storage = SqliteStorage.open(path);
    expect(storage.db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    expect(schema()).toEqual(before);
  });

  it('migrates a database of schema 1 (before device linking): its devices stay and can be joined by linked ones', async () => {
    const oldPath = tempDb();
    const db = new Database(oldPath);
    db.exec((migrations[0] as { sql: string }).sql);
    db.pragma('user_version = 1');
    const accountId = randomUUID();
    db.prepare('INSERT INTO accounts (id, number, identity_key, name, created_at) VALUES (?, ?, ?, NULL, ?)').run(
      accountId,
      '+14155550999',
      bytes(33, 5),
      T0,
    );
    db.prepare(
      `INSERT INTO devices (account_id, device_id, registration_id, password_hash, password_salt, created_at)
       VALUES (?, 1, 7, ?, ?, ?)`,
    ).run(accountId, bytes(32, 2), bytes(16, 3), T0);
    db.close();

    const migrated = SqliteStorage.open(oldPath);
    try {
      expect(migrated.db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
      expect(await migrated.getDevice(accountId, 1)).toEqual({
        accountId,
        deviceId: 1,
        registrationId: 7,
        passwordHash: bytes(32, 2),
        passwordSalt: bytes(16, 3),
        createdAt: T0,
      });
      const codeHash = bytes(32, 77);
      await migrated.insertLinkCode({ codeHash, accountId, createdAt: T0, expiresAt: T0 + 600_000 });
      const linked = await migrated.linkDevice(
        codeHash,
        {
          accountId,
          registrationId: 8,
          passwordHash: bytes(32, 4),
          passwordSalt: bytes(16, 5),
          createdAt: T0,
          name: bytes(20, 6),
        },
        {
          signedPreKey: { keyId: 1, publicKey: bytes(33, 1), signature: bytes(64, 1) },
          pqLastResortPreKey: { keyId: 1, publicKey: bytes(1569, 1), signature: bytes(64, 2) },
        },
        T0,
        6,
      );
      expect(linked.deviceId).toBe(2);
      expect((await migrated.listDevices(accountId)).map((d) => d.deviceId)).toEqual([1, 2]);
    } finally {
      migrated.close();
    }
  });

  it('refuses a database written by a newer schema', () => {
    storage.close();
    const db = new Database(path);
    db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    db.close();
    expect(() => SqliteStorage.open(path)).toThrow(/newer/);
    storage = SqliteStorage.open(tempDb());
  });

  it('keeps everything across close and reopen', async () => {
    const account = await register(storage, {
      preKeys: ecKeys(1, 3),
      pqPreKeys: [{ keyId: 9, publicKey: bytes(1569, 9), signature: bytes(64, 9) }],
    });
    const envelope = {
      guid: randomUUID(),
      type: 3,
      sourceAccountId: 'x',
      sourceDeviceId: 2,
      destinationAccountId: account.id,
      destinationDeviceId: 1,
      timestamp: T0,
      serverTimestamp: T0 + 1,
      content: bytes(100, 4),
      expiresAt: T0 + 1_000_000,
    };
    const receipt = { sourceAccountId: 'x', sourceDeviceId: 2, messageId: 'm1', expiresAt: T0 + 1_000_000 };
    await storage.insertEnvelopes([envelope], receipt);
    await storage.hit('rl', 60_000, T0);
    storage.close();

    storage = SqliteStorage.open(path);
    expect(await storage.getAccount(account.id)).toEqual(account);
    expect(await storage.getDevice(account.id, 1)).not.toBeNull();
    expect(await storage.countKeys(account.id, 1)).toEqual({ preKeys: 3, pqPreKeys: 1 });
    const [queued] = await storage.fetchQueue(account.id, 1, 10, T0);
    expect(queued).toMatchObject(envelope);
    expect(await storage.insertEnvelopes([], receipt)).toBe(false);
    expect((await storage.hit('rl', 60_000, T0 + 1)).count).toBe(2);
  });

  it('hands binary fields out as plain Uint8Arrays, not Buffers', async () => {
    const account = await register(storage, { preKeys: ecKeys(1, 1) });
    const got = await storage.getAccount(account.id);
    const taken = await storage.takeKeys(account.id, 1);
    for (const value of [got?.identityKey, taken?.preKey?.publicKey, taken?.signedPreKey.signature]) {
      expect(value).toBeInstanceOf(Uint8Array);
      expect(Buffer.isBuffer(value)).toBe(false);
    }
  });

  it('rejects a malformed cursor with a 400', async () => {
    for (const cursor of ['abc', '-1', '1.5', '', '01', '99999999999999999999']) {
      const error = await storage.fetchQueue('a', 1, 10, T0, cursor).catch((e: unknown) => e);
      expect(error, cursor).toBeInstanceOf(ApiError);
      expect((error as ApiError).status).toBe(400);
    }
  });

  it('refuses keys for a device that does not exist with a 404', async () => {
    const error = await storage.storeKeys(randomUUID(), 1, { preKeys: ecKeys(1, 1) }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).status).toBe(404);
  });

  it('counts the unexpired envelopes of all queues', async () => {
    const envelope = (destinationAccountId: string, expiresAt: number) => ({
      guid: randomUUID(),
      type: 1,
      sourceAccountId: 'x',
      sourceDeviceId: 1,
      destinationAccountId,
      destinationDeviceId: 1,
      timestamp: T0,
      serverTimestamp: T0,
      content: bytes(10, 1),
      expiresAt,
    });
    await storage.insertEnvelopes([envelope('a', T0 + 10), envelope('b', T0 + 20), envelope('b', T0 + 30)]);
    expect(await storage.countAllEnvelopes(T0)).toBe(3);
    expect(await storage.countAllEnvelopes(T0 + 20)).toBe(1);
  });

  it('drops ended rate-limit windows in deleteExpired', async () => {
    await storage.hit('rl', 1_000, T0);
    await storage.deleteExpired(T0 + 1_000);
    expect(storage.db.prepare('SELECT count(*) AS n FROM rate_limits').get()).toEqual({ n: 0 });
  });

  it('never hands a one-time key to two processes taking keys from the same file at once', async () => {
    const KEYS = 1000;
    const account = await register(storage);
    for (let from = 1; from <= KEYS; from += 100)
      await storage.storeKeys(account.id, 1, { preKeys: ecKeys(from, 100) });

    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(here, 'fixtures', 'take-keys.ts'), path, account.id, '1'],
      {
        stdio: ['pipe', 'pipe', 'inherit'],
      },
    );
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    expect((await lines.next()).value).toBe('ready');
    await new Promise<void>((resolve, reject) => child.stdin.write('go\n', (e) => (e ? reject(e) : resolve())));

    const mine: number[] = [];
    for (;;) {
      const taken = await storage.takeKeys(account.id, 1);
      if (!taken?.preKey) break;
      mine.push(taken.preKey.keyId);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    const theirs = JSON.parse((await lines.next()).value as string) as number[];
    expect(await exited).toBe(0);

    const all = [...mine, ...theirs];
    expect(new Set(all).size).toBe(all.length);
    expect(all.length).toBe(KEYS);
    expect(mine.length).toBeGreaterThan(0);
    expect(theirs.length).toBeGreaterThan(0);
  });
});

describe('FileAttachmentStore', () => {
  let dir: string;
  let storage: SqliteStorage;
  let store: FileAttachmentStore;
  let now: number;
  beforeEach(() => {
    dir = join(root, `attachments-${randomUUID()}`);
    storage = SqliteStorage.open(tempDb());
    now = T0;
    store = new FileAttachmentStore(dir, storage, { now: () => now });
  });
  afterEach(() => storage.close());

  /** A body of `total` bytes in chunks of `chunk`. */
  function body(total: number, chunk = 16 * 1024): { stream: ReadableStream<Uint8Array>; data: Uint8Array } {
    const data = bytes(total, total);
    let offset = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (offset >= total) return controller.close();
        controller.enqueue(data.slice(offset, offset + chunk));
        offset += chunk;
      },
    });
    return { stream, data };
  }
  const read = async (stream: ReadableStream<Uint8Array>) => new Uint8Array(await new Response(stream).arrayBuffer());
  const files = () => readdirSync(dir).filter((name) => name !== '.tmp');
  const partials = () => readdirSync(join(dir, '.tmp'));

  it('round-trips a blob', async () => {
    const { stream, data } = body(300_000);
    const meta = await store.put('att1', stream, 1_000_000, T0 + 1000);
    expect(meta).toEqual({ id: 'att1', size: 300_000, createdAt: T0, expiresAt: T0 + 1000 });
    const got = await store.get('att1', T0);
    expect(got?.meta).toEqual(meta);
    const received = await read(got?.body as ReadableStream<Uint8Array>);
    expect(Buffer.from(received).equals(data)).toBe(true); // toEqual on 300 kB takes seconds
    expect(files()).toEqual(['att1']);
    expect(partials()).toEqual([]);
  });

  it('accepts a blob of exactly maxBytes and an empty one', async () => {
    expect((await store.put('exact', body(1000, 300).stream, 1000, T0 + 1)).size).toBe(1000);
    expect((await store.put('empty', body(0).stream, 1000, T0 + 1)).size).toBe(0);
    expect(await read((await store.get('empty', T0))?.body as ReadableStream<Uint8Array>)).toEqual(new Uint8Array());
  });

  it('refuses a blob over maxBytes, leaves no file behind and cancels the body', async () => {
    let cancelled = false;
    let sent = 0;
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) {
        sent += 4096;
        controller.enqueue(new Uint8Array(4096));
      },
      cancel() {
        cancelled = true;
      },
    });
    const error = await store.put('big', endless, 10_000, T0 + 1000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PayloadTooLargeError);
    expect((error as ApiError).status).toBe(413);
    expect(cancelled).toBe(true);
    expect(sent).toBeLessThan(100_000);
    expect(files()).toEqual([]);
    expect(partials()).toEqual([]);
    expect(await store.get('big', T0)).toBeNull();
  });

  it('leaves no file behind when the body fails', async () => {
    const failing = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new Uint8Array(10));
        controller.error(new Error('connection reset'));
      },
    });
    await expect(store.put('broken', failing, 1000, T0 + 1000)).rejects.toThrow('connection reset');
    expect(files()).toEqual([]);
    expect(partials()).toEqual([]);
  });

  it('expires blobs: get returns null, deleteExpired removes the file', async () => {
    await store.put('old', body(10).stream, 100, T0 + 100);
    await store.put('new', body(10).stream, 100, T0 + 200);
    expect(await store.get('old', T0 + 99)).not.toBeNull();
    expect(await store.get('old', T0 + 100)).toBeNull();
    expect(await store.deleteExpired(T0 + 100)).toBe(1);
    expect(files()).toEqual(['new']);
    expect(await store.deleteExpired(T0 + 100)).toBe(0);
    expect(await store.get('new', T0 + 150)).not.toBeNull();
  });

  it('refuses ids that are not safe file names and knows no unknown id', async () => {
    for (const id of ['../x', 'a/b', '', '.tmp', 'x'.repeat(200)]) {
      await expect(store.put(id, body(1).stream, 10, T0 + 1)).rejects.toBeInstanceOf(ApiError);
      expect(await store.get(id, T0)).toBeNull();
    }
    expect(await store.get('nothing', T0)).toBeNull();
  });

  it('sweeps old partial uploads and blobs without metadata', async () => {
    await store.put('kept', body(10).stream, 100, T0 + 10_000);
    const hourAgo = new Date(Date.now() - 2 * 60 * 60 * 1000);
    writeFileSync(join(dir, '.tmp', 'crashed.abc.part'), 'partial');
    writeFileSync(join(dir, 'orphan'), 'blob without metadata');
    writeFileSync(join(dir, 'fresh-orphan'), 'maybe an upload in flight');
    utimesSync(join(dir, '.tmp', 'crashed.abc.part'), hourAgo, hourAgo);
    utimesSync(join(dir, 'orphan'), hourAgo, hourAgo);
    expect(await store.deleteExpired(T0)).toBe(0);
    expect(partials()).toEqual([]);
    expect(files().sort()).toEqual(['fresh-orphan', 'kept']);
    expect(existsSync(join(dir, 'kept'))).toBe(true);
  });
});
