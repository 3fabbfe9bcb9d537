/**
 * Linked devices over real HTTP and WebSocket against the real standalone server: the whole
 * linking flow (link code, provisioning relay, PUT /v1/devices/link with real keys signed by the
 * account's identity), what linking changes for sends and bundles, single use of link codes (also
 * raced), the device limit, bad signatures, expiry, the primary-device rules, removal (credentials,
 * socket, queue), reuse of a removed device's id, re-registration, and rate limits.
 */
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type WebSocket from 'ws';
import { DEVICE_REMOVED_CLOSE_CODE } from '../src/ws/socket-server.ts';
import {
  type SocketClient,
  TestDevice,
  type TestServer,
  api,
  b64,
  marker,
  startTestServer,
} from './support/harness.ts';

const decode = (b: Uint8Array) => new TextDecoder().decode(b);
const address = () => randomBytes(24).toString('base64url');
const LINK_CODE_TTL_MS = 10 * 60 * 1000;

/** One query through a separate read-only connection to the server's SQLite file. */
function query<T>(server: TestServer, sql: string, ...params: unknown[]): T[] {
  const db = new Database(server.config.databasePath, { readonly: true, fileMustExist: true });
  try {
    return db.prepare(sql).all(...params) as T[];
  } finally {
    db.close();
  }
}
const count = (server: TestServer, sql: string, ...params: unknown[]) =>
  (query<{ n: number }>(server, sql, ...params)[0] as { n: number }).n;

function closed(ws: WebSocket, timeoutMs = 10_000): Promise<{ code: number; reason: string }> {
  return new Promise((resolve, reject) => {
    if (ws.readyState === ws.CLOSED) return reject(new Error('the socket was closed already'));
    const timer = setTimeout(() => reject(new Error('the socket was not closed')), timeoutMs);
    ws.once('close', (code, reason) => {
      clearTimeout(timer);
      resolve({ code, reason: reason.toString() });
    });
  });
}

/** A link body for `device`, as PUT /v1/devices/link takes it. */
async function linkBody(device: TestDevice, code: string, extra: Record<string, unknown> = {}) {
  return {
    code,
    password: device.password,
    registrationId: device.registrationId,
    ...(await device.generateKeys(2)),
    ...extra,
  };
}

async function linkCode(server: TestServer, primary: TestDevice): Promise<string> {
  const res = await api(server, 'POST', '/v1/devices/link-code', { auth: primary });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.code;
}

/** The device ids GET /v1/devices lists for `device`'s account. */
async function deviceIds(server: TestServer, device: TestDevice): Promise<number[]> {
  const res = await api(server, 'GET', '/v1/devices', { auth: device });
  expect(res.status).toBe(200);
  return res.body.devices.map((d: { deviceId: number }) => d.deviceId);
}

