import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StoreLockedError } from '../src/store/kv.ts';
import { SqliteKeyValueStore, StoreCorruptedError } from '../src/store/sqlite-kv.ts';

const FAST = { scryptN: 2 ** 10 };
const PASS = 'correct horse battery staple';
const enc = new TextEncoder();
const dec = new TextDecoder();
const bytes = (s: string) => enc.encode(s);
const text = (b: Uint8Array | undefined) => (b === undefined ? undefined : dec.decode(b));

let dir: string;
let path: string;
const open: SqliteKeyValueStore[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'hush-kv-'));
  path = join(dir, 'store.db');
});

afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

async function create(protection: { passphrase: string } | { keyFile: string } = { passphrase: PASS }, options = FAST) {
  const store = await SqliteKeyValueStore.create(path, protection, options);
  open.push(store);
  return store;
}

async function reopen(protection: { passphrase: string } | { keyFile: string } = { passphrase: PASS }, options = {}) {
  const store = await SqliteKeyValueStore.open(path, protection, options);
  open.push(store);
  return store;
}

/** Direct access to the file, as someone with the disk but not the key would have. */
function raw<T>(fn: (db: Database.Database) => T): T {
  const db = new Database(path);
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

const jsOrder = (keys: string[]) => [...keys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

describe('SqliteKeyValueStore: values', () => {
  it('round-trips puts, overwrites and deletes, per namespace', async () => {
    const store = await create();
    expect(await store.get('ns', 'missing')).toBeUndefined();
    await store.apply({
      put: [
        ['ns', 'a', bytes('alpha')],
        ['ns', 'b', bytes('beta')],
        ['other', 'a', bytes('other alpha')],
        ['ns', 'empty', new Uint8Array(0)],
      ],
    });
    expect(text(await store.get('ns', 'a'))).toBe('alpha');
    expect(text(await store.get('other', 'a'))).toBe('other alpha');
    expect(await store.get('ns', 'empty')).toEqual(new Uint8Array(0));

    await store.apply({ put: [['ns', 'a', bytes('alpha 2')]], delete: [['ns', 'b']] });
    expect(text(await store.get('ns', 'a'))).toBe('alpha 2');
    expect(await store.get('ns', 'b')).toBeUndefined();
    expect(text(await store.get('other', 'a'))).toBe('other alpha');

    await store.apply({ delete: [['ns', 'never-there']] });
    await store.apply({});
  });

  it('returns plain Uint8Array copies, and stores a copy of what it was given', async () => {
    const store = await create();
    const value = bytes('original');
    await store.apply({ put: [['ns', 'k', value]] });
    value.fill(0);
    const got = await store.get('ns', 'k');
    expect(got?.constructor).toBe(Uint8Array);
    expect(text(got)).toBe('original');
    got?.fill(0);
    expect(text(await store.get('ns', 'k'))).toBe('original');
  });

  it('accepts subarray views, Buffers and a large value', async () => {
    const store = await create();
    const backing = bytes('xxHELLOxx');
    const big = randomBytes(1 << 20);
    await store.apply({
      put: [
        ['ns', 'view', backing.subarray(2, 7)],
        ['ns', 'buffer', Buffer.from('buf')],
        ['ns', 'big', big],
      ],
    });
    expect(text(await store.get('ns', 'view'))).toBe('HELLO');
    expect(text(await store.get('ns', 'buffer'))).toBe('buf');
    expect(Buffer.from((await store.get('ns', 'big')) ?? []).equals(big)).toBe(true);
  });

  it('applies the puts of a batch in order, then its deletes', async () => {
    const store = await create();
    await store.apply({
      put: [
        ['ns', 'k', bytes('first')],
        ['ns', 'k', bytes('second')],
        ['ns', 'gone', bytes('x')],
      ],
      delete: [['ns', 'gone']],
    });
    expect(text(await store.get('ns', 'k'))).toBe('second');
    expect(await store.get('ns', 'gone')).toBeUndefined();
  });

  it('rejects identifiers with lone surrogates (they would collide in UTF-8)', async () => {
    const store = await create();
    await expect(store.apply({ put: [['ns', 'a\uD800', bytes('x')]] })).rejects.toThrow(TypeError);
    await expect(store.get('ns\uDC00', 'a')).rejects.toThrow(/well-formed/);
    await expect(store.list('ns', '\uD83D')).rejects.toThrow(/well-formed/);
    // A proper pair is fine.
    await store.apply({ put: [['ns', 'a\u{1F600}', bytes('x')]] });
    expect(text(await store.get('ns', 'a\u{1F600}'))).toBe('x');
  });

  it('keeps the namespace and key boundary unambiguous (NUL inside identifiers)', async () => {
    const store = await create();
    await store.apply({
      put: [
        ['a\0b', 'c', bytes('one')],
        ['a', 'b\0c', bytes('two')],
      ],
    });
    expect(text(await store.get('a\0b', 'c'))).toBe('one');
    expect(text(await store.get('a', 'b\0c'))).toBe('two');
    expect((await store.list('a\0b')).map(([k]) => k)).toEqual(['c']);
    expect((await store.list('a')).map(([k]) => k)).toEqual(['b\0c']);
  });
});

describe('SqliteKeyValueStore: listing', () => {
  const keys = [
    'a',
    'a%',
    'a%b',
    'a_',
    'a_b',
    'aXb',
    'ab',
    'a/1',
    'a/2',
    'a/10',
    'a\\',
    'b',
    '%',
    '_',
    '',
    'é',
    'éa',
    'e\u0301',
    '\uFFFD',
    '\uFFFF',
    '\u{1F600}',
    '\u{1F600}x',
    '\u{10FFFF}',
    '\u{10FFFF}\u{10FFFF}',
    '\uD7FF',
    '\uD7FFz',
    '\uE000',
    '0000000002',
    '0000000010',
  ];

  async function filled() {
    const store = await create();
    // Insert in a scrambled order; values name their key.
    const shuffled = [...keys].sort(() => Math.random() - 0.5);
    await store.apply({ put: shuffled.map((k) => ['ns', k, bytes(`value of ${k}`)] as [string, string, Uint8Array]) });
    await store.apply({
      put: [
        ['ns2', 'a', bytes('other namespace')],
        ['n', 'a', bytes('prefix namespace')],
      ],
    });
    return store;
  }

  const expected = (prefix: string) => jsOrder(keys.filter((k) => k.startsWith(prefix)));

  async function check(store: SqliteKeyValueStore, prefix: string) {
    const got = await store.list('ns', prefix);
    expect(got.map(([k]) => k)).toEqual(expected(prefix));
    for (const [k, v] of got) expect(text(v)).toBe(`value of ${k}`);
  }

  it('lists a whole namespace in ascending key order with no prefix or an empty one', async () => {
    const store = await filled();
    const all = await store.list('ns');
    expect(all.map(([k]) => k)).toEqual(jsOrder(keys));
    expect((await store.list('ns', '')).map(([k]) => k)).toEqual(jsOrder(keys));
    expect(await store.list('nope')).toEqual([]);
    expect((await store.list('n')).map(([k, v]) => [k, text(v)])).toEqual([['a', 'prefix namespace']]);
  });

  it('treats % and _ literally', async () => {
    const store = await filled();
    expect((await store.list('ns', 'a%')).map(([k]) => k)).toEqual(['a%', 'a%b']);
    expect((await store.list('ns', 'a_')).map(([k]) => k)).toEqual(['a_', 'a_b']);
    expect((await store.list('ns', '%')).map(([k]) => k)).toEqual(['%']);
    expect((await store.list('ns', '_')).map(([k]) => k)).toEqual(['_']);
    await check(store, 'a\\');
  });

  it('includes the key equal to the prefix and excludes look-alikes', async () => {
    const store = await filled();
    expect((await store.list('ns', 'a/1')).map(([k]) => k)).toEqual(['a/1', 'a/10']);
    expect((await store.list('ns', 'ab')).map(([k]) => k)).toEqual(['ab']);
    expect((await store.list('ns', 'abc')).map(([k]) => k)).toEqual([]);
    expect((await store.list('ns', '00000000')).map(([k]) => k)).toEqual(['0000000002', '0000000010']);
    await check(store, 'a');
  });

  it('handles unicode prefixes, including the top code point and the surrogate gap', async () => {
    const store = await filled();
    expect((await store.list('ns', 'é')).map(([k]) => k)).toEqual(['é', 'éa']);
    expect((await store.list('ns', 'e')).map(([k]) => k)).toEqual(['e\u0301']);
    expect((await store.list('ns', '\u{1F600}')).map(([k]) => k)).toEqual(['\u{1F600}', '\u{1F600}x']);
    expect((await store.list('ns', '\u{10FFFF}')).map(([k]) => k)).toEqual(['\u{10FFFF}', '\u{10FFFF}\u{10FFFF}']);
    expect((await store.list('ns', '\uD7FF')).map(([k]) => k)).toEqual(['\uD7FF', '\uD7FFz']);
    // JavaScript order: U+1F600 (surrogates D83D DE00) sorts before U+FFFD, unlike code point order.
    const all = (await store.list('ns')).map(([k]) => k);
    expect(all.indexOf('\u{1F600}')).toBeLessThan(all.indexOf('\uFFFD'));
  });

  it('agrees with startsWith for every prefix of every key', async () => {
    const store = await filled();
    const prefixes = new Set<string>();
    for (const k of keys) {
      const chars = Array.from(k);
      for (let i = 0; i <= chars.length; i++) prefixes.add(chars.slice(0, i).join(''));
    }
    for (const extra of ['z', '\u0000', '\uFFFF\uFFFF', '\u{10FFFF}a', 'a\u{10FFFF}']) prefixes.add(extra);
    for (const prefix of prefixes) await check(store, prefix);
  });

  it('orders zero-padded counters numerically', async () => {
    const store = await create();
    const ids = [5, 100, 42, 7, 1_000_000, 0];
    await store.apply({ put: ids.map((n) => ['c', n.toString().padStart(10, '0'), bytes(String(n))]) });
    expect((await store.list('c')).map(([, v]) => Number(text(v)))).toEqual([0, 5, 7, 42, 100, 1_000_000]);
  });
});

describe('SqliteKeyValueStore: atomic batches', () => {
  it('a batch that throws half-way (bad value type) leaves nothing applied', async () => {
    const store = await create();
    await store.apply({
      put: [
        ['ns', 'kept', bytes('before')],
        ['ns', 'doomed', bytes('before')],
      ],
    });
    const batch = {
      put: [
        ['ns', 'new1', bytes('n1')],
        ['ns', 'kept', bytes('overwritten?')],
        ['ns', 'new2', 'not bytes'],
        ['ns', 'new3', bytes('n3')],
      ],
      delete: [['ns', 'doomed']],
    } as any;
    await expect(store.apply(batch)).rejects.toThrow(/Uint8Array/);
    expect(text(await store.get('ns', 'kept'))).toBe('before');
    expect(text(await store.get('ns', 'doomed'))).toBe('before');
    for (const k of ['new1', 'new2', 'new3']) expect(await store.get('ns', k)).toBeUndefined();
    expect((await store.list('ns')).map(([k]) => k)).toEqual(['doomed', 'kept']);
  });

  it('rolls back every put when the last delete entry is bad', async () => {
    const store = await create();
    const batch = {
      put: [
        ['ns', 'a', bytes('a')],
        ['ns', 'b', bytes('b')],
      ],
      delete: [
        ['ns', 'a'],
        ['ns', 42],
      ],
    } as any;
    await expect(store.apply(batch)).rejects.toThrow(TypeError);
    expect(await store.list('ns')).toEqual([]);
    // Also an array of plain numbers, a null value, a non-array entry.
    await expect(store.apply({ put: [['ns', 'a', [1, 2, 3]]] } as any)).rejects.toThrow(TypeError);
    await expect(store.apply({ put: [['ns', 'a', null]] } as any)).rejects.toThrow(TypeError);
    await expect(store.apply({ put: [{ namespace: 'ns' }] } as any)).rejects.toThrow(TypeError);
    await expect(store.apply(null as any)).rejects.toThrow(TypeError);
    expect(await store.list('ns')).toEqual([]);
    // The store still works afterwards.
    await store.apply({ put: [['ns', 'a', bytes('ok')]] });
    expect(text(await store.get('ns', 'a'))).toBe('ok');
  });

  it('applied batches survive close and reopen', async () => {
    const store = await create();
    await store.apply({ put: Array.from({ length: 500 }, (_, i) => ['ns', `k${i}`, bytes(`v${i}`)]) });
    await store.close();
    const again = await reopen();
    expect(await again.list('ns')).toHaveLength(500);
    expect(text(await again.get('ns', 'k499'))).toBe('v499');
  });
});

describe('SqliteKeyValueStore: passphrase protection', () => {
  it('reopens with the right passphrase and refuses a wrong one with StoreLockedError', async () => {
    const store = await create();
    await store.apply({ put: [['ns', 'k', bytes('secret value')]] });
    await store.close();

    await expect(SqliteKeyValueStore.open(path, { passphrase: 'wrong' })).rejects.toBeInstanceOf(StoreLockedError);
    await expect(SqliteKeyValueStore.open(path, { passphrase: `${PASS} ` })).rejects.toBeInstanceOf(StoreLockedError);
    await expect(SqliteKeyValueStore.open(path, { passphrase: '' })).rejects.toBeInstanceOf(StoreLockedError);
    await expect(SqliteKeyValueStore.open(path, { keyFile: join(dir, 'k') })).rejects.toBeInstanceOf(StoreLockedError);

    const again = await reopen();
    expect(text(await again.get('ns', 'k'))).toBe('secret value');
  });

  it('normalizes the passphrase to NFC', async () => {
    await create({ passphrase: 'caf\u00e9' }).then((s) => s.close());
    const again = await reopen({ passphrase: 'cafe\u0301' });
    expect(await again.list('ns')).toEqual([]);
  });

  it('records the scrypt parameters and salt; tampering with them locks the store', async () => {
    await (await create()).close();
    const protection = raw((db) => db.prepare("SELECT value FROM meta WHERE name = 'protection'").get()) as {
      value: string;
    };
    const record = JSON.parse(protection.value);
    expect(record).toMatchObject({ type: 'passphrase', kdf: 'scrypt', N: 1024, r: 8, p: 1 });
    expect(Buffer.from(record.salt, 'base64')).toHaveLength(16);

    const lowered = JSON.stringify({ ...record, r: 4 });
    raw((db) => db.prepare("UPDATE meta SET value = ? WHERE name = 'protection'").run(lowered));
    await expect(SqliteKeyValueStore.open(path, { passphrase: PASS })).rejects.toBeInstanceOf(StoreLockedError);
    const absurd = JSON.stringify({ ...record, N: 2 ** 30 });
    raw((db) => db.prepare("UPDATE meta SET value = ? WHERE name = 'protection'").run(absurd));
    await expect(SqliteKeyValueStore.open(path, { passphrase: PASS })).rejects.toThrow(/scrypt N/);
  });

  it('uses N = 2^15 by default', async () => {
    const store = await SqliteKeyValueStore.create(path, { passphrase: PASS });
    open.push(store);
    await store.close();
    const protection = raw((db) => db.prepare("SELECT value FROM meta WHERE name = 'protection'").get()) as {
      value: string;
    };
    expect(JSON.parse(protection.value).N).toBe(2 ** 15);
    await (await reopen()).close();
  });

  it('changePassphrase re-wraps the key: the new passphrase opens, the old one no longer does', async () => {
    const store = await create();
    await store.apply({ put: [['ns', 'k', bytes('kept across the change')]] });
    const before = raw((db) => db.prepare("SELECT value FROM kv WHERE key = 'k'").get()) as { value: Buffer };

    await expect(store.changePassphrase('not the passphrase', 'new one')).rejects.toBeInstanceOf(StoreLockedError);
    await expect(store.changePassphrase(PASS, '')).rejects.toThrow(TypeError);
    await store.changePassphrase(PASS, 'a brand new passphrase');
    // Values are not re-encrypted; the store stays usable.
    const after = raw((db) => db.prepare("SELECT value FROM kv WHERE key = 'k'").get()) as { value: Buffer };
    expect(after.value.equals(before.value)).toBe(true);
    expect(text(await store.get('ns', 'k'))).toBe('kept across the change');
    await store.close();

    await expect(SqliteKeyValueStore.open(path, { passphrase: PASS })).rejects.toBeInstanceOf(StoreLockedError);
    const again = await reopen({ passphrase: 'a brand new passphrase' });
    expect(text(await again.get('ns', 'k'))).toBe('kept across the change');
  });

  it('changePassphrase leaves no copy of an earlier wrapped key or salt in the file or the WAL', async () => {
    const store = await create();
    await store.apply({ put: [['ns', 'k', bytes('v')]] });
    const earlier: [string, Buffer][] = [];
    const remember = () => {
      const rows = raw((db) => db.prepare('SELECT name, value FROM meta').all()) as {
        name: string;
        value: Buffer | string;
      }[];
      const wrapped = rows.find((r) => r.name === 'wrapped_key')?.value as Buffer;
      const salt = JSON.parse(rows.find((r) => r.name === 'protection')?.value as string).salt as string;
      expect(wrapped).toHaveLength(12 + 32 + 16);
      earlier.push(
        ['wrapped key', wrapped],
        ['wrapped key body', wrapped.subarray(12, 44)],
        ['salt', Buffer.from(salt)],
      );
    };
    const scan = () => {
      for (const f of [path, `${path}-wal`]) {
        if (!existsSync(f)) continue;
        const data = readFileSync(f);
        for (const [name, needle] of earlier) expect(data.includes(needle), `${f} holds an old ${name}`).toBe(false);
      }
    };
    // Several rotations, with writes in between, so earlier wrappings pass through the WAL too.
    const passphrases = [PASS, 'rotated 1', 'rotated 2', 'rotated 3'];
    for (let i = 1; i < passphrases.length; i++) {
      remember();
      await store.changePassphrase(passphrases[i - 1] as string, passphrases[i] as string);
      await store.apply({ put: [['ns', `after ${i}`, bytes('v')]] });
      scan();
    }
    await store.close();
    scan();
    await (await reopen({ passphrase: 'rotated 3' })).close();
  });

  it('changePassphrase is refused on a key-file store', async () => {
    const store = await create({ keyFile: join(dir, 'store.key') });
    await expect(store.changePassphrase('a', 'b')).rejects.toThrow(/key file/);
  });

  it('refuses an empty passphrase and a bad scrypt N at creation', async () => {
    await expect(SqliteKeyValueStore.create(path, { passphrase: '' }, FAST)).rejects.toThrow(TypeError);
    await expect(SqliteKeyValueStore.create(path, { passphrase: PASS }, { scryptN: 1000 })).rejects.toThrow(RangeError);
    await expect(SqliteKeyValueStore.create(path, { passphrase: PASS }, { scryptN: 2 ** 4 })).rejects.toThrow(
      RangeError,
    );
    expect(existsSync(path)).toBe(false);
  });
});

describe('SqliteKeyValueStore: key-file protection', () => {
  it('creates a 32-byte key file with mode 0600 and reopens with it', async () => {
    const keyFile = join(dir, 'store.key');
    const store = await create({ keyFile });
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(readFileSync(keyFile)).toHaveLength(32);
    await store.apply({ put: [['ns', 'k', bytes('v')]] });
    await store.close();

    const again = await reopen({ keyFile });
    expect(text(await again.get('ns', 'k'))).toBe('v');
  });

  it('refuses a key file readable by group or others, with a clear error', async () => {
    const keyFile = join(dir, 'store.key');
    await (await create({ keyFile })).close();
    for (const mode of [0o644, 0o640, 0o604, 0o620]) {
      chmodSync(keyFile, mode);
      const attempt = SqliteKeyValueStore.open(path, { keyFile });
      await expect(attempt).rejects.toThrow(/group or others.*chmod 600/);
      await expect(attempt).rejects.not.toBeInstanceOf(StoreLockedError);
    }
    chmodSync(keyFile, 0o400);
    await (await reopen({ keyFile })).close();
  });

  it('a different key file, a missing one or a passphrase gives StoreLockedError', async () => {
    const keyFile = join(dir, 'store.key');
    await (await create({ keyFile })).close();
    const other = join(dir, 'other.key');
    writeFileSync(other, randomBytes(32), { mode: 0o600 });
    await expect(SqliteKeyValueStore.open(path, { keyFile: other })).rejects.toBeInstanceOf(StoreLockedError);
    await expect(SqliteKeyValueStore.open(path, { keyFile: join(dir, 'missing.key') })).rejects.toBeInstanceOf(
      StoreLockedError,
    );
    await expect(SqliteKeyValueStore.open(path, { passphrase: PASS })).rejects.toBeInstanceOf(StoreLockedError);
  });

  it('refuses a key file of the wrong size', async () => {
    const keyFile = join(dir, 'store.key');
    await (await create({ keyFile })).close();
    writeFileSync(keyFile, randomBytes(31), { mode: 0o600 });
    await expect(SqliteKeyValueStore.open(path, { keyFile })).rejects.toThrow(/exactly 32 bytes/);
    writeFileSync(keyFile, randomBytes(33), { mode: 0o600 });
    await expect(SqliteKeyValueStore.open(path, { keyFile })).rejects.toThrow(/exactly 32 bytes/);
  });

  it('uses an existing key file at creation if it is private, and refuses it otherwise', async () => {
    const keyFile = join(dir, 'provisioned.key');
    const key = randomBytes(32);
    writeFileSync(keyFile, key, { mode: 0o644 });
    chmodSync(keyFile, 0o644);
    await expect(SqliteKeyValueStore.create(path, { keyFile })).rejects.toThrow(/chmod 600/);
    expect(existsSync(path)).toBe(false);
    expect(readFileSync(keyFile).equals(key)).toBe(true);

    chmodSync(keyFile, 0o600);
    await (await create({ keyFile })).close();
    expect(readFileSync(keyFile).equals(key)).toBe(true);
    await (await reopen({ keyFile })).close();
  });
});

describe('SqliteKeyValueStore: tampering with the file', () => {
  async function seeded() {
    const store = await create();
    await store.apply({
      put: [
        ['ns', 'a', bytes('value of a')],
        ['ns', 'b', bytes('value of b')],
        ['other', 'a', bytes('value of other/a')],
      ],
    });
    await store.close();
  }

  it('a value copied into another slot fails with StoreCorruptedError, not garbage', async () => {
    await seeded();
    raw((db) =>
      db.exec("UPDATE kv SET value = (SELECT value FROM kv WHERE namespace = 'ns' AND key = 'a') WHERE key = 'b'"),
    );
    const store = await reopen();
    expect(text(await store.get('ns', 'a'))).toBe('value of a');
    await expect(store.get('ns', 'b')).rejects.toBeInstanceOf(StoreCorruptedError);
    await expect(store.get('ns', 'b')).rejects.toThrow(/"ns"\/"b" failed authentication/);
    await expect(store.list('ns')).rejects.toBeInstanceOf(StoreCorruptedError);
    expect(text(await store.get('other', 'a'))).toBe('value of other/a');
  });

  it('swapped values, a renamed key and a value moved to another namespace all fail', async () => {
    await seeded();
    raw((db) =>
      db.exec(`
        UPDATE kv SET key = 'tmp' WHERE namespace = 'ns' AND key = 'a';
        UPDATE kv SET key = 'a' WHERE namespace = 'ns' AND key = 'b';
        UPDATE kv SET key = 'b' WHERE namespace = 'ns' AND key = 'tmp';
        UPDATE kv SET key = 'renamed' WHERE namespace = 'other' AND key = 'a';
      `),
    );
    let store = await reopen();
    await expect(store.get('ns', 'a')).rejects.toBeInstanceOf(StoreCorruptedError);
    await expect(store.get('ns', 'b')).rejects.toBeInstanceOf(StoreCorruptedError);
    await expect(store.get('other', 'renamed')).rejects.toBeInstanceOf(StoreCorruptedError);
    await store.close();

    raw((db) => db.exec("UPDATE kv SET namespace = 'ns', key = 'c' WHERE namespace = 'other'"));
    store = await reopen();
    await expect(store.get('ns', 'c')).rejects.toBeInstanceOf(StoreCorruptedError);
  });

  it('a flipped bit or a truncated value fails', async () => {
    await seeded();
    const { value } = raw((db) => db.prepare("SELECT value FROM kv WHERE namespace = 'ns' AND key = 'a'").get()) as {
      value: Buffer;
    };
    for (const i of [0, 12, value.length - 20, value.length - 1]) {
      const flipped = Buffer.from(value);
      flipped[i] = (flipped[i] ?? 0) ^ 1;
      raw((db) => db.prepare("UPDATE kv SET value = ? WHERE namespace = 'ns' AND key = 'a'").run(flipped));
      const store = await reopen();
      await expect(store.get('ns', 'a')).rejects.toBeInstanceOf(StoreCorruptedError);
      await store.close();
    }
    for (const cut of [value.subarray(0, 27), value.subarray(0, value.length - 1), Buffer.alloc(0)]) {
      raw((db) => db.prepare("UPDATE kv SET value = ? WHERE namespace = 'ns' AND key = 'a'").run(cut));
      const store = await reopen();
      await expect(store.get('ns', 'a')).rejects.toBeInstanceOf(StoreCorruptedError);
      await store.close();
    }
  });

  it('the slot encoding separates namespace from key even when they contain NUL', async () => {
    const store = await create();
    await store.apply({ put: [['a\0b', 'c', bytes('one')]] });
    await store.close();
    // Move the row from ("a\0b", "c") to ("a", "b\0c"): the same bytes joined with NUL.
    raw((db) => db.exec("UPDATE kv SET namespace = 'a', key = CAST(X'620063' AS TEXT)"));
    const again = await reopen();
    await expect(again.get('a', 'b\0c')).rejects.toBeInstanceOf(StoreCorruptedError);
  });
});

describe('SqliteKeyValueStore: nothing in the clear on disk', () => {
  it('the database file and its WAL contain none of the plaintext values, keys or passphrase', async () => {
    const passphrase = 'PASSPHRASE-MARKER-0x5eed';
    const store = await create({ passphrase });
    const markers = Array.from({ length: 50 }, (_, i) => `PLAINTEXT-MARKER-${i}-${'x'.repeat(i % 7)}`);
    const privateKeys = Array.from({ length: 50 }, () => randomBytes(32));
    await store.apply({
      put: [
        ...markers.map((m, i) => ['messages', `m${i}`, bytes(`hello ${m} bye`)] as [string, string, Uint8Array]),
        ...privateKeys.map((k, i) => ['prekeys', `k${i}`, k] as [string, string, Uint8Array]),
        ['big', 'repeated', bytes('REPEATED-MARKER '.repeat(10_000))],
      ],
    });
    // Overwrite half of them, delete a few: older versions must not show up either.
    await store.apply({
      put: markers.slice(0, 25).map((m, i) => ['messages', `m${i}`, bytes(`edited ${m}`)]),
      delete: [['prekeys', 'k0']],
    });

    const needles: [string, Buffer][] = [
      ...markers.map((m) => [m, Buffer.from(m)] as [string, Buffer]),
      ['REPEATED-MARKER', Buffer.from('REPEATED-MARKER')],
      ['PLAINTEXT-MARKER', Buffer.from('PLAINTEXT-MARKER')],
      ['passphrase', Buffer.from(passphrase)],
      ...privateKeys.map((k, i) => [`private key ${i}`, k] as [string, Buffer]),
      ...privateKeys.map((k, i) => [`private key ${i} (first half)`, k.subarray(0, 16)] as [string, Buffer]),
    ];
    const scan = (file: string) => {
      const data = readFileSync(file);
      for (const [name, needle] of needles) expect(data.includes(needle), `${name} found in ${file}`).toBe(false);
    };

    // While open the writes sit in the WAL.
    expect(statSync(`${path}-wal`).size).toBeGreaterThan(0);
    scan(path);
    scan(`${path}-wal`);
    // The values do read back, so the scan looked for the right bytes.
    expect(Buffer.from((await store.get('prekeys', 'k1')) ?? []).equals(privateKeys[1] as Buffer)).toBe(true);
    expect(text(await store.get('messages', 'm30'))).toBe(`hello ${markers[30]} bye`);

    // After close everything is checkpointed into the main file.
    await store.close();
    scan(path);
    if (existsSync(`${path}-wal`)) scan(`${path}-wal`);
  });

  it('the store file is private (mode 0600) and creation leaves no temporary files', async () => {
    const store = await create();
    await store.apply({ put: [['ns', 'k', bytes('v')]] });
    expect(statSync(path).mode & 0o077).toBe(0);
    expect(statSync(`${path}-wal`).mode & 0o077).toBe(0);
    expect(readdirSync(dir).filter((f) => f.includes('.creating'))).toEqual([]);
  });
});

describe('SqliteKeyValueStore: lifecycle', () => {
  it('exists() tells a store from a missing file, a foreign file and a foreign database', async () => {
    expect(await SqliteKeyValueStore.exists(path)).toBe(false);
    await (await create()).close();
    expect(await SqliteKeyValueStore.exists(path)).toBe(true);

    const junk = join(dir, 'junk');
    writeFileSync(junk, 'not a database at all, just some text that is long enough to look like a header');
    expect(await SqliteKeyValueStore.exists(junk)).toBe(false);
    const foreign = join(dir, 'foreign.db');
    const db = new Database(foreign);
    db.exec('CREATE TABLE t (x)');
    db.close();
    expect(await SqliteKeyValueStore.exists(foreign)).toBe(false);
    await expect(SqliteKeyValueStore.open(foreign, { passphrase: PASS })).rejects.toThrow(/not a Hush store/);
    await expect(SqliteKeyValueStore.open(junk, { passphrase: PASS })).rejects.toThrow(/not a Hush store/);
    // Looking did not change the foreign database (no switch to WAL).
    const check = new Database(foreign, { readonly: true });
    expect(check.pragma('journal_mode', { simple: true })).toBe('delete');
    check.close();
  });

  it('create refuses an existing path; open refuses a missing one', async () => {
    await expect(SqliteKeyValueStore.open(path, { passphrase: PASS })).rejects.toThrow(/no store/);
    await (await create()).close();
    await expect(SqliteKeyValueStore.create(path, { passphrase: PASS }, FAST)).rejects.toThrow(/already exists/);
    const keyFile = join(dir, 'fresh.key');
    await expect(SqliteKeyValueStore.create(path, { keyFile }, FAST)).rejects.toThrow(/already exists/);
    expect(existsSync(keyFile)).toBe(false);
    // The original store is untouched.
    await (await reopen()).close();
  });

  it('a closed store rejects every call; close is idempotent', async () => {
    const store = await create();
    await store.close();
    await store.close();
    await expect(store.get('ns', 'k')).rejects.toThrow(/closed/);
    await expect(store.list('ns')).rejects.toThrow(/closed/);
    await expect(store.apply({ put: [['ns', 'k', bytes('v')]] })).rejects.toThrow(/closed/);
    await expect(store.changePassphrase(PASS, 'x')).rejects.toThrow(/closed/);
  });

  it('two connections on the same file see each other’s writes', async () => {
    const a = await create();
    const b = await reopen();
    await a.apply({ put: [['ns', 'k', bytes('from a')]] });
    expect(text(await b.get('ns', 'k'))).toBe('from a');
    await b.apply({ delete: [['ns', 'k']] });
    expect(await a.get('ns', 'k')).toBeUndefined();
  });
});
