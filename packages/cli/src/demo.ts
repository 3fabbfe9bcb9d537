import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { Writable } from 'node:stream';
import type { ClientEvent, HushClient, StoredMessage } from '@hush/client';
import { openNodeClient } from '@hush/client/node';
import Database from 'better-sqlite3';
import { type Output, bytes, hexPreview, pc, safetyNumberLines } from './format.ts';
import { askLine } from './input.ts';

/*
 * `hush demo`: Alice and Bob, each with their own device store, talk through a Hush server embedded
 * in this process. Each of the ten steps of architecture.md is narrated as it happens, with the
 * evidence read back from where it lives: the HTTP requests the devices made, the rows in the
 * server's SQLite file, the bytes of the device stores.
 */

const STEPS = [
  'Install the app',
  'Create an account and verify the phone number with an SMS code',
  'Generate keys on the device',
  'Exchange public keys via the prekey directory',
  'Encrypt on the device',
  'Send the ciphertext (stored durably)',
  'Notify the recipient (live over WebSocket)',
  'Deliver (download, acknowledge, the server deletes)',
  "Decrypt on the recipient's device",
  'Keep messages and keys encrypted at rest',
] as const;

const ENVELOPE_TYPES: Record<number, string> = {
  2: 'SignalMessage (Double Ratchet)',
  3: 'PreKeySignalMessage (PQXDH session setup + Double Ratchet)',
  7: 'SenderKeyMessage (group)',
};

interface EnvelopeRow {
  position: number;
  account_id: string;
  device_id: number;
  guid: string;
  type: number;
  source_account_id: string;
  source_device_id: number;
  timestamp: number;
  server_timestamp: number;
  content: Uint8Array;
  expires_at: number;
}

/** One HTTP exchange a device made, as seen on the wire (bodies are JSON; binary fields base64). */
interface Exchange {
  method: string;
  path: string;
  status: number;
  requestBody?: string;
  response?: unknown;
}

/** Records the HTTP requests of both devices (they share this process's fetch). */
function tapFetch(): { exchanges: Exchange[]; restore(): void } {
  const original = globalThis.fetch;
  const exchanges: Exchange[] = [];
  globalThis.fetch = async (input: Parameters<typeof fetch>[0], init?: RequestInit) => {
    const response = await original(input, init);
    const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
    const entry: Exchange = {
      method: init?.method ?? 'GET',
      path: url.pathname,
      status: response.status,
      ...(typeof init?.body === 'string' ? { requestBody: init.body } : {}),
    };
    if ((response.headers.get('content-type') ?? '').includes('json')) {
      entry.response = await response
        .clone()
        .json()
        .catch(() => undefined);
    }
    exchanges.push(entry);
    return response;
  };
  return {
    exchanges,
    restore: () => {
      globalThis.fetch = original;
    },
  };
}

/** Files under `dir` (recursively). */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(path));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

/** Which of `needles` occur in any of `files`; the total size searched. */
function search(files: string[], needles: { label: string; bytes: Uint8Array }[]) {
  let size = 0;
  const found = new Set<string>();
  for (const file of files) {
    const data = readFileSync(file);
    size += data.length;
    for (const n of needles) if (data.includes(Buffer.from(n.bytes))) found.add(n.label);
  }
  return { size, found: needles.filter((n) => found.has(n.label)).map((n) => n.label) };
}

/** Resolves with the first event matching `predicate` (or rejects after `timeoutMs`). */
function nextEvent(
  client: HushClient,
  predicate: (e: ClientEvent) => boolean,
  timeoutMs = 15_000,
): Promise<ClientEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error('the demo timed out waiting for a device event'));
    }, timeoutMs);
    const off = client.on((event) => {
      if (!predicate(event)) return;
      clearTimeout(timer);
      off();
      resolve(event);
    });
  });
}