describe('linked devices', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.close();
  });

  it('links a device through the provisioning relay; bundles, sends and deliveries then include it', async () => {
    const alice = await TestDevice.register(server);
    const bob = await TestDevice.register(server);

    // 1. The new device polls its random address: nothing there yet.
    const where = address();
    expect(await api(server, 'GET', `/v1/provisioning/${where}`)).toMatchObject({ status: 204, body: null });

    // 2. The primary device gets a link code and leaves the (encrypted, opaque) provisioning message.
    const issued = await api(server, 'POST', '/v1/devices/link-code', { auth: alice });
    expect(issued.status).toBe(200);
    expect(issued.body.code).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(issued.body.expiresAt).toBeGreaterThan(Date.now() + LINK_CODE_TTL_MS - 60_000);
    expect(issued.body.expiresAt).toBeLessThanOrEqual(Date.now() + LINK_CODE_TTL_MS);
    // Only the code's hash is stored.
    expect(count(server, 'SELECT count(*) AS n FROM link_codes WHERE account_id = ?', alice.accountId)).toBe(1);
    const stored = query<{ code_hash: Buffer }>(
      server,
      'SELECT code_hash FROM link_codes WHERE account_id = ?',
      alice.accountId,
    );
    expect(stored[0]?.code_hash.includes(Buffer.from(issued.body.code))).toBe(false);
    expect(stored[0]?.code_hash.toString('base64url')).not.toBe(issued.body.code);

    const sealed = randomBytes(300); // stands for the client's encryption of {identity, account, number, code}
    const put = await api(server, 'PUT', `/v1/provisioning/${where}`, { auth: alice, body: { body: b64(sealed) } });
    expect(put.status).toBe(204);

    // 3. The new device gets it once, then links itself with keys signed by the account's identity.
    const got = await api(server, 'GET', `/v1/provisioning/${where}`);
    expect(got.status).toBe(200);
    expect(Buffer.from(got.body.body, 'base64').equals(sealed)).toBe(true);
    expect((await api(server, 'GET', `/v1/provisioning/${where}`)).status).toBe(204);

    const laptop = new TestDevice(alice.identity, alice.number);
    const name = randomBytes(48); // the client's encryption of "Alice's laptop"
    const linked = await api(server, 'PUT', '/v1/devices/link', {
      body: {
        code: issued.body.code,
        password: laptop.password,
        registrationId: laptop.registrationId,
        name: b64(name),
        ...(await laptop.generateKeys(5)),
      },
    });
    expect(linked.status, JSON.stringify(linked.body)).toBe(200);
    expect(linked.body).toEqual({ accountId: alice.accountId, number: alice.number, deviceId: 2 });
    laptop.accountId = linked.body.accountId;
    laptop.deviceId = linked.body.deviceId;

    // It authenticates as accountId.2 : its own password, with its own keys and queue.
    const devices = await api(server, 'GET', '/v1/devices', { auth: laptop });
    expect(devices.status).toBe(200);
    expect(devices.body.devices).toEqual([
      { deviceId: 1, registrationId: alice.registrationId, createdAt: expect.any(Number) },
      { deviceId: 2, registrationId: laptop.registrationId, createdAt: expect.any(Number), name: b64(name) },
    ]);
    expect((await api(server, 'GET', '/v1/keys/count', { auth: laptop })).body).toEqual({ preKeys: 5, pqPreKeys: 5 });
    expect((await api(server, 'GET', '/v1/keys/count', { auth: alice })).body).toEqual({ preKeys: 5, pqPreKeys: 5 });

    // Everyone now gets a bundle for each of Alice's devices, under the one account identity.
    const bundles = await api(server, 'GET', `/v1/keys/${alice.accountId}/*`, { auth: bob });
    expect(bundles.status).toBe(200);
    expect(bundles.body.identityKey).toBe(b64(alice.identity.publicKey.serialize()));
    expect(
      bundles.body.devices.map((d: { deviceId: number; registrationId: number }) => [d.deviceId, d.registrationId]),
    ).toEqual([
      [1, alice.registrationId],
      [2, laptop.registrationId],
    ]);

    // A send to Alice's account that leaves out device 2 is refused.
    const onlyOne = await bob.send(server, alice, Buffer.from('device 1 only'));
    expect(onlyOne.status).toBe(409);
    expect(onlyOne.body.error).toMatchObject({ code: 'mismatched_devices', missingDevices: [2], extraDevices: [] });

    // Bob encrypts once per device; device 2 gets it live over its socket, device 1 from its queue.
    const laptopSocket = await laptop.connect(server);
    await laptopSocket.next((f) => f.type === 'queue-empty');
    const text = marker('to-both');
    const toOne = await bob.encryptFor(server, alice, text, 1);
    const toTwo = await bob.encryptFor(server, alice, text, 2);
    const sent = await api(server, 'PUT', `/v1/messages/${alice.accountId}`, {
      auth: bob,
      body: {
        messages: [
          { deviceId: 1, registrationId: alice.registrationId, type: toOne.type, content: b64(toOne.serialized) },
          { deviceId: 2, registrationId: laptop.registrationId, type: toTwo.type, content: b64(toTwo.serialized) },
        ],
        timestamp: Date.now(),
      },
    });
    expect(sent.status, JSON.stringify(sent.body)).toBe(200);
    const live = await laptopSocket.next((f) => f.type === 'envelope');
    expect(live.envelope).toMatchObject({ sourceAccountId: bob.accountId, sourceDeviceId: 1, destinationDeviceId: 2 });
    expect(decode(await laptop.decrypt(live.envelope))).toBe(decode(text));
    laptopSocket.ack(live.envelope.guid);
    const queued = (await api(server, 'GET', '/v1/messages', { auth: alice })).body.messages;
    expect(queued).toHaveLength(1);
    expect(queued[0].destinationDeviceId).toBe(1);
    expect(decode(await alice.decrypt(queued[0]))).toBe(decode(text));
    expect((await api(server, 'DELETE', `/v1/messages/${queued[0].guid}`, { auth: alice })).status).toBe(204);
    await laptopSocket.close();

    // Device 1 writing to its own account addresses device 2 only (never itself).
    const own = (messages: unknown[]) =>
      api(server, 'PUT', `/v1/messages/${alice.accountId}`, { auth: alice, body: { messages, timestamp: Date.now() } });
    const none = await own([]);
    expect(none.status).toBe(409);
    expect(none.body.error).toMatchObject({ missingDevices: [2], extraDevices: [] });
    const note = marker('note-to-self');
    const sync = await alice.encryptFor(server, alice, note, 2);
    const syncMessage = {
      deviceId: 2,
      registrationId: laptop.registrationId,
      type: sync.type,
      content: b64(sync.serialized),
    };
    const withSelf = await own([{ ...syncMessage, deviceId: 1, registrationId: alice.registrationId }, syncMessage]);
    expect(withSelf.status).toBe(409);
    expect(withSelf.body.error).toMatchObject({ missingDevices: [], extraDevices: [1] });
    expect((await own([syncMessage])).status).toBe(200);
    // Device 2 has no socket now: it fetches its queue over HTTP.
    const laptopQueue = (await api(server, 'GET', '/v1/messages', { auth: laptop })).body.messages;
    expect(laptopQueue).toHaveLength(1);
    expect(laptopQueue[0]).toMatchObject({
      sourceAccountId: alice.accountId,
      sourceDeviceId: 1,
      destinationDeviceId: 2,
    });
    expect(decode(await laptop.decrypt(laptopQueue[0]))).toBe(decode(note));
    expect((await api(server, 'DELETE', `/v1/messages/${laptopQueue[0].guid}`, { auth: laptop })).status).toBe(204);
    // ...and device 1's queue holds nothing of it.
    expect((await api(server, 'GET', '/v1/messages', { auth: alice })).body.messages).toEqual([]);

    // Device 2 sends to others as itself.
    const reply = marker('from-the-laptop');
    expect((await laptop.sendText(server, bob, reply)).status).toBe(200);
    const bobQueue = (await api(server, 'GET', '/v1/messages', { auth: bob })).body.messages;
    expect(bobQueue).toHaveLength(1);
    expect(bobQueue[0]).toMatchObject({ sourceAccountId: alice.accountId, sourceDeviceId: 2 });
    expect(decode(await bob.decrypt(bobQueue[0]))).toBe(decode(reply));
  });

  describe('link codes', () => {
    it('are single use: a second link with the same code is refused with 403 link_code_invalid', async () => {
      const alice = await TestDevice.register(server);
      const code = await linkCode(server, alice);
      const first = await api(server, 'PUT', '/v1/devices/link', {
        body: await linkBody(new TestDevice(alice.identity, alice.number), code),
      });
      expect(first.status).toBe(200);
      const second = await api(server, 'PUT', '/v1/devices/link', {
        body: await linkBody(new TestDevice(alice.identity, alice.number), code),
      });
      expect(second.status).toBe(403);
      expect(second.body).toEqual({ error: { code: 'link_code_invalid', message: expect.any(String) } });
      expect(await deviceIds(server, alice)).toEqual([1, 2]);
    });

    it('are single use under a race: of two parallel links with one code exactly one gets 200', async () => {
      const alice = await TestDevice.register(server);
      for (let round = 0; round < 3; round++) {
        const code = await linkCode(server, alice);
        const bodies = await Promise.all(
          [0, 1].map(() => linkBody(new TestDevice(alice.identity, alice.number), code)),
        );
        const results = await Promise.all(bodies.map((body) => api(server, 'PUT', '/v1/devices/link', { body })));
        expect(results.map((r) => r.status).sort()).toEqual([200, 403]);
        expect(results.find((r) => r.status === 403)?.body.error.code).toBe('link_code_invalid');
      }
      expect(await deviceIds(server, alice)).toEqual([1, 2, 3, 4]);
      expect(count(server, 'SELECT count(*) AS n FROM link_codes WHERE account_id = ?', alice.accountId)).toBe(0);
    });

    it('an unknown code is refused the same way, and so is a code of another shape', async () => {
      const alice = await TestDevice.register(server);
      for (const code of [randomBytes(32).toString('base64url'), 'x', 'not a code at all']) {
        const res = await api(server, 'PUT', '/v1/devices/link', {
          body: await linkBody(new TestDevice(alice.identity, alice.number), code),
        });
        expect(res.status).toBe(403);
        expect(res.body.error.code).toBe('link_code_invalid');
      }
      expect(await deviceIds(server, alice)).toEqual([1]);
    });

    it('expire after 10 minutes (the server clock moved by faking Date)', async () => {
      const alice = await TestDevice.register(server);
      const early = await api(server, 'POST', '/v1/devices/link-code', { auth: alice });
      const late = await api(server, 'POST', '/v1/devices/link-code', { auth: alice });
      const onTime = await linkBody(new TestDevice(alice.identity, alice.number), early.body.code);
      const tooLate = await linkBody(new TestDevice(alice.identity, alice.number), late.body.code);
      vi.useFakeTimers({ toFake: ['Date'], now: early.body.expiresAt - 1 });
      try {
        expect((await api(server, 'PUT', '/v1/devices/link', { body: onTime })).status).toBe(200);
        vi.setSystemTime(late.body.expiresAt);
        const refused = await api(server, 'PUT', '/v1/devices/link', { body: tooLate });
        expect(refused.status).toBe(403);
        expect(refused.body.error.code).toBe('link_code_invalid');
      } finally {
        vi.useRealTimers();
      }
      expect(await deviceIds(server, alice)).toEqual([1, 2]);
    });

    it('keys signed by another identity: 400 invalid_signature, nothing stored, and the code still works', async () => {
      const alice = await TestDevice.register(server);
      const mallory = await TestDevice.register(server);
      const code = await linkCode(server, alice);
      const before = count(server, 'SELECT count(*) AS n FROM signed_prekeys WHERE account_id = ?', alice.accountId);
      // Keys of someone who does not hold Alice's identity private key.
      const impostor = new TestDevice(mallory.identity, alice.number);
      for (const body of [
        await linkBody(impostor, code),
        // Alice's signed prekey, but a last-resort key signed by Mallory
        {
          ...(await linkBody(new TestDevice(alice.identity, alice.number), code)),
          pqLastResortPreKey: (await impostor.generateKeys(1, 900)).pqLastResortPreKey,
        },
      ]) {
        const res = await api(server, 'PUT', '/v1/devices/link', { body });
        expect(res.status).toBe(400);
        expect(res.body.error.code).toBe('invalid_signature');
      }
      expect(await deviceIds(server, alice)).toEqual([1]);
      expect(count(server, 'SELECT count(*) AS n FROM signed_prekeys WHERE account_id = ?', alice.accountId)).toBe(
        before,
      );
      const ok = await api(server, 'PUT', '/v1/devices/link', {
        body: await linkBody(new TestDevice(alice.identity, alice.number), code),
      });
      expect(ok.status).toBe(200);
      expect(ok.body.deviceId).toBe(2);
    });

    it('are made and used for device 1 only: a linked device gets 403 primary_device_required', async () => {
      const alice = await TestDevice.register(server);
      const laptop = await TestDevice.link(server, alice);
      const res = await api(server, 'POST', '/v1/devices/link-code', { auth: laptop });
      expect(res.status).toBe(403);
      expect(res.body.error.code).toBe('primary_device_required');
      expect(count(server, 'SELECT count(*) AS n FROM link_codes WHERE account_id = ?', alice.accountId)).toBe(0);
    });

    it('at most 10 per account per hour: the 11th is refused with 429 and Retry-After', async () => {
      const alice = await TestDevice.register(server);
      for (let i = 0; i < 10; i++) await linkCode(server, alice);
      const refused = await api(server, 'POST', '/v1/devices/link-code', { auth: alice });
      expect(refused.status).toBe(429);
      expect(refused.body.error.code).toBe('rate_limited');
      const retryAfter = Number(refused.headers.get('retry-after'));
      expect(retryAfter).toBeGreaterThan(3500);
      expect(retryAfter).toBeLessThanOrEqual(3600);
      // Another account is not affected.
      await linkCode(server, await TestDevice.register(server));
    });

    it('at most 10 attempts per code: the 11th is refused with 429, even with good keys', async () => {
      const alice = await TestDevice.register(server);
      const mallory = await TestDevice.register(server);
      const code = await linkCode(server, alice);
      const bad = await linkBody(new TestDevice(mallory.identity, alice.number), code);
      for (let i = 0; i < 10; i++) {
        expect((await api(server, 'PUT', '/v1/devices/link', { body: bad })).status).toBe(400);
      }
      const good = await linkBody(new TestDevice(alice.identity, alice.number), code);
      const refused = await api(server, 'PUT', '/v1/devices/link', { body: good });
      expect(refused.status).toBe(429);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(await deviceIds(server, alice)).toEqual([1]);
      // Unknown codes are not counted against anyone (and not stored).
      expect((await api(server, 'PUT', '/v1/devices/link', { body: { ...good, code: 'unknown' } })).status).toBe(403);
    });
  });

  it('at most 6 devices: a 7th link gets 409 too_many_devices and stores nothing; the code works once there is room', async () => {
    const alice = await TestDevice.register(server);
    const linked: TestDevice[] = [];
    for (let i = 0; i < 5; i++) linked.push(await TestDevice.link(server, alice));
    expect(linked.map((d) => d.deviceId)).toEqual([2, 3, 4, 5, 6]);
    const tables = () =>
      ['devices', 'signed_prekeys', 'ec_prekeys', 'kyber_prekeys', 'kyber_last_resort_prekeys'].map((t) =>
        count(server, `SELECT count(*) AS n FROM ${t} WHERE account_id = ?`, alice.accountId),
      );
    const before = tables();
    const code = await linkCode(server, alice);
    const seventh = new TestDevice(alice.identity, alice.number);
    const refused = await api(server, 'PUT', '/v1/devices/link', { body: await linkBody(seventh, code) });
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('too_many_devices');
    expect(tables()).toEqual(before);
    expect(await deviceIds(server, alice)).toEqual([1, 2, 3, 4, 5, 6]);

    expect((await api(server, 'DELETE', '/v1/devices/4', { auth: alice })).status).toBe(204);
    const admitted = await api(server, 'PUT', '/v1/devices/link', { body: await linkBody(seventh, code) });
    expect(admitted.status).toBe(200);
    expect(admitted.body.deviceId).toBe(4);
  });

  describe('provisioning relay', () => {
    it('a message is delivered once; a second PUT replaces it; GET needs no credentials', async () => {
      const alice = await TestDevice.register(server);
      const where = address();
      for (const body of [randomBytes(10), randomBytes(65_536)]) {
        expect(
          (await api(server, 'PUT', `/v1/provisioning/${where}`, { auth: alice, body: { body: b64(body) } })).status,
        ).toBe(204);
      }
      const last = randomBytes(20);
      await api(server, 'PUT', `/v1/provisioning/${where}`, { auth: alice, body: { body: b64(last) } });
      const got = await api(server, 'GET', `/v1/provisioning/${where}`);
      expect(got.status).toBe(200);
      expect(got.body).toEqual({ body: b64(last) });
      expect((await api(server, 'GET', `/v1/provisioning/${where}`)).status).toBe(204);
      // Addresses are kept apart.
      const other = address();
      await api(server, 'PUT', `/v1/provisioning/${other}`, { auth: alice, body: { body: b64(last) } });
      expect((await api(server, 'GET', `/v1/provisioning/${address()}`)).status).toBe(204);
      expect((await api(server, 'GET', `/v1/provisioning/${other}`)).status).toBe(200);
      // The shortest and longest addresses work.
      for (const a of ['a'.repeat(22), `${'-'.repeat(32)}${'_'.repeat(32)}`]) {
        await api(server, 'PUT', `/v1/provisioning/${a}`, { auth: alice, body: { body: b64(last) } });
        expect((await api(server, 'GET', `/v1/provisioning/${a}`)).status).toBe(200);
      }
    });

    it('a linked device cannot leave one (403 primary_device_required); bad addresses are 400', async () => {
      const alice = await TestDevice.register(server);
      const laptop = await TestDevice.link(server, alice);
      const where = address();
      const res = await api(server, 'PUT', `/v1/provisioning/${where}`, {
        auth: laptop,
        body: { body: b64(randomBytes(10)) },
      });
      expect(res.status).toBe(403);
      expect(res.body.error.code).toBe('primary_device_required');
      expect((await api(server, 'GET', `/v1/provisioning/${where}`)).status).toBe(204);
      for (const bad of [
        'a'.repeat(21),
        'a'.repeat(65),
        `${'a'.repeat(22)}.`,
        `${'a'.repeat(22)}%2B`,
        `${'a'.repeat(22)}%00`,
      ]) {
        const get = await api(server, 'GET', `/v1/provisioning/${bad}`);
        expect(get.status, bad).toBe(400);
        expect(get.body.error.code).toBe('invalid_request');
        const put = await api(server, 'PUT', `/v1/provisioning/${bad}`, { auth: alice, body: { body: 'AA==' } });
        expect(put.status, bad).toBe(400);
      }
    });

    it('a message expires after 10 minutes; HEAD does not use it up', async () => {
      const alice = await TestDevice.register(server);
      const where = address();
      const kept = address();
      await api(server, 'PUT', `/v1/provisioning/${where}`, { auth: alice, body: { body: b64(randomBytes(10)) } });
      await api(server, 'PUT', `/v1/provisioning/${kept}`, { auth: alice, body: { body: b64(randomBytes(10)) } });
      expect((await api(server, 'HEAD', `/v1/provisioning/${kept}`)).status).toBe(400);
      vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + LINK_CODE_TTL_MS + 1000 });
      try {
        expect((await api(server, 'GET', `/v1/provisioning/${where}`)).status).toBe(204);
      } finally {
        vi.useRealTimers();
      }
      expect((await api(server, 'GET', `/v1/provisioning/${kept}`)).status).toBe(200);
    });
  });

  describe('removal', () => {
    let alice: TestDevice;
    let bob: TestDevice;
    beforeAll(async () => {
      alice = await TestDevice.register(server);
      bob = await TestDevice.register(server);
    });

    it('device 1 removes device 2: its credentials fail, its socket closes with 4403, its queue and keys are gone', async () => {
      const laptop = await TestDevice.link(server, alice);
      expect(laptop.deviceId).toBe(2);
      const socket: SocketClient = await laptop.connect(server);
      await socket.next((f) => f.type === 'queue-empty');
      const socketClosed = closed(socket.ws);
      // Something waits in its queue.
      const toTwo = await bob.encryptFor(server, laptop, marker('pending'), 2);
      const toOne = await bob.encryptFor(server, alice, marker('pending'), 1);
      expect(
        (
          await api(server, 'PUT', `/v1/messages/${alice.accountId}`, {
            auth: bob,
            body: {
              messages: [
                { deviceId: 1, registrationId: alice.registrationId, type: toOne.type, content: b64(toOne.serialized) },
                {
                  deviceId: 2,
                  registrationId: laptop.registrationId,
                  type: toTwo.type,
                  content: b64(toTwo.serialized),
                },
              ],
              timestamp: Date.now(),
            },
          })
        ).status,
      ).toBe(200);

      const removed = await api(server, 'DELETE', '/v1/devices/2', { auth: alice });
      expect(removed.status).toBe(204);
      expect(await socketClosed).toEqual({ code: DEVICE_REMOVED_CLOSE_CODE, reason: 'device removed' });

      for (const [method, path] of [
        ['GET', '/v1/messages'],
        ['GET', '/v1/devices'],
        ['GET', '/v1/keys/count'],
        ['POST', '/v1/websocket/token'],
      ] as const) {
        const res = await api(server, method, path, { auth: laptop });
        expect(res.status, `${method} ${path}`).toBe(401);
      }
      await expect(laptop.connect(server)).rejects.toThrow(/401/);
      expect(await deviceIds(server, alice)).toEqual([1]);
      expect(
        count(server, 'SELECT count(*) AS n FROM envelopes WHERE account_id = ? AND device_id = 2', alice.accountId),
      ).toBe(0);
      expect(
        count(server, 'SELECT count(*) AS n FROM ec_prekeys WHERE account_id = ? AND device_id = 2', alice.accountId),
      ).toBe(0);
      // Device 1's queue is untouched.
      expect((await api(server, 'GET', '/v1/messages', { auth: alice })).body.messages).toHaveLength(1);

      // Senders learn of it: device 2 is extra now, and has no bundle.
      const toRemoved = await api(server, 'PUT', `/v1/messages/${alice.accountId}`, {
        auth: bob,
        body: {
          messages: [
            { deviceId: 1, registrationId: alice.registrationId, type: 1, content: b64(Buffer.from('x')) },
            { deviceId: 2, registrationId: laptop.registrationId, type: 1, content: b64(Buffer.from('x')) },
          ],
          timestamp: Date.now(),
        },
      });
      expect(toRemoved.status).toBe(409);
      expect(toRemoved.body.error).toMatchObject({ missingDevices: [], extraDevices: [2] });
      expect((await api(server, 'GET', `/v1/keys/${alice.accountId}/2`, { auth: bob })).status).toBe(404);
      const bundles = await api(server, 'GET', `/v1/keys/${alice.accountId}/*`, { auth: bob });
      expect(bundles.body.devices.map((d: { deviceId: number }) => d.deviceId)).toEqual([1]);
      // Removing it again: 404.
      const again = await api(server, 'DELETE', '/v1/devices/2', { auth: alice });
      expect(again.status).toBe(404);
      expect(again.body.error.code).toBe('device_not_found');
    });

    it('a linked device removes itself over its own socket: the 204 arrives, then the 4403 close', async () => {
      const tablet = await TestDevice.link(server, alice);
      const socket = await tablet.connect(server);
      await socket.next((f) => f.type === 'queue-empty');
      const socketClosed = closed(socket.ws);
      socket.ws.send(
        JSON.stringify({ type: 'request', id: 1, method: 'DELETE', path: `/v1/devices/${tablet.deviceId}` }),
      );
      const answer = await socket.next((f) => f.type === 'response' && f.id === 1);
      expect(answer.status).toBe(204);
      expect((await socketClosed).code).toBe(DEVICE_REMOVED_CLOSE_CODE);
      expect((await api(server, 'GET', '/v1/devices', { auth: tablet })).status).toBe(401);
      expect(await deviceIds(server, alice)).toEqual([1]);
    });

    it('a linked device removes itself over HTTP', async () => {
      const tablet = await TestDevice.link(server, alice);
      expect((await api(server, 'DELETE', `/v1/devices/${tablet.deviceId}`, { auth: tablet })).status).toBe(204);
      expect((await api(server, 'GET', '/v1/devices', { auth: tablet })).status).toBe(401);
      expect(await deviceIds(server, alice)).toEqual([1]);
    });

    it('a linked device cannot remove another (403 forbidden); nobody removes device 1; other accounts are out of reach', async () => {
      const two = await TestDevice.link(server, alice);
      const three = await TestDevice.link(server, alice);
      const forbidden = await api(server, 'DELETE', `/v1/devices/${three.deviceId}`, { auth: two });
      expect(forbidden.status).toBe(403);
      expect(forbidden.body.error.code).toBe('forbidden');
      // Also when the target does not exist: a linked device learns nothing about the others.
      expect((await api(server, 'DELETE', '/v1/devices/6', { auth: two })).status).toBe(403);
      for (const by of [alice, two]) {
        const primary = await api(server, 'DELETE', '/v1/devices/1', { auth: by });
        expect(primary.status).toBe(400);
        expect(primary.body.error.code).toBe('primary_device_not_removable');
      }
      // Bob's device 2 does not exist in Bob's account; Alice's device 2 is not Bob's to remove.
      expect((await api(server, 'DELETE', `/v1/devices/${two.deviceId}`, { auth: bob })).status).toBe(404);
      expect(await deviceIds(server, alice)).toEqual([1, two.deviceId, three.deviceId]);
      for (const d of [two, three]) {
        expect((await api(server, 'DELETE', `/v1/devices/${d.deviceId}`, { auth: alice })).status).toBe(204);
      }
    });

    it('a removed device’s id goes to the next linked device, which starts with an empty queue; the old credentials stay dead', async () => {
      const old = await TestDevice.link(server, alice);
      expect(old.deviceId).toBe(2);
      expect((await api(server, 'DELETE', '/v1/devices/2', { auth: alice })).status).toBe(204);
      const fresh = await TestDevice.link(server, alice);
      expect(fresh.deviceId).toBe(2);
      expect((await api(server, 'GET', '/v1/messages', { auth: fresh })).body).toEqual({ messages: [], more: false });
      expect((await api(server, 'GET', '/v1/messages', { auth: old })).status).toBe(401);
      expect((await api(server, 'DELETE', '/v1/devices/2', { auth: alice })).status).toBe(204);
    });
  });

  it('re-registering the number drops the linked devices, their queues, the link codes and provisioning messages', async () => {
    const alice = await TestDevice.register(server);
    const bob = await TestDevice.register(server);
    const laptop = await TestDevice.link(server, alice, { name: randomBytes(30) });
    const socket = await laptop.connect(server);
    await socket.next((f) => f.type === 'queue-empty');
    await socket.close();
    const pendingCode = await linkCode(server, alice);
    const where = address();
    await api(server, 'PUT', `/v1/provisioning/${where}`, { auth: alice, body: { body: b64(randomBytes(10)) } });
    const toTwo = await bob.encryptFor(server, laptop, marker('before'), 2);
    const toOne = await bob.encryptFor(server, alice, marker('before'), 1);
    const sent = await api(server, 'PUT', `/v1/messages/${alice.accountId}`, {
      auth: bob,
      body: {
        messages: [
          { deviceId: 1, registrationId: alice.registrationId, type: toOne.type, content: b64(toOne.serialized) },
          { deviceId: 2, registrationId: laptop.registrationId, type: toTwo.type, content: b64(toTwo.serialized) },
        ],
        timestamp: Date.now(),
      },
    });
    expect(sent.status).toBe(200);
    const rows = (t: string) => count(server, `SELECT count(*) AS n FROM ${t} WHERE account_id = ?`, alice.accountId);
    expect([rows('devices'), rows('envelopes'), rows('link_codes'), rows('provisioning_messages')]).toEqual([
      2, 2, 1, 1,
    ]);

    const fresh = await TestDevice.register(server, { number: alice.number });
    expect(fresh.accountId).not.toBe(alice.accountId);
    expect((await api(server, 'GET', '/v1/messages', { auth: laptop })).status).toBe(401);
    await expect(laptop.connect(server)).rejects.toThrow(/401/);
    expect([rows('devices'), rows('envelopes'), rows('link_codes'), rows('provisioning_messages')]).toEqual([
      0, 0, 0, 0,
    ]);
    for (const t of ['signed_prekeys', 'ec_prekeys', 'kyber_prekeys', 'kyber_last_resort_prekeys'])
      expect(rows(t)).toBe(0);
    expect((await api(server, 'GET', `/v1/provisioning/${where}`)).status).toBe(204);
    const stale = await api(server, 'PUT', '/v1/devices/link', {
      body: await linkBody(new TestDevice(alice.identity, alice.number), pendingCode),
    });
    expect(stale.status).toBe(403);
    expect(stale.body.error.code).toBe('link_code_invalid');
    expect(await deviceIds(server, fresh)).toEqual([1]);
  });
});
