/**
 * The web store (IndexedDB + a non-extractable WebCrypto key) in real Chromium: the module is
 * bundled with esbuild, served from a loopback origin (a secure context) and driven from here.
 */
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { launchChromium } from './support/browser.ts';

const entry = fileURLToPath(new URL('../src/store/indexeddb-kv.ts', import.meta.url));

let server: Server;
let origin: string;
let browser: Browser;
let page: Page;

beforeAll(async () => {
  const bundle = await build({
    stdin: { contents: `export { IndexedDbKeyValueStore } from ${JSON.stringify(entry)};`, resolveDir: '.' },
    bundle: true,
    format: 'iife',
    globalName: 'HushKv',
    platform: 'browser',
    target: 'chrome120',
    write: false,
  });
  const script = bundle.outputFiles[0]?.text ?? '';
  server = createServer((req, res) => {
    if (req.url === '/kv.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(script);
    } else {
      res
        .writeHead(200, { 'content-type': 'text/html' })
        .end('<!doctype html><meta charset="utf-8"><script src="/kv.js"></script>');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  browser = await launchChromium();
  page = await (await browser.newContext()).newPage();
  await page.goto(`${origin}/`);
});

afterAll(async () => {
  await browser?.close();
  await new Promise((resolve) => server?.close(resolve));
});

let db = 0;
let name = '';
beforeEach(() => {
  name = `test-${++db}`;
});

/** Runs `fn` in the page with the store class and the test's database name. */
function inPage<T>(fn: (args: { name: string }) => Promise<T>): Promise<T> {
  return page.evaluate(fn, { name });
}

declare const HushKv: { IndexedDbKeyValueStore: typeof import('../src/store/indexeddb-kv.ts').IndexedDbKeyValueStore };

describe('IndexedDbKeyValueStore in Chromium', () => {
  it('puts, gets, lists by prefix in key order, overwrites, deletes', async () => {
    const result = await inPage(async ({ name }) => {
      const store = await HushKv.IndexedDbKeyValueStore.open(name);
      const enc = (s: string) => new TextEncoder().encode(s);
      const dec = (b?: Uint8Array) => (b ? new TextDecoder().decode(b) : undefined);
      await store.apply({
        put: [
          ['sessions', 'bob.2', enc('b2')],
          ['sessions', 'bob.1', enc('b1')],
          ['sessions', 'bobby.1', enc('x')],
          ['sessions', 'alice.1', enc('a1')],
          ['other', 'bob.1', enc('other')],
          ['sessions', 'bob.1', enc('b1 again')],
        ],
      });
      const listed = (await store.list('sessions', 'bob.')).map(([k, v]) => [k, dec(v)]);
      const all = (await store.list('sessions')).map(([k]) => k);
      const one = dec(await store.get('other', 'bob.1'));
      await store.apply({ delete: [['sessions', 'bob.2']], put: [['empty', '', new Uint8Array(0)]] });
      const afterDelete = (await store.list('sessions', 'bob.')).map(([k]) => k);
      const missing = await store.get('sessions', 'bob.2');
      const empty = await store.get('empty', '');
      await store.close();
      return { listed, all, one, afterDelete, missing: missing === undefined, emptyLength: empty?.length };
    });
    expect(result.listed).toEqual([
      ['bob.1', 'b1 again'],
      ['bob.2', 'b2'],
    ]);
    expect(result.all).toEqual(['alice.1', 'bob.1', 'bob.2', 'bobby.1']);
    expect(result.one).toBe('other');
    expect(result.afterDelete).toEqual(['bob.1']);
    expect(result.missing).toBe(true);
    expect(result.emptyLength).toBe(0);
  });

  it('keeps data across close, reopen and a page reload', async () => {
    await inPage(async ({ name }) => {
      const store = await HushKv.IndexedDbKeyValueStore.open(name);
      await store.apply({ put: [['account', 'self', new TextEncoder().encode('still here')]] });
      await store.close();
    });
    await page.reload();
    const value = await inPage(async ({ name }) => {
      const store = await HushKv.IndexedDbKeyValueStore.open(name);
      const v = await store.get('account', 'self');
      await store.close();
      return v ? new TextDecoder().decode(v) : undefined;
    });
    expect(value).toBe('still here');
  });

  it('stores only ciphertext, under a non-extractable AES-256-GCM key kept in IndexedDB', async () => {
    const raw = await inPage(async ({ name }) => {
      const store = await HushKv.IndexedDbKeyValueStore.open(name);
      const marker = 'plaintext-marker-7f3a';
      await store.apply({ put: [['messages', 'm1', new TextEncoder().encode(marker)]] });
      await store.close();
      const idb = await new Promise<IDBDatabase>((resolve, reject) => {
        const req = indexedDB.open(name);
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      });
      const read = <T>(storeName: string, key: IDBValidKey) =>
        new Promise<T>((resolve, reject) => {
          const req = idb.transaction(storeName).objectStore(storeName).get(key);
          req.onsuccess = () => resolve(req.result as T);
          req.onerror = () => reject(req.error);
        });
      const record = await read<{ v: Uint8Array }>('kv', ['messages', 'm1']);
      const key = await read<CryptoKey>('meta', 'storage-key');
      idb.close();
      const text = new TextDecoder('latin1').decode(record.v);
      let exported = 'no';
      try {
        await crypto.subtle.exportKey('raw', key);
        exported = 'yes';
      } catch (error) {
        exported = (error as Error).name;
      }
      return {
        containsMarker: text.includes(marker),
        length: record.v.length,
        markerLength: marker.length,
        isCryptoKey: key instanceof CryptoKey,
        extractable: key.extractable,
        algorithm: key.algorithm as AesKeyAlgorithm,
        exported,
      };
    });
    expect(raw.containsMarker).toBe(false);
    expect(raw.length).toBe(12 + raw.markerLength + 16);
    expect(raw).toMatchObject({
      isCryptoKey: true,
      extractable: false,
      algorithm: { name: 'AES-GCM', length: 256 },
      exported: 'InvalidAccessError',
    });
  });

  it('binds each value to its slot: a value moved to another key, or a flipped bit, fails authentication', async () => {
    const errors = await inPage(async ({ name }) => {
      const store = await HushKv.IndexedDbKeyValueStore.open(name);
      await store.apply({
        put: [
          ['contacts', 'alice', new TextEncoder().encode('alice')],
          ['contacts', 'bob', new TextEncoder().encode('bob')],
        ],
      });
      const idb = await new Promise<IDBDatabase>((resolve, reject) => {
        const req = indexedDB.open(name);
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      });
      const tx = idb.transaction('kv', 'readwrite');
      const kv = tx.objectStore('kv');
      const alice = await new Promise<{ v: Uint8Array }>((resolve) => {
        const req = kv.get(['contacts', 'alice']);
        req.onsuccess = () => resolve(req.result);
      });
      kv.put({ ns: 'contacts', k: 'bob', v: alice.v });
      const flipped = alice.v.slice();
      flipped[20] = (flipped[20] ?? 0) ^ 1;
      kv.put({ ns: 'contacts', k: 'alice', v: flipped });
      await new Promise((resolve) => {
        tx.oncomplete = resolve;
      });
      idb.close();
      const out: string[] = [];
      for (const key of ['bob', 'alice']) {
        try {
          await store.get('contacts', key);
          out.push('read');
        } catch (error) {
          out.push((error as Error).name);
        }
      }
      try {
        await store.list('contacts');
        out.push('listed');
      } catch (error) {
        out.push((error as Error).name);
      }
      await store.close();
      return out;
    });
    expect(errors).toEqual(['StoreCorruptedError', 'StoreCorruptedError', 'StoreCorruptedError']);
  });

  it('applies a batch all or nothing: an invalid entry writes none of it', async () => {
    const result = await inPage(async ({ name }) => {
      const store = await HushKv.IndexedDbKeyValueStore.open(name);
      await store.apply({ put: [['ns', 'keep', new Uint8Array([1])]] });
      const attempts: string[] = [];
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
        {
          put: [
            ['ns', 'a', new Uint8Array([2])],
            ['ns', 42, new Uint8Array([3])],
          ],
        },
      ];
      for (const batch of bad) {
        try {
          await store.apply(batch as never);
          attempts.push('applied');
        } catch (error) {
          attempts.push((error as Error).name);
        }
      }
      const keys = (await store.list('ns')).map(([k]) => k);
      await store.close();
      return { attempts, keys };
    });
    expect(result.attempts).toEqual(['TypeError', 'TypeError', 'TypeError']);
    expect(result.keys).toEqual(['keep']);
  });

  it('two stores opened at once on a new database agree on one storage key', async () => {
    const value = await inPage(async ({ name }) => {
      const [a, b] = await Promise.all([
        HushKv.IndexedDbKeyValueStore.open(name),
        HushKv.IndexedDbKeyValueStore.open(name),
      ]);
      await a.apply({ put: [['ns', 'k', new TextEncoder().encode('shared')]] });
      const read = await b.get('ns', 'k');
      await a.close();
      await b.close();
      return read ? new TextDecoder().decode(read) : undefined;
    });
    expect(value).toBe('shared');
  });

  it('the web entry (@hush/client/web) bundles for the browser: no node:*, better-sqlite3 or ws', async () => {
    const result = await build({
      entryPoints: [fileURLToPath(new URL('../src/web.ts', import.meta.url))],
      bundle: true,
      platform: 'browser',
      format: 'esm',
      write: false,
      metafile: true,
      logLevel: 'silent',
    });
    const inputs = Object.keys(result.metafile.inputs);
    expect(inputs.some((i) => i.endsWith('src/store/indexeddb-kv.ts'))).toBe(true);
    expect(inputs.filter((i) => /node:|better-sqlite3|\/ws\/|sqlite-kv|src\/node\.ts/.test(i))).toEqual([]);
  });

  it('refuses use after close', async () => {
    const message = await inPage(async ({ name }) => {
      const store = await HushKv.IndexedDbKeyValueStore.open(name);
      await store.close();
      try {
        await store.get('ns', 'k');
        return 'read';
      } catch (error) {
        return (error as Error).message;
      }
    });
    expect(message).toBe('the store is closed');
  });
});
