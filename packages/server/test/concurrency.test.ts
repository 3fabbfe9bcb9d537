/**
 * Concurrency: one-time prekeys under parallel bundle fetches, per-sender FIFO order under
 * parallel sends, and live delivery over the socket while many senders send at once.
 */
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The server's per-connection limit of unacknowledged envelopes (ws/socket-server.ts). */
const MAX_IN_FLIGHT = 256;

async function waitFor(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Runs `tasks` with at most `limit` at a time. */
async function pool<T>(limit: number, tasks: (() => Promise<T>)[]): Promise<T[]> {
  const results: T[] = new Array(tasks.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < tasks.length) {
        const i = next++;
        results[i] = await (tasks[i] as () => Promise<T>)();
      }
    }),
  );
  return results;
}

describe('concurrency', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server.close();
    rmSync(server.dataDir, { recursive: true, force: true });
  });

  it('60 parallel bundle fetches hand out each of 25 one-time keys exactly once', async () => {
    const ONE_TIME = 25;
    const FETCHES = 60;
    const bob = await TestDevice.register(server, { keys: ONE_TIME });
    // generateKeys(25, 1): EC one-time ids 1..25, Kyber one-time ids 101..125, last-resort Kyber 10001.
    const ecIds = Array.from({ length: ONE_TIME }, (_, i) => 1 + i);
    const kyberIds = Array.from({ length: ONE_TIME }, (_, i) => 101 + i);
    const LAST_RESORT = 10_001;
    expect((await api(server, 'GET', '/v1/keys/count', { auth: bob })).body).toEqual({
      preKeys: ONE_TIME,
      pqPreKeys: ONE_TIME,
    });
    const fetchers = await Promise.all([0, 1, 2].map(() => TestDevice.register(server)));

    const responses = await Promise.all(
      Array.from({ length: FETCHES }, (_, i) =>
        api(server, 'GET', `/v1/keys/${bob.accountId}/${i % 2 === 0 ? '1' : '*'}`, {
          auth: fetchers[i % fetchers.length] as TestDevice,
        }),
      ),
    );
    expect(responses.map((r) => r.status)).toEqual(responses.map(() => 200));
    const bundles = responses.map((r) => {
      expect(r.body.devices).toHaveLength(1);
      return r.body.devices[0];
    });
    const withEc = bundles.filter((d) => d.preKey);
    const ecTaken = withEc.map((d) => d.preKey.keyId);
    expect(new Set(ecTaken).size).toBe(ecTaken.length); // never the same key twice
    expect([...ecTaken].sort((a, b) => a - b)).toEqual(ecIds);
    expect(bundles.length - withEc.length).toBe(FETCHES - ONE_TIME);

    const kyberTaken = bundles.map((d) => d.pqPreKey.keyId).filter((id) => id !== LAST_RESORT);
    expect(new Set(kyberTaken).size).toBe(kyberTaken.length);
    expect([...kyberTaken].sort((a, b) => a - b)).toEqual(kyberIds);
    // Keys of both kinds run out together: a bundle without an EC key has the last-resort Kyber key.
    for (const d of bundles) expect(d.preKey === undefined).toBe(d.pqPreKey.keyId === LAST_RESORT);
    const lastResortKeys = new Set(bundles.filter((d) => !d.preKey).map((d) => d.pqPreKey.publicKey));
    expect(lastResortKeys.size).toBe(1);
    for (const d of bundles) expect(d.signedPreKey.keyId).toBe(1);

    expect((await api(server, 'GET', '/v1/keys/count', { auth: bob })).body).toEqual({ preKeys: 0, pqPreKeys: 0 });
    const after = await api(server, 'GET', `/v1/keys/${bob.accountId}/1`, { auth: fetchers[0] as TestDevice });
    expect(after.body.devices[0].preKey).toBeUndefined();
    expect(after.body.devices[0].pqPreKey.keyId).toBe(LAST_RESORT);
  });

  it('parallel senders: the queue keeps each sender’s order (FIFO per sender)', async () => {
    const SENDERS = 5;
    const PER_SENDER = 20;
    const bob = await TestDevice.register(server, { keys: SENDERS });
    const senders = await Promise.all(Array.from({ length: SENDERS }, () => TestDevice.register(server)));
    const sent = new Map<string, string[]>(senders.map((s) => [s.accountId, []]));

    // Each sender sends one message after another (awaiting each answer), all senders at once.
    await Promise.all(
      senders.map(async (sender, s) => {
        for (let i = 0; i < PER_SENDER; i++) {
          const m = marker(`fifo-s${s}-m${i}`);
          const res = await sender.sendText(server, bob, m);
          expect(res.status).toBe(200);
          sent.get(sender.accountId)?.push(decode(m));
        }
      }),
    );

    const queue: any[] = [];
    for (let page = 0; page < 10; page++) {
      const res = await api(server, 'GET', '/v1/messages?limit=100', { auth: bob });
      if (res.body.messages.length === 0) break;
      for (const e of res.body.messages) {
        queue.push(e);
        expect((await api(server, 'DELETE', `/v1/messages/${e.guid}`, { auth: bob })).status).toBe(204);
      }
    }
    expect(queue).toHaveLength(SENDERS * PER_SENDER);
    const received = new Map<string, string[]>(senders.map((s) => [s.accountId, []]));
    // Decrypting in queue order also proves the order: each sender's chain is read in sequence.
    for (const e of queue) received.get(e.sourceAccountId)?.push(decode(await bob.decrypt(e)));
    expect(received).toEqual(sent);
    // The senders really interleaved.
    const switches = queue.filter((e, i) => i > 0 && e.sourceAccountId !== queue[i - 1].sourceAccountId).length;
    expect(switches).toBeGreaterThan(SENDERS);
  });

  it('send requests pipelined over one socket are queued in the order they were sent', async () => {
    const COUNT = 60;
    const alice = await TestDevice.register(server);
    const bob = await TestDevice.register(server);
    const sent: string[] = [];
    const frames: string[] = [];
    for (let i = 0; i < COUNT; i++) {
      // Different sizes, so that body parsing takes different times.
      const m = marker(`pipelined-${i}-${'x'.repeat((i * 997) % 3000)}`);
      const message = await alice.encryptFor(server, bob, m);
      sent.push(decode(m));
      frames.push(
        JSON.stringify({
          type: 'request',
          id: i,
          method: 'PUT',
          path: `/v1/messages/${bob.accountId}`,
          body: {
            messages: [
              { deviceId: 1, registrationId: bob.registrationId, type: message.type, content: b64(message.serialized) },
            ],
            timestamp: Date.now(),
          },
        }),
      );
    }
    const socket = await alice.connect(server);
    await socket.next((f) => f.type === 'queue-empty');
    for (const frame of frames) socket.ws.send(frame);
    await waitFor(() => socket.frames.filter((f) => f.type === 'response').length === COUNT, 15_000, 'responses');
    expect(socket.frames.filter((f) => f.type === 'response').map((f) => f.status)).toEqual(frames.map(() => 200));
    await socket.close();

    const queue = await api(server, 'GET', '/v1/messages?limit=100', { auth: bob });
    const received: string[] = [];
    for (const e of queue.body.messages) received.push(decode(await bob.decrypt(e)));
    expect(received).toEqual(sent);
  });

  it('live delivery under concurrent sends: each envelope arrives once over the socket', async () => {
    const SENDERS = 6;
    const PER_SENDER = 30;
    const bob = await TestDevice.register(server, { keys: SENDERS });
    const senders = await Promise.all(Array.from({ length: SENDERS }, () => TestDevice.register(server)));
    const socket = await bob.connect(server);
    await socket.next((f) => f.type === 'queue-empty');

    // Bob acknowledges each envelope once he has decrypted it, as a client does.
    const decrypted: { source: string; text: string }[] = [];
    const failures: string[] = [];
    let chain = Promise.resolve();
    socket.ws.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type !== 'envelope') return;
      chain = chain.then(async () => {
        try {
          decrypted.push({ source: frame.envelope.sourceAccountId, text: decode(await bob.decrypt(frame.envelope)) });
        } catch (error) {
          failures.push(`${frame.envelope.guid}: ${(error as Error).message}`);
        }
        socket.ack(frame.envelope.guid);
      });
    });

    // Every sender encrypts in order and keeps up to 5 sends in flight.
    const sent = new Map<string, string>();
    await Promise.all(
      senders.map(async (sender, s) => {
        const messages = [];
        for (let i = 0; i < PER_SENDER; i++) {
          const m = marker(`live-s${s}-m${i}`);
          sent.set(decode(m), sender.accountId);
          messages.push(await sender.encryptFor(server, bob, m));
        }
        const statuses = await pool(
          5,
          messages.map((m) => async () => (await sender.send(server, bob, m.serialized, { type: m.type })).status),
        );
        expect(statuses).toEqual(messages.map(() => 200));
      }),
    );

    const total = SENDERS * PER_SENDER;
    await waitFor(() => decrypted.length + failures.length >= total, 20_000, 'live envelopes');
    await chain;
    await sleep(300); // anything extra would show up here
    const envelopes = socket.envelopes();
    expect(envelopes).toHaveLength(total);
    expect(new Set(envelopes.map((e) => e.guid)).size).toBe(total);
    expect(failures).toEqual([]);
    expect(new Map(decrypted.map((d) => [d.text, d.source]))).toEqual(sent);
    expect(decrypted).toHaveLength(total);
    await socket.close();

    // All acknowledged: a new connection gets nothing.
    const again = await bob.connect(server);
    await again.next((f) => f.type === 'queue-empty');
    await sleep(100);
    expect(again.envelopes()).toHaveLength(0);
    await again.close();
  });

  it('a backlog larger than the in-flight window: paused at the window, resumed by acks, queue-empty last', async () => {
    const BACKLOG = MAX_IN_FLIGHT + 40;
    const alice = await TestDevice.register(server);
    const bob = await TestDevice.register(server);
    // The backlog is written in one transaction (this test is about delivery, not sending), so
    // its queue order is the array order.
    const backlog = (label: string) => {
      const now = Date.now();
      const envelopes = Array.from({ length: BACKLOG }, (_, i) => ({
        guid: randomUUID(),
        type: 3,
        sourceAccountId: alice.accountId,
        sourceDeviceId: 1,
        destinationAccountId: bob.accountId,
        destinationDeviceId: 1,
        timestamp: now,
        serverTimestamp: now,
        content: new TextEncoder().encode(`opaque-${label}-${i}`),
        expiresAt: now + 60_000,
      }));
      return server.storage.insertEnvelopes(envelopes).then(() => envelopes.map((e) => e.guid));
    };
    const first = await backlog('first');

    // Without acks the server stops at the window.
    const silent: SocketClient = await bob.connect(server);
    await waitFor(() => silent.envelopes().length >= MAX_IN_FLIGHT, 10_000, 'the first window');
    await sleep(300);
    expect(silent.envelopes()).toHaveLength(MAX_IN_FLIGHT);
    // queue-empty promises that the backlog at connect time has been delivered: not yet true.
    expect(silent.frames.filter((f) => f.type === 'queue-empty')).toHaveLength(0);
    // Acks open the window again; the rest follows, then queue-empty; each envelope once, in order.
    for (const e of silent.envelopes()) silent.ack(e.guid);
    await silent.next((f) => f.type === 'queue-empty');
    const envelopes = silent.envelopes();
    expect(envelopes.map((e) => e.guid)).toEqual(first);
    for (const e of envelopes.slice(MAX_IN_FLIGHT)) silent.ack(e.guid);
    await sleep(100);
    expect(silent.envelopes()).toHaveLength(BACKLOG);
    await silent.close();
    expect(await server.storage.countQueue(bob.accountId, 1, Date.now())).toBe(0);

    // A client that acks as it goes sees queue-empty only after the whole backlog.
    const second = await backlog('second');
    const eager = await bob.connect(server);
    const acked = new Set<string>();
    // Frames may arrive with the upgrade answer, before this listener exists: ack from the record.
    const ackNew = () => {
      for (const e of eager.envelopes()) {
        if (acked.has(e.guid)) continue;
        acked.add(e.guid);
        eager.ack(e.guid);
      }
    };
    ackNew();
    eager.ws.on('message', ackNew);
    await eager.next((f) => f.type === 'queue-empty');
    const beforeEmpty = eager.frames.slice(
      0,
      eager.frames.findIndex((f) => f.type === 'queue-empty'),
    );
    expect(beforeEmpty.filter((f) => f.type === 'envelope').map((f) => f.envelope.guid)).toEqual(second);
    await sleep(100);
    expect(eager.envelopes()).toHaveLength(BACKLOG);
    await eager.close();
    expect(await server.storage.countQueue(bob.accountId, 1, Date.now())).toBe(0);
  });
});
