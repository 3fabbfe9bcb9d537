/**
 * Security invariant: plaintext and private keys never leave the device, so the server's files
 * (SQLite database and its WAL, attachments, dev push log) and its logs hold none of them; and the
 * logs hold no credentials or verification codes.
 *
 * A realistic session runs first (live, offline, over HTTP and over the socket, a sender-key group
 * message, an attachment, a socket token, a few bad requests), with marker plaintexts; then every
 * file of the data directory (except the dev SMS log, which holds codes by design) is scanned,
 * while the server runs (WAL present) and after it stopped, and so are the captured logs.
 */
import { createCipheriv, createHmac, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import {
  CiphertextMessageType,
  ProtocolAddress,
  SenderKeyDistributionMessage,
  createSenderKeyDistributionMessage,
  groupDecrypt,
  groupEncrypt,
  processSenderKeyDistributionMessage,
} from '@hush/protocol';
import { nodeCrypto } from '@hush/protocol/node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import {
  SocketClient,
  TestDevice,
  type TestServer,
  api,
  b64,
  devSmsFile,
  marker,
  startTestServer,
} from './support/harness.ts';

const decode = (b: Uint8Array) => new TextDecoder().decode(b);
const encode = (s: string) => new TextEncoder().encode(s);

interface Secret {
  what: string;
  bytes: Uint8Array;
}

/** Everything private a test device holds right after registration (keys made by generateKeys(5)). */
async function privateMaterial(device: TestDevice, label: string): Promise<Secret[]> {
  const s = device.stores;
  const secrets: Secret[] = [
    { what: `${label} identity private key`, bytes: device.identity.privateKey.serialize() },
    { what: `${label} password`, bytes: encode(device.password) },
  ];
  const signed = await s.signedPreKeys.getSignedPreKey(1);
  secrets.push({ what: `${label} signed prekey`, bytes: signed.keyPair.privateKey.serialize() });
  for (let id = 1; id <= 5; id++) {
    const k = await s.preKeys.getPreKey(id);
    secrets.push({ what: `${label} one-time prekey ${id}`, bytes: k.keyPair.privateKey.serialize() });
  }
  for (const id of [101, 102, 103, 104, 105, 10_001]) {
    const k = await s.kyberPreKeys.getKyberPreKey(id);
    secrets.push({ what: `${label} kyber prekey ${id}`, bytes: k.keyPair.secretKey.serialize() });
  }
  return secrets;
}

/** Each secret as raw bytes and as the text encodings a leak would likely take. */
function needles(secret: Secret): { what: string; bytes: Buffer }[] {
  const raw = Buffer.from(secret.bytes);
  return [
    { what: `${secret.what} (raw)`, bytes: raw },
    { what: `${secret.what} (base64)`, bytes: Buffer.from(raw.toString('base64')) },
    { what: `${secret.what} (base64url)`, bytes: Buffer.from(raw.toString('base64url')) },
    { what: `${secret.what} (hex)`, bytes: Buffer.from(raw.toString('hex')) },
  ];
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? filesUnder(path) : [path];
  });
}

/** Every (file, secret) pair where the file holds the secret in some encoding. */
function scan(contents: Map<string, Buffer>, secrets: Secret[]): string[] {
  const all = secrets.flatMap(needles);
  const hits: string[] = [];
  for (const [name, data] of contents) {
    for (const n of all) if (data.includes(n.bytes)) hits.push(`${name}: ${n.what}`);
  }
  return hits;
}

/** The server-side files to scan: everything in the data dir but the dev SMS log (codes by design). */
function readDataDir(server: TestServer): Map<string, Buffer> {
  const contents = new Map<string, Buffer>();
  for (const path of filesUnder(server.dataDir)) {
    if (path === devSmsFile(server)) continue;
    contents.set(relative(server.dataDir, path), readFileSync(path));
  }
  return contents;
}