async function until(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('the demo timed out waiting for the server');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const short = (id: string) => `${id.slice(0, 8)}…`;
const utf8 = (text: string) => new TextEncoder().encode(text);

export async function demo(o: Output, opts: { keep?: boolean; pause?: boolean } = {}): Promise<void> {
  const started = Date.now();
  const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  const root = mkdtempSync(join(tmpdir(), 'hush-demo-'));
  // Also when the process ends early (`hush demo | head` exits on EPIPE).
  const removeRoot = () => rmSync(root, { recursive: true, force: true });
  if (!opts.keep) process.once('exit', removeRoot);
  const say = (line = '') => o.out(line);
  const note = (line: string) => o.out(`  ${line}`);
  const dim = (line: string) => o.out(pc.dim(`  ${line}`));
  const pause = opts.pause && process.stdin.isTTY;
  const step = async (n: number) => {
    if (pause && n > 1) await askLine(pc.dim('  (Enter for the next step) '));
    say();
    say(pc.bold(pc.cyan(`Step ${n} · ${STEPS[n - 1]}`)));
  };

  const { loadConfig, startServer } = await import('@hush/server/standalone');
  const smsLines: string[] = [];
  const smsOutput = new Writable({
    write(chunk, _encoding, callback) {
      smsLines.push(...String(chunk).split('\n').filter(Boolean));
      callback();
    },
  });
  const config = loadConfig({
    HUSH_HOST: '127.0.0.1',
    HUSH_PORT: '0',
    HUSH_DATA_DIR: join(root, 'server'),
    HUSH_LOG_LEVEL: 'silent',
    HUSH_VERIFY_RESEND_COOLDOWN_SECONDS: '0',
  });
  const server = await startServer(config, { devSmsOutput: smsOutput });
  const db = server.storage.db;
  // Every envelope row, read back from the server's SQLite file the moment it is committed (before
  // the server pushes it: live delivery deletes the row again within milliseconds).
  const captured = new Map<string, EnvelopeRow>();
  const storage = server.storage;
  const insertEnvelopes = storage.insertEnvelopes.bind(storage);
  storage.insertEnvelopes = async (...args: Parameters<typeof insertEnvelopes>) => {
    const result = await insertEnvelopes(...args);
    const read = db.prepare<[string], EnvelopeRow>('SELECT * FROM main.envelopes WHERE guid = ?');
    for (const envelope of args[0]) {
      const row = read.get(envelope.guid);
      if (row) captured.set(`${row.source_account_id}:${row.timestamp}`, row);
    }
    return result;
  };
  const stored = (sourceAccountId: string, timestamp: number) => captured.get(`${sourceAccountId}:${timestamp}`);
  const gone = (guid: string | undefined) =>
    until(
      () =>
        (
          db
            .prepare<[string], { n: number }>('SELECT count(*) AS n FROM main.envelopes WHERE guid = ?')
            .get(guid ?? '') as { n: number }
        ).n === 0,
    );
  const queued = (accountId: string) =>
    (
      db
        .prepare<[string], { n: number }>('SELECT count(*) AS n FROM main.envelopes WHERE account_id = ?')
        .get(accountId) as { n: number }
    ).n;
  const countKeys = (table: 'ec_prekeys' | 'kyber_prekeys', accountId: string) =>
    (
      db.prepare<[string], { n: number }>(`SELECT count(*) AS n FROM ${table} WHERE account_id = ?`).get(accountId) as {
        n: number;
      }
    ).n;
  const tap = tapFetch();

  const people = [
    { name: 'Alice', number: '+14155550101' },
    { name: 'Bob', number: '+14155550102' },
  ].map((p) => ({ ...p, dir: join(root, p.name.toLowerCase()), client: undefined as unknown as HushClient }));
  const [alice, bob] = people as [(typeof people)[0], (typeof people)[0]];
  const nameOf = (accountId: string) =>
    people.find((p) => p.client.account.accountId === accountId)?.name ?? short(accountId);

  const showStored = (row: EnvelopeRow | undefined, plaintext: string) => {
    if (!row) {
      dim('(no envelope row was captured)');
      return;
    }
    const content = new Uint8Array(row.content);
    const base64 = Buffer.from(content).toString('base64');
    const file = relative(root, config.databasePath);
    const field = (label: string, value: string) => o.out(`${pc.magenta('    │ ')}${label.padEnd(13)}${value}`);
    o.out(pc.magenta(`    ┌─ what the server stored: one row of the envelopes table in ${file}`));
    field('guid', row.guid);
    field('to', `${nameOf(row.account_id)} (${short(row.account_id)}) device ${row.device_id}`);
    field('from', `${nameOf(row.source_account_id)} (${short(row.source_account_id)}) device ${row.source_device_id}`);
    field('type', `${row.type} = ${ENVELOPE_TYPES[row.type] ?? 'unknown'}`);
    field('timestamps', `sent ${row.timestamp}, stored ${row.server_timestamp}`);
    field('content', `${content.length} bytes of ciphertext`);
    field('  hex', hexPreview(content, 32));
    field('  base64', base64.length > 72 ? `${base64.slice(0, 72)}…` : base64);
    const inRow = Buffer.from(content).includes(Buffer.from(utf8(plaintext)));
    const verdict = inRow ? pc.red('FOUND in the row') : pc.green('not in the row');
    o.out(
      `${pc.magenta('    └─ ')}never seen by the server: the text “${plaintext}” (${verdict}) and every private key`,
    );
  };

  try {
    say(pc.bold('Hush demo: end-to-end encryption in ten steps, with Alice and Bob'));
    // ------------------------------------------------------------------ 1
    await step(1);
    note(`Alice and Bob install Hush. Here this one process plays both phones, each running the code of the`);
    note(`${pc.bold('hush')} app: @hush/cli on the Hush SDK (@hush/client, also under the mobile app) and the Signal`);
    note(
      `protocol in TypeScript (@hush/protocol), on Node ${process.version}. Each phone starts with an empty encrypted store:`,
    );
    for (const p of people) {
      mkdirSync(p.dir, { recursive: true, mode: 0o700 });
      p.client = await openNodeClient({
        serverUrl: server.url,
        storePath: join(p.dir, 'hush.db'),
        protection: { keyFile: join(p.dir, 'store.key') },
      });
      note(`  ${p.name}'s phone: ${join(p.dir, 'hush.db')}`);
    }
    note(`The Hush server runs embedded in this process at ${server.url}, keeping its data in`);
    note(`SQLite at ${config.databasePath}.`);

    // ------------------------------------------------------------------ 2
    await step(2);
    const sessions = new Map<string, { sessionId: string; code: string }>();
    for (const p of people) {
      const { sessionId, number } = await p.client.requestCode(p.number);
      const sms = smsLines.filter((l) => l.includes(number)).at(-1) ?? '';
      const code = /code (\d{6})/.exec(sms)?.[1];
      if (!code) throw new Error(`no SMS code for ${number}`);
      note(`${p.name} → server   POST /v1/verification/sessions {"number":"${number}"}`);
      note(
        `📱 SMS to ${number}: your Hush code is ${pc.bold(code)}   ${pc.dim('(dev SMS sender; Amazon SNS in production)')}`,
      );
      const verified = await p.client.api.submitCode(sessionId, code);
      note(
        `${p.name} → server   POST /v1/verification/sessions/${short(sessionId)}/code {"code":"${code}"} → verified: ${verified.verified}`,
      );
      const row = db
        .prepare<[string], { code_hash: Uint8Array }>('SELECT code_hash FROM verification_sessions WHERE id = ?')
        .get(sessionId);
      if (row) dim(`the server kept only a keyed hash of the code: ${hexPreview(new Uint8Array(row.code_hash), 12)}`);
      sessions.set(p.name, { sessionId, code });
    }

    // ------------------------------------------------------------------ 3
    await step(3);
    for (const p of people) {
      const session = sessions.get(p.name) as { sessionId: string; code: string };
      let generating = 0;
      let uploading = 0;
      const before = tap.exchanges.length;
      await p.client.register(session.sessionId, session.code, (what) => {
        if (what.startsWith('uploading')) uploading = Date.now();
        else generating = Date.now();
      });
      const account = p.client.account;
      const upload = tap.exchanges.slice(before).find((e) => e.method === 'POST' && e.path === '/v1/accounts');
      note(`${p.name}'s device generated, on the device: an identity key pair (Curve25519), a signed prekey,`);
      note('a last-resort Kyber1024 prekey, 100 one-time Curve25519 prekeys, 100 one-time Kyber1024 prekeys');
      note(`and a random device password, in ${seconds(uploading - generating)}.`);
      note(
        `${p.name} → server   POST /v1/accounts (${bytes(upload?.requestBody?.length ?? 0)} of public keys and signatures) → account ${short(account.accountId)}, device ${account.deviceId}`,
      );
      const identity = db
        .prepare<[string], { identity_key: Uint8Array }>('SELECT identity_key FROM accounts WHERE id = ?')
        .get(account.accountId);
      note(
        `the server now holds ${p.name}'s public identity key ${hexPreview(new Uint8Array(identity?.identity_key ?? []), 8)}, ` +
          `${countKeys('ec_prekeys', account.accountId)} + ${countKeys('kyber_prekeys', account.accountId)} one-time public prekeys and a hash of the password`,
      );
      dim(
        `the private halves (${p.name}'s identity private key: 32 bytes) stay in her/his encrypted store`.replace(
          'her/his',
          p.name === 'Alice' ? 'her' : 'his',
        ),
      );
    }

    const aliceId = alice.client.account.accountId;
    const bobId = bob.client.account.accountId;
    const first = 'Hi Bob! This message is end-to-end encrypted.';
    const reply = 'Hi Alice! Got it. Nobody but you can read this.';

    // ------------------------------------------------------------------ 4
    await step(4);
    note(
      `Alice wants to write to Bob (account ${short(bobId)}). Bob is offline. Alice's device asks the directory for his keys:`,
    );
    const bobKeysBefore = countKeys('ec_prekeys', bobId);
    const beforeSend = tap.exchanges.length;
    const sentAt = Date.now();
    const sent = await alice.client.sendText(bobId, first);
    const sendMs = Date.now() - sentAt;
    const exchanges = tap.exchanges.slice(beforeSend);
    const bundle = exchanges.find((e) => e.method === 'GET' && e.path.startsWith('/v1/keys/'));
    const device = (
      bundle?.response as {
        devices?: {
          deviceId: number;
          preKey?: { keyId: number };
          pqPreKey: { keyId: number; publicKey: string };
          signedPreKey: { keyId: number };
        }[];
      }
    )?.devices?.[0];
    note(`Alice → server   GET ${bundle?.path ?? `/v1/keys/${bobId}/*`} → ${bundle?.status ?? '?'}`);
    if (device) {
      note(
        `server → Alice   Bob's bundle for device ${device.deviceId}: identity key, signed prekey #${device.signedPreKey.keyId}, ` +
          `one-time prekey #${device.preKey?.keyId ?? '-'}, Kyber1024 prekey #${device.pqPreKey.keyId} (${Buffer.from(device.pqPreKey.publicKey, 'base64').length} bytes)`,
      );
    }
    note(`Alice's device checked the prekey signatures against Bob's identity key (XEdDSA) and ran PQXDH.`);
    note(
      `Bob's one-time prekeys in the directory: ${bobKeysBefore} → ${countKeys('ec_prekeys', bobId)} (each is handed out once, then deleted).`,
    );

    // ------------------------------------------------------------------ 5
    await step(5);
    const firstRow = stored(aliceId, sent.timestamp);
    note(`On Alice's device only: “${first}” (${utf8(first).length} bytes of text)`);
    note(
      `became a ${ENVELOPE_TYPES[firstRow?.type ?? 3]} of ${firstRow ? new Uint8Array(firstRow.content).length : '?'} bytes: it carries`,
    );
    note("Alice's identity and ephemeral public keys, the Kyber ciphertext, and the text (padded) under a fresh");
    note('message key from the Double Ratchet (AES-256-CBC + HMAC-SHA256). Only Bob’s private prekeys can open it.');

    // ------------------------------------------------------------------ 6
    await step(6);
    const put = exchanges.find((e) => e.method === 'PUT' && e.path.startsWith('/v1/messages/'));
    note(
      `Alice → server   PUT ${put?.path ?? `/v1/messages/${bobId}`} (one ciphertext per Bob device) → ${put?.status ?? '?'} after ${sendMs} ms`,
    );
    note('The server answered 200 only once the envelope was committed to its SQLite file. Beside the message:');
    o.out();
    o.out(`    ${pc.bold('Alice')}: ${first}   ${pc.dim('✓ sent')}`);
    showStored(firstRow, first);
    note(`envelopes waiting for Bob: ${queued(bobId)}`);

    // ------------------------------------------------------------------ 7
    await step(7);
    const arrives = nextEvent(bob.client, (e) => e.type === 'message' && e.message.body === first);
    const emptied = nextEvent(bob.client, (e) => e.type === 'queue-empty');
    const connectAt = Date.now();
    await bob.client.connect();
    note('Bob comes online: his device opens its WebSocket (GET /v1/websocket, with its device credentials).');
    const firstIn = ((await arrives) as { message: StoredMessage }).message;
    await emptied;
    note(
      `server → Bob     an "envelope" frame with the ciphertext (${Date.now() - connectAt} ms after connecting), then "queue-empty".`,
    );
    dim(
      'A device without an open socket gets only a wake-up push with no content, then connects and drains its queue.',
    );

    // ------------------------------------------------------------------ 8
    await step(8);
    await bob.client.idle();
    const firstGuid = firstRow?.guid ?? '';
    await gone(firstGuid);
    await until(() => queued(bobId) === 0, 3000).catch(() => undefined);
    note(
      `Bob's device decrypted and stored the message first, then acknowledged it: {"type":"ack","guid":"${short(firstGuid)}"}`,
    );
    note(`The server deleted the envelope. Envelopes waiting for Bob: ${queued(bobId)}.`);
    dim("(Bob's device also sent Alice an encrypted delivery receipt; to the server it looks like any other message.)");

    // ------------------------------------------------------------------ 9
    await step(9);
    note("Bob's device ran PQXDH from its side with its private prekeys (and deleted the one-time prekey),");
    note('reached the same session keys, checked the MAC and decrypted. On Bob’s screen:');
    o.out();
    o.out(`    ${pc.bold('Alice')}: ${firstIn.body}`);
    o.out();
    note('Bob replies. Alice is online now; the session exists, so this is a plain Double Ratchet message:');
    const aliceConnected = nextEvent(alice.client, (e) => e.type === 'queue-empty');
    await alice.client.connect();
    await aliceConnected;
    await alice.client.idle();
    const replyArrives = nextEvent(alice.client, (e) => e.type === 'message' && e.message.body === reply);
    const replyAt = Date.now();
    const replySent = await bob.client.sendText(aliceId, reply);
    const replyIn = ((await replyArrives) as { message: StoredMessage }).message;
    const replyMs = Date.now() - replyAt;
    o.out();
    o.out(`    ${pc.bold('Bob')}: ${replyIn.body}   ${pc.dim(`→ on Alice's screen ${replyMs} ms later`)}`);
    const replyRow = stored(bobId, replySent.timestamp);
    showStored(replyRow, reply);
    await gone(replyRow?.guid);
    await until(() => queued(aliceId) === 0, 3000).catch(() => undefined);
    note(
      `The server stored it, pushed it at once over Alice's open WebSocket, and deleted it on her ack (waiting for Alice: ${queued(aliceId)}).`,
    );
    const aliceView = await alice.client.history(bobId);
    const status = aliceView.find((m) => m.id === sent.id)?.status;
    dim(
      `Alice's first message now shows ${status === 'delivered' || status === 'read' ? '✓✓ delivered' : `status ${status}`} (from Bob's encrypted receipt).`,
    );

    o.out();
    o.out(pc.bold(pc.cyan('Verify · Compare safety numbers')));
    const aliceSees = await alice.client.safetyNumber(bobId);
    const bobSees = await bob.client.safetyNumber(aliceId);
    const aLines = safetyNumberLines(aliceSees.digits);
    const bLines = safetyNumberLines(bobSees.digits);
    note(`${'on Alice’s phone (for Bob)'.padEnd(28)}  on Bob’s phone (for Alice)`);
    for (let i = 0; i < aLines.length; i++) note(`${(aLines[i] ?? '').padEnd(28)}  ${bLines[i] ?? ''}`);
    const same = aliceSees.digits === bobSees.digits;
    note(
      same
        ? pc.green('✓ the same 60 digits on both phones: no one sits in the middle of their key exchange')
        : pc.red('✗ the numbers differ: someone is in the middle!'),
    );
    const scanned = await bob.client.acceptIdentity(aliceId, aliceSees.qr);
    note(
      `Bob scans the QR code on Alice's phone: ${scanned ? pc.green('match → Alice is marked verified') : pc.red('no match')}`,
    );

    // ------------------------------------------------------------------ 10
    await step(10);
    const secrets = [
      { label: 'the text of the first message', bytes: utf8(first) },
      { label: 'the text of the reply', bytes: utf8(reply) },
      { label: "Alice's identity private key", bytes: alice.client.identity.privateKey.serialize() },
      { label: "Bob's identity private key", bytes: bob.client.identity.privateKey.serialize() },
      { label: "Alice's device password", bytes: utf8(alice.client.account.password) },
    ];
    // A message as it lies in Bob's store, read straight from the file.
    const bobStore = new Database(join(bob.dir, 'hush.db'), { readonly: true, fileMustExist: true });
    const sample = bobStore
      .prepare<[], { key: string; value: Uint8Array }>(
        "SELECT key, value FROM kv WHERE namespace = 'messages' ORDER BY key LIMIT 1",
      )
      .get();
    bobStore.close();
    alice.client.disconnect();
    bob.client.disconnect();
    for (const p of people) await p.client.close();
    for (const p of people) {
      const files = filesUnder(p.dir).filter((f) => !f.endsWith('.key'));
      const result = search(files, secrets);
      note(
        `${p.name}'s store (${files.map((f) => relative(p.dir, f)).join(', ')}, ${bytes(result.size)}): searched for both texts, both identity private keys and Alice's device password: ` +
          (result.found.length === 0 ? pc.green('none found') : pc.red(`FOUND ${result.found.join(', ')}`)),
      );
    }
    if (sample) {
      note(`How Bob's copy of Alice's message lies in his store (table kv, namespace "messages"):`);
      note(`  key ${sample.key.replace(/[0-9a-f-]{36}/g, (id) => short(id))}`);
      note(
        `  value ${hexPreview(new Uint8Array(sample.value), 24)}  (${new Uint8Array(sample.value).length} bytes: nonce ‖ AES-256-GCM ‖ tag)`,
      );
    }
    dim('Every value is encrypted under a random storage key; that key is stored only wrapped by the key file');
    dim('store.key (mode 0600) or a passphrase. On phones it lives in the iOS Keychain / Android Keystore.');
    const serverFiles = filesUnder(config.dataDir);
    const serverScan = search(serverFiles, secrets);
    note(
      `The server's data directory (${serverFiles.length} files, ${bytes(serverScan.size)}: database, WAL, logs): ` +
        (serverScan.found.length === 0
          ? pc.green('none of those found either')
          : pc.red(`FOUND ${serverScan.found.join(', ')}`)),
    );

    // ------------------------------------------------------------------ summary
    say();
    say(pc.bold('Summary'));
    const summary: [string, string][] = [
      ['install', 'two app instances (Alice, Bob) and a Hush server, all in this process'],
      ['verify', 'both proved their numbers with SMS codes; the server kept only keyed hashes of the codes'],
      ['keys', 'each device generated its identity key and 202 prekeys; only the public halves were uploaded'],
      ['exchange', "Alice fetched Bob's prekey bundle; one of his one-time prekeys was used up"],
      [
        'encrypt',
        `PQXDH + Double Ratchet on Alice's device: ${utf8(first).length} bytes of text → ${firstRow ? new Uint8Array(firstRow.content).length : '?'} bytes of ciphertext`,
      ],
      ['send', 'the server committed the ciphertext to SQLite before it answered 200'],
      ['notify', `pushed over WebSocket: to Bob when he connected, Bob's reply to Alice in ${replyMs} ms`],
      ['deliver', 'each device acknowledged after storing; the server deleted every envelope'],
      ['decrypt', "only Bob's device could read Alice's message, only Alice's device Bob's reply"],
      ['at rest', 'both device stores are encrypted: no text and no private key anywhere in their files'],
    ];
    for (const [i, [what, detail]] of summary.entries())
      note(`${String(i + 1).padStart(2)} ${what.padEnd(9)} ${detail}`);
    note(`safety numbers: ${same ? 'identical on both phones' : 'DIFFERENT'}; Bob verified Alice by QR code`);
    note(
      `The server saw phone numbers, account ids, public keys, and the sizes and times of ciphertexts. It never saw a message or a private key.`,
    );
    say(pc.dim(`  done in ${seconds(Date.now() - started)}${opts.keep ? `; files kept in ${root}` : ''}`));
  } finally {
    tap.restore();
    for (const p of people) await p.client?.close().catch(() => undefined);
    await server.close().catch(() => undefined);
    if (!opts.keep) {
      removeRoot();
      process.off('exit', removeRoot);
    }
  }
}
