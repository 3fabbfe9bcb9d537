/**
 * Who may do what, over real HTTP and WebSocket against the real standalone server: every
 * authenticated route (enumerated from /openapi.json) refuses missing, malformed, wrong and unknown
 * credentials; a device reads and deletes only its own queue and uploads keys only for itself; a
 * re-registered number's old credentials and queue are gone; WebSocket upgrades and socket tokens;
 * socket request frames reach only the device API.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { type SocketClient, TestDevice, type TestServer, api, b64, startTestServer } from './support/harness.ts';

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

/** Every row of every table, through a read-only connection to the server's SQLite file. */
function databaseRows(server: TestServer): Record<string, string[]> {
  const db = new Database(server.config.databasePath, { readonly: true, fileMustExist: true });
  try {
    const tables = db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
      .all()
      .map((r) => (r as { name: string }).name);
    return Object.fromEntries(
      tables.map((t) => [
        t,
        db
          .prepare(`SELECT * FROM "${t}"`)
          .all()
          .map((row) =>
            JSON.stringify(row, (_k, v) => (v?.type === 'Buffer' ? Buffer.from(v.data).toString('hex') : v)),
          )
          .sort(),
      ]),
    );
  } finally {
    db.close();
  }
}

function attachmentFiles(server: TestServer): string[] {
  return readdirSync(server.config.attachmentsDir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => `${join(e.parentPath, e.name)}:${statSync(join(e.parentPath, e.name)).size}`)
    .sort();
}

function queueRows(server: TestServer, accountId: string): number {
  const db = new Database(server.config.databasePath, { readonly: true });
  try {
    return (db.prepare('SELECT count(*) AS n FROM envelopes WHERE account_id = ?').get(accountId) as { n: number }).n;
  } finally {
    db.close();
  }
}

/** Opens a WebSocket; resolves with 101 and the open client, or the refusal's status and JSON body. */
function upgrade(
  server: TestServer,
  query = '',
  headers: Record<string, string> = {},
  path = '/v1/websocket',
): Promise<{ status: number; body?: any; ws?: WebSocket; frames: any[] }> {
  return new Promise((resolve, reject) => {
    const frames: any[] = [];
    const ws = new WebSocket(`${server.url.replace('http', 'ws')}${path}${query}`, { headers });
    ws.on('message', (data) => frames.push(JSON.parse(data.toString())));
    ws.once('open', () => resolve({ status: 101, ws, frames }));
    ws.once('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (c) => {
        text += c;
      });
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : null, frames });
        ws.terminate();
      });
    });
    ws.once('error', (error) => {
      if (ws.readyState !== WebSocket.CLOSED) reject(error);
    });
  });
}

async function closeSocket(ws: WebSocket | undefined) {
  if (!ws || ws.readyState === WebSocket.CLOSED) return;
  await new Promise<void>((resolve) => {
    ws.once('close', () => resolve());
    ws.close();
  });
}

const waitFor = async (predicate: () => boolean, timeoutMs = 5000) => {
  const until = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > until) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
};

interface Ctx {
  server: TestServer;
  alice: TestDevice;
  bob: TestDevice;
  carol: TestDevice;
}

interface Call {
  method: string;
  path: string;
  body?: unknown;
  rawBody?: Buffer<ArrayBuffer>;
  /** What the same call answers with Alice's own credentials. */
  ok: number;
}

const sendTo = (to: TestDevice) => ({
  messages: [{ deviceId: 1, registrationId: to.registrationId, type: 1, content: b64(Buffer.from('ciphertext')) }],
  timestamp: Date.now(),
});