describe('no plaintext, private keys or credentials on the server', () => {
  let server: TestServer;
  const secrets: Secret[] = [];
  const credentials: Secret[] = [];
  /** Public data the server does store: a positive control for the scanner. */
  const publicKeys: Secret[] = [];
  let runningSnapshot: Map<string, Buffer>;

  beforeAll(async () => {
    server = await startTestServer();
    const alice = await TestDevice.register(server);
    const bob = await TestDevice.register(server);
    const carol = await TestDevice.register(server);
    for (const [device, label] of [
      [alice, 'alice'],
      [bob, 'bob'],
      [carol, 'carol'],
    ] as const) {
      secrets.push(...(await privateMaterial(device, label)));
      publicKeys.push({ what: `${label} identity public key`, bytes: device.identity.publicKey.serialize() });
      credentials.push({ what: `${label} authorization header`, bytes: encode(device.authorization) });
      credentials.push({ what: `${label} basic credentials`, bytes: encode(device.authorization.slice(6)) });
    }
    const markers: Uint8Array[] = [];
    const mark = (label: string) => {
      const m = marker(label);
      markers.push(m);
      return m;
    };

    // Live, over the socket; Bob answers over the socket itself.
    const bobSocket = await bob.connect(server);
    await bobSocket.next((f) => f.type === 'queue-empty');
    const live = mark('np-live');
    expect((await alice.sendText(server, bob, live, { id: 'np-1' })).status).toBe(200);
    const liveFrame = await bobSocket.next((f) => f.type === 'envelope');
    expect(decode(await bob.decrypt(liveFrame.envelope))).toBe(decode(live));
    bobSocket.ack(liveFrame.envelope.guid);
    const reply = await bob.encryptFor(server, alice, mark('np-reply'));
    bobSocket.ws.send(
      JSON.stringify({
        type: 'request',
        id: 1,
        method: 'PUT',
        path: `/v1/messages/${alice.accountId}`,
        body: {
          messages: [
            { deviceId: 1, registrationId: alice.registrationId, type: reply.type, content: b64(reply.serialized) },
          ],
          timestamp: Date.now(),
        },
      }),
    );
    expect((await bobSocket.next((f) => f.type === 'response' && f.id === 1)).status).toBe(200);
    await bobSocket.close();

    // Offline: Alice and Carol write while Bob is away; a socket token brings him back.
    const offline = [mark('np-offline-1'), mark('np-offline-2')];
    for (const m of offline) expect((await alice.sendText(server, bob, m)).status).toBe(200);
    const fromCarol = mark('np-carol');
    expect((await carol.sendText(server, bob, fromCarol)).status).toBe(200);
    const token = await api(server, 'POST', '/v1/websocket/token', { auth: bob });
    expect(token.status).toBe(200);
    credentials.push({ what: 'socket token', bytes: encode(token.body.token) });
    const tokenSocket = new SocketClient(
      new WebSocket(`${server.url.replace('http', 'ws')}/v1/websocket?token=${encodeURIComponent(token.body.token)}`),
    );
    await tokenSocket.next((f) => f.type === 'queue-empty');
    const backlog = tokenSocket.envelopes();
    expect(backlog).toHaveLength(3);
    const texts: string[] = [];
    for (const e of backlog) {
      texts.push(decode(await bob.decrypt(e)));
      tokenSocket.ack(e.guid);
    }
    expect(texts).toEqual([...offline, fromCarol].map(decode));
    await tokenSocket.close();

    // Alice has no socket: HTTP fetch, decrypt, acknowledge.
    const aliceQueue = await api(server, 'GET', '/v1/messages', { auth: alice });
    expect(aliceQueue.body.messages).toHaveLength(1);
    expect(decode(await alice.decrypt(aliceQueue.body.messages[0]))).toMatch(/^PLAINTEXT-MARKER-np-reply-/);
    expect(
      (await api(server, 'DELETE', `/v1/messages/${aliceQueue.body.messages[0].guid}`, { auth: alice })).status,
    ).toBe(204);

    // A sender-key group: the distribution message goes 1:1 (encrypted), the group message once.
    const distributionId = randomUUID();
    const aliceAddress = new ProtocolAddress(alice.accountId, 1);
    const skdm = await createSenderKeyDistributionMessage(
      nodeCrypto,
      aliceAddress,
      distributionId,
      alice.stores.senderKeys,
    );
    const state = (await alice.stores.senderKeys.getSenderKey(aliceAddress, distributionId))?.currentState();
    if (state?.signingPrivateKey) {
      secrets.push({ what: 'alice sender chain key', bytes: state.chainKey.key });
    }
    for (const member of [bob, carol]) {
      expect((await alice.sendText(server, member, skdm.serialize())).status).toBe(200);
    }
    const group = mark('np-group');
    const groupCiphertext = await groupEncrypt(
      nodeCrypto,
      aliceAddress,
      distributionId,
      alice.stores.senderKeys,
      group,
    );
    const multi = await api(server, 'PUT', '/v1/messages/multi', {
      auth: alice,
      body: {
        type: CiphertextMessageType.SenderKey,
        content: b64(groupCiphertext),
        timestamp: Date.now(),
        id: 'np-group-1',
        recipients: [bob, carol].map((m) => ({
          accountId: m.accountId,
          devices: [{ deviceId: 1, registrationId: m.registrationId }],
        })),
      },
    });
    expect(multi.status).toBe(200);
    for (const member of [bob, carol]) {
      const q = await api(server, 'GET', '/v1/messages', { auth: member });
      // The distribution message (1:1, Whisper or PreKey), then the group message.
      expect(q.body.messages.map((e: { type: number }) => e.type === CiphertextMessageType.SenderKey)).toEqual([
        false,
        true,
      ]);
      const [distribution, groupMessage] = q.body.messages;
      await processSenderKeyDistributionMessage(
        nodeCrypto,
        aliceAddress,
        SenderKeyDistributionMessage.deserialize(await member.decrypt(distribution)),
        member.stores.senderKeys,
      );
      const text = await groupDecrypt(
        nodeCrypto,
        aliceAddress,
        member.stores.senderKeys,
        new Uint8Array(Buffer.from(groupMessage.content, 'base64')),
      );
      expect(decode(text)).toBe(decode(group));
      for (const e of q.body.messages) {
        expect((await api(server, 'DELETE', `/v1/messages/${e.guid}`, { auth: member })).status).toBe(204);
      }
    }

    // An attachment: encrypted on Alice's device, the key travels inside a 1:1 message.
    const attachmentPlain = mark('np-attachment');
    const keys = randomBytes(64);
    const iv = randomBytes(16);
    const cipher = createCipheriv('aes-256-cbc', keys.subarray(0, 32), iv);
    const body = Buffer.concat([iv, cipher.update(attachmentPlain), cipher.final()]);
    const blob = Buffer.concat([body, createHmac('sha256', keys.subarray(32)).update(body).digest()]);
    secrets.push({ what: 'attachment keys', bytes: keys });
    const uploaded = await api(server, 'POST', '/v1/attachments', {
      auth: alice,
      rawBody: blob,
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(uploaded.status).toBe(200);
    const pointer = mark(`np-pointer-${JSON.stringify({ id: uploaded.body.id, keys: b64(keys) })}`);
    expect((await alice.sendText(server, bob, pointer)).status).toBe(200);
    const pointerQueue = await api(server, 'GET', '/v1/messages', { auth: bob });
    expect(decode(await bob.decrypt(pointerQueue.body.messages[0]))).toBe(decode(pointer));
    const downloaded = await fetch(`${server.url}/v1/attachments/${uploaded.body.id}`, {
      headers: { authorization: bob.authorization },
    });
    expect(Buffer.from(await downloaded.arrayBuffer()).equals(blob)).toBe(true);

    // Messages left in the queue (not yet delivered) are at rest on the server too.
    const pending = mark('np-pending');
    expect((await carol.sendText(server, alice, pending)).status).toBe(200);

    // Bad requests that carry plaintext must not bring it into the logs either.
    const leaky = mark('np-bad-request');
    expect(
      (await api(server, 'POST', '/v1/verification/sessions', { body: { number: decode(leaky) } })).status,
    ).toBeGreaterThanOrEqual(400);
    expect(
      (
        await api(server, 'PUT', `/v1/messages/${bob.accountId}`, {
          auth: alice,
          body: { messages: [{ deviceId: 1, registrationId: 1, type: 3, content: decode(leaky) }], timestamp: 1 },
        })
      ).status,
    ).toBe(400);
    expect((await api(server, 'GET', `/v1/keys/${decode(leaky)}/1`, { auth: alice })).status).toBe(400);
    const wrongPassword = `Basic ${Buffer.from(`${alice.accountId}.1:${decode(leaky)}`).toString('base64')}`;
    credentials.push({ what: 'a wrong password', bytes: encode(wrongPassword) });
    expect((await api(server, 'GET', '/v1/messages', { auth: wrongPassword })).status).toBe(401);

    secrets.push(...markers.map((m) => ({ what: decode(m), bytes: m })));
    runningSnapshot = readDataDir(server);
    await server.close();
  });

  afterAll(async () => {
    await server.close();
    rmSync(server.dataDir, { recursive: true, force: true });
  });

  it('the scan covers the database, its WAL and the attachment blob, and finds what is there', () => {
    const names = [...runningSnapshot.keys()];
    expect(names).toEqual(expect.arrayContaining(['hush.sqlite', 'hush.sqlite-wal']));
    expect(runningSnapshot.get('hush.sqlite-wal')?.length).toBeGreaterThan(0);
    expect(names.some((n) => n.startsWith('attachments/'))).toBe(true);
    // Identity public keys are stored by design: the scanner must see them.
    const found = scan(runningSnapshot, publicKeys);
    for (const key of publicKeys) expect(found.some((hit) => hit.includes(`${key.what} (raw)`))).toBe(true);
    expect(server.logs()).toContain('"route":"/v1/messages/:accountId"');
  });

  it('no marker, password, private key or attachment key in any server file, running or stopped', () => {
    expect(scan(runningSnapshot, secrets)).toEqual([]);
    expect(scan(readDataDir(server), secrets)).toEqual([]);
  });

  it('no marker, password or private key in the logs', () => {
    expect(scan(new Map([['logs', Buffer.from(server.logs())]]), secrets)).toEqual([]);
  });

  it('no authorization header value, socket token or verification code in the logs', () => {
    const logs = server.logs();
    expect(scan(new Map([['logs', Buffer.from(logs)]]), credentials)).toEqual([]);
    expect(logs.toLowerCase()).not.toContain('basic ');
    const codes = readFileSync(devSmsFile(server), 'utf8')
      .trim()
      .split('\n')
      .map((line) => (JSON.parse(line) as { code: string }).code);
    expect(codes.length).toBeGreaterThanOrEqual(3);
    // As a token of its own (a 6-digit run inside a timestamp is a coincidence, not a leak).
    const leaked = codes.filter((code) => new RegExp(`(?<![0-9])${code}(?![0-9])`).test(logs));
    expect(leaked).toEqual([]);
  });
});
