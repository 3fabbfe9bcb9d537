import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PushSender } from '../src/core/ports.ts';
import type { DevPushSender } from '../src/push/dev-push-sender.ts';
import { TestDevice, api, marker, startTestServer } from './support/harness.ts';
import { startServerlessTestServer } from './support/serverless.ts';

const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/** What the suite needs of a deployment: a base URL, its dev SMS log's directory, its push sender. */
interface E2eServer {
  url: string;
  dataDir: string;
  push: PushSender;
  close(): Promise<void>;
}

/**
 * The same suite against both deployments: the standalone server (SQLite, in-process WebSocket),
 * and the serverless one run locally (the Lambda handlers behind the local API Gateway, DynamoDB
 * Local, s3rver; src/aws/local).
 */
const deployments: { name: string; metrics: boolean; start: () => Promise<E2eServer> }[] = [
  { name: 'standalone', metrics: true, start: () => startTestServer() },
  { name: 'serverless-local', metrics: false, start: () => startServerlessTestServer() },
];

describe.each(deployments)('the whole path over real HTTP and WebSocket: $name', (deployment) => {
  let server: E2eServer;
  beforeAll(async () => {
    server = await deployment.start();
  }, 90_000);
  afterAll(async () => {
    await server.close();
  });

  it('verify two numbers, register, upload keys, fetch a bundle, send, receive live and offline, ack, queue empty', async () => {
    const alice = await TestDevice.register(server);
    const bob = await TestDevice.register(server);
    expect(alice.accountId).not.toBe(bob.accountId);

    // Step 3-4: one-time keys were uploaded at registration; top them up and count.
    const more = await bob.generateKeys(3, 500);
    const upload = await api(server, 'PUT', '/v1/keys', {
      auth: bob,
      body: { preKeys: more.preKeys, pqPreKeys: more.pqPreKeys },
    });
    expect(upload.status).toBe(204);
    expect((await api(server, 'GET', '/v1/keys/count', { auth: bob })).body).toEqual({ preKeys: 8, pqPreKeys: 8 });

    // Bob is online: a live socket gets the backlog (none) and then queue-empty.
    const bobSocket = await bob.connect(server);
    await bobSocket.next((f) => f.type === 'queue-empty');

    // Steps 4-6: Alice fetches Bob's bundle, encrypts on her device, sends ciphertext.
    const first = marker('first');
    const sent = await alice.sendText(server, bob, first);
    expect(sent.status).toBe(200);
    expect((await api(server, 'GET', '/v1/keys/count', { auth: bob })).body).toEqual({ preKeys: 7, pqPreKeys: 7 });

    // Steps 7-9: delivered live, decrypted on Bob's device, acknowledged.
    const frame = await bobSocket.next((f) => f.type === 'envelope');
    expect(frame.envelope.sourceAccountId).toBe(alice.accountId);
    expect(decode(await bob.decrypt(frame.envelope))).toBe(decode(first));
    bobSocket.ack(frame.envelope.guid);
    await bobSocket.close();

    // Bob goes offline; Alice's reply-less messages wait in his queue (a wake-up push is sent).
    const offline = [marker('offline-1'), marker('offline-2'), marker('offline-3')];
    for (const m of offline) expect((await alice.sendText(server, bob, m)).status).toBe(200);
    // Step 7 without a socket: a content-free wake-up per envelope went to the push sender.
    await expect.poll(() => (server.push as DevPushSender).wakesFor(bob.accountId, 1).length).toBe(3);
    expect(JSON.stringify((server.push as DevPushSender).wakes)).not.toContain('PLAINTEXT');

    // Reconnecting delivers the backlog in order, then queue-empty.
    const again = await bob.connect(server);
    await again.next((f) => f.type === 'queue-empty');
    const backlog = again.envelopes();
    expect(backlog).toHaveLength(3);
    for (const [i, envelope] of backlog.entries()) {
      expect(decode(await bob.decrypt(envelope))).toBe(decode(offline[i] as Uint8Array));
      again.ack(envelope.guid);
    }
    // Bob answers over the socket itself (a request frame), no HTTP round trip.
    const reply = await bob.encryptFor(server, alice, marker('reply'));
    again.ws.send(
      JSON.stringify({
        type: 'request',
        id: 7,
        method: 'PUT',
        path: `/v1/messages/${alice.accountId}`,
        body: {
          messages: [
            {
              deviceId: 1,
              registrationId: alice.registrationId,
              type: reply.type,
              content: Buffer.from(reply.serialized).toString('base64'),
            },
          ],
          timestamp: Date.now(),
        },
      }),
    );
    expect((await again.next((f) => f.type === 'response' && f.id === 7)).status).toBe(200);
    await again.close();

    // Acks deleted everything: the queue is empty over HTTP too.
    const queue = await api(server, 'GET', '/v1/messages', { auth: bob });
    expect(queue.status).toBe(200);
    expect(queue.body).toEqual({ messages: [], more: false });

    // Alice has no socket: she fetches over HTTP, decrypts, acknowledges.
    const aliceQueue = await api(server, 'GET', '/v1/messages', { auth: alice });
    expect(aliceQueue.body.messages).toHaveLength(1);
    const [envelope] = aliceQueue.body.messages;
    expect(decode(await alice.decrypt(envelope))).toMatch(/^PLAINTEXT-MARKER-reply-/);
    expect((await api(server, 'DELETE', `/v1/messages/${envelope.guid}`, { auth: alice })).status).toBe(204);
    expect((await api(server, 'GET', '/v1/messages', { auth: alice })).body.messages).toHaveLength(0);
  });

  it('a retried send with the same message id is stored once', async () => {
    const alice = await TestDevice.register(server);
    const bob = await TestDevice.register(server);
    const message = await alice.encryptFor(server, bob, marker('idempotent'));
    const first = await alice.send(server, bob, message.serialized, { id: 'msg-1', type: message.type });
    const retry = await alice.send(server, bob, message.serialized, { id: 'msg-1', type: message.type });
    expect(first.body).toEqual({ duplicate: false });
    expect(retry.body).toEqual({ duplicate: true });
    expect((await api(server, 'GET', '/v1/messages', { auth: bob })).body.messages).toHaveLength(1);
  });

  it('sender-key style multi-recipient upload is fanned out to every device', async () => {
    const alice = await TestDevice.register(server);
    const bob = await TestDevice.register(server);
    const carol = await TestDevice.register(server);
    const content = Buffer.from('opaque sender-key ciphertext').toString('base64');
    const result = await api(server, 'PUT', '/v1/messages/multi', {
      auth: alice,
      body: {
        type: 7,
        content,
        timestamp: Date.now(),
        recipients: [
          { accountId: bob.accountId, devices: [{ deviceId: 1, registrationId: bob.registrationId }] },
          { accountId: carol.accountId, devices: [{ deviceId: 1, registrationId: carol.registrationId }] },
        ],
      },
    });
    expect(result.status).toBe(200);
    for (const d of [bob, carol]) {
      const q = await api(server, 'GET', '/v1/messages', { auth: d });
      expect(q.body.messages.map((m: { content: string; type: number }) => [m.type, m.content])).toEqual([
        [7, content],
      ]);
    }
  });

  it('answers 409 for missing or extra devices and 410 for a stale registration id', async () => {
    const alice = await TestDevice.register(server);
    const bob = await TestDevice.register(server);
    const base = { timestamp: Date.now() };
    const content = Buffer.from('x').toString('base64');
    const missing = await api(server, 'PUT', `/v1/messages/${bob.accountId}`, {
      auth: alice,
      body: { ...base, messages: [] },
    });
    expect(missing.status).toBe(409);
    expect(missing.body.error).toMatchObject({ missingDevices: [1], extraDevices: [] });
    const extra = await api(server, 'PUT', `/v1/messages/${bob.accountId}`, {
      auth: alice,
      body: {
        ...base,
        messages: [
          { deviceId: 1, registrationId: bob.registrationId, type: 3, content },
          { deviceId: 2, registrationId: 5, type: 3, content },
        ],
      },
    });
    expect(extra.status).toBe(409);
    expect(extra.body.error).toMatchObject({ missingDevices: [], extraDevices: [2] });
    const stale = await api(server, 'PUT', `/v1/messages/${bob.accountId}`, {
      auth: alice,
      body: {
        ...base,
        messages: [{ deviceId: 1, registrationId: (bob.registrationId % 16383) + 1, type: 3, content }],
      },
    });
    expect(stale.status).toBe(410);
    expect(stale.body.error).toMatchObject({ staleDevices: [1] });
    expect((await api(server, 'GET', '/v1/messages', { auth: bob })).body.messages).toHaveLength(0);
  });

  it('serves the contract, docs, health and (standalone) metrics', async () => {
    const openapi = await api(server, 'GET', '/openapi.json');
    expect(openapi.status).toBe(200);
    expect(Object.keys(openapi.body.paths)).toEqual(
      expect.arrayContaining([
        '/v1/verification/sessions',
        '/v1/accounts',
        '/v1/keys',
        '/v1/messages/{accountId}',
        '/v1/messages/multi',
      ]),
    );
    expect((await api(server, 'GET', '/docs')).body).toContain('/openapi.json');
    expect((await api(server, 'GET', '/healthz')).body).toEqual({ status: 'ok' });
    // On Lambda there is no process to scrape: CloudWatch has the numbers.
    if (!deployment.metrics) return;
    const metrics = await api(server, 'GET', '/metrics');
    expect(metrics.body).toContain('hush_envelopes_stored_total');
    expect(metrics.body).toContain('hush_websockets_open');
    expect(metrics.body).toContain('hush_queued_envelopes');
    expect(metrics.body).toMatch(
      /hush_http_requests_total\{method="PUT",route="\/v1\/messages\/:accountId",status="200"\}/,
    );
  });
});