/** Every authenticated route, as a call Alice is allowed to make (set up as needed). */
const authenticated: Record<string, (ctx: Ctx) => Promise<Call>> = {
  'PUT /v1/keys': async () => ({
    method: 'PUT',
    path: '/v1/keys',
    body: { preKeys: [{ keyId: 90_000, publicKey: b64(Buffer.concat([Buffer.from([5]), randomBytes(32)])) }] },
    ok: 204,
  }),
  'GET /v1/keys/count': async () => ({ method: 'GET', path: '/v1/keys/count', ok: 200 }),
  'GET /v1/keys/{accountId}/{deviceId}': async ({ bob }) => ({
    method: 'GET',
    path: `/v1/keys/${bob.accountId}/1`,
    ok: 200,
  }),
  'PUT /v1/messages/multi': async ({ bob }) => ({
    method: 'PUT',
    path: '/v1/messages/multi',
    body: {
      type: 7,
      content: b64(Buffer.from('group ciphertext')),
      timestamp: Date.now(),
      recipients: [{ accountId: bob.accountId, devices: [{ deviceId: 1, registrationId: bob.registrationId }] }],
    },
    ok: 200,
  }),
  'PUT /v1/messages/{accountId}': async ({ bob }) => ({
    method: 'PUT',
    path: `/v1/messages/${bob.accountId}`,
    body: sendTo(bob),
    ok: 200,
  }),
  'GET /v1/messages': async () => ({ method: 'GET', path: '/v1/messages', ok: 200 }),
  'DELETE /v1/messages/{guid}': async ({ server, alice, bob }) => {
    expect((await bob.send(server, alice, Buffer.from('for alice'))).status).toBe(200);
    const queue = await api(server, 'GET', '/v1/messages', { auth: alice });
    return { method: 'DELETE', path: `/v1/messages/${queue.body.messages.at(-1).guid}`, ok: 204 };
  },
  'POST /v1/websocket/token': async () => ({ method: 'POST', path: '/v1/websocket/token', ok: 200 }),
  'POST /v1/attachments': async () => ({
    method: 'POST',
    path: '/v1/attachments',
    rawBody: randomBytes(1000),
    ok: 200,
  }),
  'GET /v1/attachments/{id}': async ({ server, alice }) => {
    const uploaded = await api(server, 'POST', '/v1/attachments', {
      auth: alice,
      rawBody: randomBytes(100),
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(uploaded.status).toBe(200);
    return { method: 'GET', path: `/v1/attachments/${uploaded.body.id}`, ok: 200 };
  },
  'GET /v1/devices': async () => ({ method: 'GET', path: '/v1/devices', ok: 200 }),
  'PUT /v1/devices/push': async () => ({ method: 'PUT', path: '/v1/devices/push', body: { webPush: null }, ok: 204 }),
  'POST /v1/devices/link-code': async () => ({ method: 'POST', path: '/v1/devices/link-code', ok: 200 }),
  'DELETE /v1/devices/{deviceId}': async ({ server, alice }) => {
    const linked = await TestDevice.link(server, alice);
    return { method: 'DELETE', path: `/v1/devices/${linked.deviceId}`, ok: 204 };
  },
  'PUT /v1/provisioning/{address}': async () => ({
    method: 'PUT',
    path: `/v1/provisioning/${randomBytes(16).toString('base64url')}`,
    body: { body: b64(randomBytes(100)) },
    ok: 204,
  }),
};

/** Credentials that must all be refused, named. */
function badCredentials({ alice, bob }: Ctx): [string, string | undefined][] {
  const user = `${alice.accountId}.1`;
  return [
    ['no Authorization header', undefined],
    ['"Basic" alone', 'Basic'],
    ['Basic with text that is not base64', 'Basic !!!not-base64!!!'],
    ['Basic without a colon', `Basic ${Buffer.from(`${user}${alice.password}`).toString('base64')}`],
    ['Basic without a device id', basic(alice.accountId, alice.password)],
    ['Basic with a device id that is not a number', basic(`${alice.accountId}.one`, alice.password)],
    [
      'the right credentials as a Bearer token',
      `Bearer ${Buffer.from(`${user}:${alice.password}`).toString('base64')}`,
    ],
    ['the password alone', alice.password],
    ['a wrong password', basic(user, 'not-the-password-at-all-0000')],
    ['an empty password', basic(user, '')],
    ['the password with one more character', basic(user, `${alice.password}x`)],
    ["another device's password", basic(user, bob.password)],
    ["Alice's password on Bob's account", basic(`${bob.accountId}.1`, alice.password)],
    ['an unknown account', basic(`${randomUUID()}.1`, alice.password)],
    ['an account id that is not a UUID', basic('alice.1', alice.password)],
    ['an unknown device of the account', basic(`${alice.accountId}.2`, alice.password)],
    ['device 0', basic(`${alice.accountId}.0`, alice.password)],
  ];
}

describe('authorization', () => {
  const ctx = {} as Ctx;

  beforeAll(async () => {
    ctx.server = await startTestServer();
    ctx.alice = await TestDevice.register(ctx.server);
    ctx.bob = await TestDevice.register(ctx.server);
    ctx.carol = await TestDevice.register(ctx.server);
  });
  afterAll(async () => {
    await ctx.server?.close();
  });

  it('covers every authenticated route of /openapi.json; only verification, registration and linking a new device are public', async () => {
    const doc = await api(ctx.server, 'GET', '/openapi.json');
    const operations = Object.entries<Record<string, { security?: unknown[] }>>(doc.body.paths).flatMap(([path, ops]) =>
      Object.entries(ops).map(([method, op]) => ({
        route: `${method.toUpperCase()} ${path}`,
        secured: (op.security?.length ?? 0) > 0,
      })),
    );
    expect(doc.body.components.securitySchemes.basicAuth).toMatchObject({ type: 'http', scheme: 'basic' });
    expect(
      operations
        .filter((o) => o.secured)
        .map((o) => o.route)
        .sort(),
    ).toEqual(Object.keys(authenticated).sort());
    expect(
      operations
        .filter((o) => !o.secured)
        .map((o) => o.route)
        .sort(),
    ).toEqual([
      'GET /v1/provisioning/{address}',
      'POST /v1/accounts',
      'POST /v1/verification/sessions',
      'POST /v1/verification/sessions/{id}/code',
      'PUT /v1/devices/link',
    ]);
  });

  for (const route of Object.keys(authenticated)) {
    it(`${route}: missing, malformed, wrong and unknown credentials → 401 JSON, nothing changes; Alice's own → ok`, async () => {
      const setup = authenticated[route] as (ctx: Ctx) => Promise<Call>;
      const call = await setup(ctx);
      const send = (authorization: string | undefined) =>
        api(ctx.server, call.method, call.path, {
          ...(authorization ? { auth: authorization } : {}),
          ...(call.body !== undefined ? { body: call.body } : {}),
          ...(call.rawBody ? { rawBody: call.rawBody, headers: { 'content-type': 'application/octet-stream' } } : {}),
        });
      const before = { rows: databaseRows(ctx.server), files: attachmentFiles(ctx.server) };
      for (const [name, authorization] of badCredentials(ctx)) {
        const res = await send(authorization);
        expect(res.status, `${name}: ${JSON.stringify(res.body)}`).toBe(401);
        expect(res.headers.get('content-type'), name).toMatch(/^application\/json/);
        expect(res.body, name).toEqual({ error: { code: 'unauthorized', message: expect.any(String) } });
      }
      expect({ rows: databaseRows(ctx.server), files: attachmentFiles(ctx.server) }).toEqual(before);
      // The same call with Alice's credentials goes through: the 401s were about the credentials.
      const res = await send(ctx.alice.authorization);
      expect(res.status, JSON.stringify(res.body)).toBe(call.ok);
    });
  }

  describe('a device reaches only its own queue and keys', () => {
    it("another device can neither read nor delete Bob's envelope; Bob can", async () => {
      const { server, alice, bob, carol } = ctx;
      for (const m of await (await api(server, 'GET', '/v1/messages', { auth: bob })).body.messages) {
        await api(server, 'DELETE', `/v1/messages/${m.guid}`, { auth: bob });
      }
      expect((await alice.send(server, bob, Buffer.from('for bob only'))).status).toBe(200);
      const [envelope] = (await api(server, 'GET', '/v1/messages', { auth: bob })).body.messages;
      expect(envelope.sourceAccountId).toBe(alice.accountId);

      // Carol's and Alice's queues do not show it.
      for (const other of [carol, alice]) {
        const queue = await api(server, 'GET', '/v1/messages', { auth: other });
        expect(queue.status).toBe(200);
        expect(queue.body.messages.map((m: { guid: string }) => m.guid)).not.toContain(envelope.guid);
      }
      // Neither the sender nor a stranger can delete it: 404, as if it did not exist.
      for (const other of [carol, alice]) {
        const deleted = await api(server, 'DELETE', `/v1/messages/${envelope.guid}`, { auth: other });
        expect(deleted.status).toBe(404);
        expect(deleted.body.error.code).toBe('message_not_found');
      }
      // Nor with an ack over its own socket, nor a request frame.
      const socket = await carol.connect(server);
      await socket.next((f) => f.type === 'queue-empty');
      socket.ack(envelope.guid);
      socket.ws.send(
        JSON.stringify({ type: 'request', id: 1, method: 'DELETE', path: `/v1/messages/${envelope.guid}` }),
      );
      expect((await socket.next((f) => f.type === 'response' && f.id === 1)).status).toBe(404);
      await socket.close();

      const still = await api(server, 'GET', '/v1/messages', { auth: bob });
      expect(still.body.messages.map((m: { guid: string }) => m.guid)).toEqual([envelope.guid]);
      expect((await api(server, 'DELETE', `/v1/messages/${envelope.guid}`, { auth: bob })).status).toBe(204);
      expect((await api(server, 'DELETE', `/v1/messages/${envelope.guid}`, { auth: bob })).status).toBe(404);
      expect((await api(server, 'GET', '/v1/messages', { auth: bob })).body.messages).toEqual([]);
    });

    it("keys signed by Bob's identity cannot be uploaded with Carol's credentials; uploads land on the uploader only", async () => {
      const { server, bob, carol } = ctx;
      const count = async (d: TestDevice) => (await api(server, 'GET', '/v1/keys/count', { auth: d })).body;
      const bobBefore = await count(bob);
      const carolBefore = await count(carol);
      const bobKeys = await bob.generateKeys(2, 3000);
      for (const body of [
        { signedPreKey: bobKeys.signedPreKey },
        { pqPreKeys: bobKeys.pqPreKeys },
        { pqLastResortPreKey: bobKeys.pqLastResortPreKey },
      ]) {
        const res = await api(server, 'PUT', '/v1/keys', { auth: carol, body });
        expect(res.status).toBe(400);
        expect(res.body.error.code).toBe('invalid_signature');
      }
      // Unsigned one-time EC keys are accepted, for Carol.
      expect((await api(server, 'PUT', '/v1/keys', { auth: carol, body: { preKeys: bobKeys.preKeys } })).status).toBe(
        204,
      );
      expect(await count(bob)).toEqual(bobBefore);
      expect(await count(carol)).toEqual({ preKeys: carolBefore.preKeys + 2, pqPreKeys: carolBefore.pqPreKeys });
    });
  });

  it('a re-registered number: the old credentials stop working (401) and the old queue is gone', async () => {
    const { server, alice } = ctx;
    const old = await TestDevice.register(server);
    expect((await alice.send(server, old, Buffer.from('to the old account'))).status).toBe(200);
    expect(queueRows(server, old.accountId)).toBe(1);
    const oldToken = (await api(server, 'POST', '/v1/websocket/token', { auth: old })).body.token;
    const oldSocket = await old.connect(server);
    await oldSocket.next((f) => f.type === 'queue-empty');

    const fresh = await TestDevice.register(server, { number: old.number });
    expect(fresh.accountId).not.toBe(old.accountId);

    for (const [method, path] of [
      ['GET', '/v1/messages'],
      ['GET', '/v1/keys/count'],
      ['GET', '/v1/devices'],
      ['POST', '/v1/websocket/token'],
    ]) {
      const res = await api(server, method as string, path as string, { auth: old });
      expect(res.status, `${method} ${path}`).toBe(401);
      expect(res.body.error.code).toBe('unauthorized');
    }
    expect((await api(server, 'PUT', '/v1/keys', { auth: old, body: {} })).status).toBe(401);
    expect((await upgrade(server, '', { authorization: old.authorization })).status).toBe(401);
    expect((await upgrade(server, `?token=${encodeURIComponent(oldToken)}`)).status).toBe(401);

    // The old queue is gone from the database; the new account starts empty.
    expect(queueRows(server, old.accountId)).toBe(0);
    expect((await api(server, 'GET', '/v1/messages', { auth: fresh })).body).toEqual({ messages: [], more: false });
    // The old account is unknown to everyone else, too.
    const bundle = await api(server, 'GET', `/v1/keys/${old.accountId}/*`, { auth: alice });
    expect(bundle.status).toBe(404);
    const send = await api(server, 'PUT', `/v1/messages/${old.accountId}`, { auth: alice, body: sendTo(old) });
    expect(send.status).toBe(404);
    // A socket opened before the re-registration no longer acts for the old account either.
    oldSocket.ws.send(
      JSON.stringify({
        type: 'request',
        id: 1,
        method: 'PUT',
        path: `/v1/messages/${alice.accountId}`,
        body: sendTo(alice),
      }),
    );
    oldSocket.ws.send(JSON.stringify({ type: 'request', id: 2, method: 'GET', path: '/v1/messages' }));
    for (const id of [1, 2]) {
      const answer = await oldSocket.next((f) => f.type === 'response' && f.id === id);
      expect(answer.status, JSON.stringify(answer)).toBe(401);
      expect(answer.body.error.code).toBe('unauthorized');
    }
    const aliceQueue = (await api(server, 'GET', '/v1/messages', { auth: alice })).body.messages;
    expect(aliceQueue.filter((m: { sourceAccountId: string }) => m.sourceAccountId === old.accountId)).toEqual([]);
    await oldSocket.close();
  });

  describe('WebSocket upgrade', () => {
    it('refuses missing, malformed, wrong and unknown credentials with 401 JSON', async () => {
      for (const [name, authorization] of badCredentials(ctx)) {
        const res = await upgrade(ctx.server, '', authorization ? { authorization } : {});
        expect(res.status, name).toBe(401);
        expect(res.body, name).toEqual({ error: { code: 'unauthorized', message: expect.any(String) } });
      }
      // The password never works in the URL.
      const inUrl = await upgrade(ctx.server, `?token=${encodeURIComponent(ctx.alice.password)}`);
      expect(inUrl.status).toBe(401);
      // And the right header opens it.
      const ok = await upgrade(ctx.server, '', { authorization: ctx.alice.authorization });
      expect(ok.status).toBe(101);
      await closeSocket(ok.ws);
    });

    it('a socket token opens one socket, once; never twice, also when raced', async () => {
      const issued = await api(ctx.server, 'POST', '/v1/websocket/token', { auth: ctx.alice });
      expect(issued.status).toBe(200);
      expect(issued.body.expiresAt).toBeGreaterThan(Date.now());
      expect(issued.body.expiresAt).toBeLessThanOrEqual(Date.now() + 60_000);
      expect(issued.body.token).not.toContain(ctx.alice.password);
      const query = `?token=${encodeURIComponent(issued.body.token)}`;
      const first = await upgrade(ctx.server, query);
      expect(first.status).toBe(101);
      await waitFor(() => first.frames.some((f) => f.type === 'queue-empty'));
      // The socket acts as Alice.
      first.ws?.send(JSON.stringify({ type: 'request', id: 1, method: 'GET', path: '/v1/devices' }));
      await waitFor(() => first.frames.some((f) => f.type === 'response'));
      expect(first.frames.find((f) => f.type === 'response').status).toBe(200);
      await closeSocket(first.ws);
      const second = await upgrade(ctx.server, query);
      expect(second.status).toBe(401);
      expect(second.body.error.code).toBe('unauthorized');

      const raced = (await api(ctx.server, 'POST', '/v1/websocket/token', { auth: ctx.alice })).body.token;
      const attempts = await Promise.all(
        Array.from({ length: 8 }, () => upgrade(ctx.server, `?token=${encodeURIComponent(raced)}`)),
      );
      expect(attempts.map((a) => a.status).sort()).toEqual([101, 401, 401, 401, 401, 401, 401, 401]);
      for (const a of attempts) await closeSocket(a.ws);
    });

    it('a socket token expires after 60 s (the server clock moved by faking Date)', async () => {
      const late = (await api(ctx.server, 'POST', '/v1/websocket/token', { auth: ctx.alice })).body;
      const inTime = (await api(ctx.server, 'POST', '/v1/websocket/token', { auth: ctx.alice })).body;
      const issuedAt = Date.now();
      vi.useFakeTimers({ toFake: ['Date'], now: issuedAt + 59_000 });
      try {
        const ok = await upgrade(ctx.server, `?token=${encodeURIComponent(inTime.token)}`);
        expect(ok.status).toBe(101);
        await closeSocket(ok.ws);
        vi.setSystemTime(late.expiresAt + 1);
        const expired = await upgrade(ctx.server, `?token=${encodeURIComponent(late.token)}`);
        expect(expired.status).toBe(401);
      } finally {
        vi.useRealTimers();
      }
    });

    it('forged tokens fail', async () => {
      const { server, alice, bob } = ctx;
      const real: string = (await api(server, 'POST', '/v1/websocket/token', { auth: alice })).body.token;
      const [accountId, deviceId, expiresAt, nonce, mac] = real.split('.') as [string, string, string, string, string];
      const flip = (s: string) => `${s.slice(0, -2)}${s.at(-2) === 'A' ? 'B' : 'A'}${s.at(-1)}`;
      const other = await startTestServer();
      let otherServersToken: string;
      try {
        const stranger = await TestDevice.register(other);
        otherServersToken = (await api(other, 'POST', '/v1/websocket/token', { auth: stranger })).body.token;
      } finally {
        await other.close();
      }
      const forgeries: [string, string][] = [
        ['random text', 'not-a-token'],
        ['empty', ''],
        ['a flipped MAC', [accountId, deviceId, expiresAt, nonce, flip(mac)].join('.')],
        ["Bob's account with Alice's MAC", [bob.accountId, deviceId, expiresAt, nonce, mac].join('.')],
        ['another device id', [accountId, '2', expiresAt, nonce, mac].join('.')],
        ['a later expiry', [accountId, deviceId, String(Number(expiresAt) + 3_600_000), nonce, mac].join('.')],
        ['another nonce', [accountId, deviceId, expiresAt, randomBytes(16).toString('base64url'), mac].join('.')],
        ['no MAC', [accountId, deviceId, expiresAt, nonce].join('.')],
        ['an extra part', `${real}.x`],
        ["another server's token", otherServersToken],
      ];
      for (const [name, token] of forgeries) {
        const res = await upgrade(server, `?token=${encodeURIComponent(token)}`);
        expect(res.status, name).toBe(401);
      }
      // The genuine token was not used up by the forgeries, and still works.
      const genuine = await upgrade(server, `?token=${encodeURIComponent(real)}`);
      expect(genuine.status).toBe(101);
      await closeSocket(genuine.ws);
    });

    it('only /v1/websocket upgrades', async () => {
      for (const path of ['/v1/websocketx', '/v1/messages', '/']) {
        const res = await upgrade(ctx.server, '', { authorization: ctx.alice.authorization }, path);
        expect(res.status, path).toBe(404);
      }
    });
  });

  describe('socket request frames', () => {
    let socket: SocketClient;
    let id = 0;
    const request = async (method: string, path: string, body?: unknown) => {
      const frameId = ++id;
      socket.ws.send(JSON.stringify({ type: 'request', id: frameId, method, path, ...(body ? { body } : {}) }));
      return socket.next((f) => f.type === 'response' && f.id === frameId);
    };

    beforeAll(async () => {
      socket = await ctx.alice.connect(ctx.server);
      await socket.next((f) => f.type === 'queue-empty');
    });
    afterAll(async () => {
      await socket?.close();
    });

    it('reach the device API: keys, messages, devices', async () => {
      expect((await request('GET', '/v1/keys/count')).status).toBe(200);
      expect((await request('GET', '/v1/devices')).body.devices).toHaveLength(1);
      expect((await request('GET', '/v1/messages?limit=1')).status).toBe(200);
      expect((await request('get', '/v1/keys/./count')).status).toBe(200);
    });

    it('cannot reach any other route, also through dot segments, encoded dots, backslashes or other hosts', async () => {
      const before = databaseRows(ctx.server);
      const attachmentId = randomUUID();
      const outside: [string, string, unknown?][] = [
        ['POST', '/v1/websocket/token'],
        ['POST', '/v1/attachments'],
        ['GET', `/v1/attachments/${attachmentId}`],
        ['POST', '/v1/accounts', {}],
        ['POST', '/v1/verification/sessions', { number: '+14155552671' }],
        ['GET', '/openapi.json'],
        ['GET', '/metrics'],
        ['GET', '/healthz'],
        ['GET', '/docs'],
        ['GET', '/'],
        ['POST', '/v1/keys/../websocket/token'],
        ['POST', '/v1/keys/%2e%2e/websocket/token'],
        ['POST', '/v1/keys/%2E%2E/websocket/token'],
        ['POST', '/v1/messages/.%2e/websocket/token'],
        ['GET', '/v1/devices/../../healthz'],
        ['POST', '/v1/messages/../verification/sessions', { number: '+14155552671' }],
        ['GET', '/v1/keys/..\\..\\metrics'],
        ['GET', '/v1/keys\\..\\..\\metrics'],
        ['GET', '//evil.example/v1/keys/count'],
        ['GET', 'http://evil.example/v1/keys/count'],
        ['GET', '/v1/keysX/count'],
        ['GET', '/v1/Keys/count'],
      ];
      for (const [method, path, body] of outside) {
        const res = await request(method, path, body);
        expect([400, 404], `${method} ${path}: ${JSON.stringify(res)}`).toContain(res.status);
        expect(res.body.error.code, path).toEqual(expect.any(String));
        expect(JSON.stringify(res.body), path).not.toMatch(/token|status":"ok|openapi|hush_/);
      }
      // Nothing was started or stored on the way: no verification session, no token use, no blob.
      expect(databaseRows(ctx.server)).toEqual(before);
      expect(attachmentFiles(ctx.server).some((f) => f.includes(attachmentId))).toBe(false);
    });

    it('malformed request frames get a 400 answer, not an internal error, and the socket stays usable', async () => {
      for (const [method, path, body] of [
        ['GET', '/v1/keys/count', { a: 1 }], // a body on GET
        ['NOT A METHOD', '/v1/keys/count'],
        ['GET', 'http://[/v1/keys/count'],
      ] as [string, string, unknown?][]) {
        const res = await request(method, path, body);
        expect(res.status, `${method} ${path}`).toBe(400);
        expect(res.body.error.code).toBe('invalid_request');
      }
      expect(socket.frames.filter((f) => f.type === 'error' && f.code === 'internal_error')).toEqual([]);
      expect((await request('GET', '/v1/keys/count')).status).toBe(200);
    });
  });
});
