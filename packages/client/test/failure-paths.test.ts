/**
 * What goes wrong between two devices, against the real standalone server: the server going away
 * mid-send, a device losing its session, a contact's identity key changing, and envelopes that
 * arrive damaged. Each recovers without duplicates, without loops, and without silently trusting
 * a new key. The clients drain their queues over HTTP (`fetchQueue`) so that every step is
 * deterministic; the live socket runs the same `receive`.
 */
import { randomUUID } from 'node:crypto';
import { dirname } from 'node:path';
import { UntrustedIdentityError } from '@hush/protocol';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { type Contact, ServerUnreachableError, type StoredMessage } from '../src/index.ts';
import { messageId } from '../src/messages-store.ts';
import { jsonValue, parseJson } from '../src/store/staged.ts';
import {
  type TestClient,
  type TestServer,
  clientStore,
  freePort,
  openClient,
  registeredClient,
  startTestServer,
} from './support/harness.ts';

type ServerEnvelope = Parameters<TestServer['storage']['insertEnvelopes']>[0][number];

const texts = (history: StoredMessage[]) => history.filter((m) => m.kind === 'text').map((m) => m.body);
const incoming = (history: StoredMessage[]) =>
  history.filter((m) => m.kind === 'text' && m.direction === 'in').map((m) => m.body);
const systemTexts = (history: StoredMessage[]) => history.filter((m) => m.kind === 'system').map((m) => m.body);

/** The envelopes waiting in a device's queue on the server, oldest first. */
async function queued(server: TestServer, accountId: string): Promise<ServerEnvelope[]> {
  return (await server.storage.fetchQueue(accountId, 1, 100, Date.now())).map(({ cursor: _, ...e }) => e);
}

/**
 * The private spy on a client's send pipeline: every `sendContent(accountId, content, timestamp, id)`
 * call. The `id` tells what was sent (`retry:` requests, `…:retry` re-sends, `delivered:` receipts).
 */
function spySends(test: TestClient) {
  return vi.spyOn(test.client as any, 'sendContent') as unknown as {
    mock: { calls: [string, unknown, number, string][] };
  };
}

describe('failure paths against the real server', () => {
  let server: TestServer;
  const opened: TestClient[] = [];
  const client = async (options: Parameters<typeof registeredClient>[1] = {}) => {
    const c = await registeredClient(server, options);
    opened.push(c);
    return c;
  };
  /** Two clients that have exchanged a message each way (sessions set up and acknowledged). */
  const pair = async () => {
    const alice = await client();
    const bob = await client();
    await alice.client.sendText(bob.client.account.accountId, 'hello Bob');
    await bob.client.fetchQueue();
    await bob.client.sendText(alice.client.account.accountId, 'hello Alice');
    await alice.client.fetchQueue();
    await bob.client.fetchQueue(); // the delivery receipt for Bob's message
    return { alice, bob, aliceId: alice.client.account.accountId, bobId: bob.client.account.accountId };
  };

  beforeAll(async () => {
    server = await startTestServer(undefined, await freePort());
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });
  afterAll(async () => {
    for (const c of opened) await c.client.close().catch(() => undefined);
    await server.close();
  });

  it('server restart mid-send: the message waits in the outbox and is delivered once, with the same id', async () => {
    const { alice, bob, aliceId, bobId } = await pair();
    await server.close();

    await expect(alice.client.sendText(bobId, 'while the server was down')).rejects.toBeInstanceOf(
      ServerUnreachableError,
    );
    const pending = (await alice.client.history(bobId)).find((m) => m.body === 'while the server was down');
    expect(pending?.status).toBe('sending');
    const outbox = await clientStore(alice.client).list('outbox');
    expect(outbox.map(([id]) => id)).toEqual([pending?.id]);

    // The server comes back at the same address with the same database.
    server = await startTestServer(server.dataDir, server.port);
    const sends = spySends(alice);
    expect(await alice.client.flushOutbox()).toBe(1);
    expect(sends.mock.calls.map((call) => call[3])).toEqual([pending?.id]);
    expect((await alice.client.history(bobId)).find((m) => m.id === pending?.id)?.status).toBe('sent');
    expect(await clientStore(alice.client).list('outbox')).toEqual([]);
    expect(await alice.client.flushOutbox()).toBe(0);

    await bob.client.fetchQueue();
    expect(texts(await bob.client.history(aliceId)).filter((t) => t === 'while the server was down')).toHaveLength(1);
    expect(await server.storage.countQueue(bobId, 1, Date.now())).toBe(0);
  });

  it('a re-send of a message the server already has is stored once; the receiver de-duplicates by message id', async () => {
    const { alice, bob, aliceId, bobId } = await pair();
    /*
     * A crash right after the server stored the message, before the client recorded 'sent': the
     * message stays 'sending' in the outbox, exactly as the client wrote it, and the client
     * starts again from its store.
     */
    const crashAfterServerAnswer = (test: TestClient) =>
      vi.spyOn(test.client as any, 'updateStatus').mockRejectedValueOnce(new Error('simulated crash'));
    const restart = async (test: TestClient): Promise<TestClient> => {
      await test.client.close();
      const reopened = await openClient(server, dirname(test.storePath));
      opened.push(reopened);
      return reopened;
    };

    crashAfterServerAnswer(alice);
    await expect(alice.client.sendText(bobId, 'exactly once')).rejects.toThrow('simulated crash');
    expect(await server.storage.countQueue(bobId, 1, Date.now())).toBe(1);
    let restarted = await restart(alice);
    const [[id]] = (await clientStore(restarted.client).list('outbox')) as [[string, Uint8Array]];
    expect((await restarted.client.history(bobId)).find((m) => m.id === id)).toMatchObject({
      body: 'exactly once',
      status: 'sending',
    });

    // The same message id again: the server answers "duplicate" and stores nothing. The client
    // crashes once more before recording it.
    crashAfterServerAnswer(restarted);
    await expect(restarted.client.flushOutbox()).rejects.toThrow('simulated crash');
    expect(await server.storage.countQueue(bobId, 1, Date.now())).toBe(1);
    await bob.client.fetchQueue();
    expect(texts(await bob.client.history(aliceId)).filter((t) => t === 'exactly once')).toHaveLength(1);

    // Once the server has forgotten the id (its send receipts expire), a re-send is stored again:
    // a second, differently encrypted copy reaches Bob, and his client shows the message once.
    await server.storage.deleteExpired(Date.now() + 31 * 24 * 60 * 60 * 1000);
    restarted = await restart(restarted);
    expect(await restarted.client.flushOutbox()).toBe(1);
    expect((await restarted.client.history(bobId)).find((m) => m.id === id)?.status).toBe('sent');
    expect(await clientStore(restarted.client).list('outbox')).toEqual([]);
    expect(await server.storage.countQueue(bobId, 1, Date.now())).toBe(1);
    const before = bob.events.filter((e) => e.type === 'message').length;
    await bob.client.fetchQueue();
    expect(bob.events.filter((e) => e.type === 'message').length).toBe(before);
    expect(texts(await bob.client.history(aliceId)).filter((t) => t === 'exactly once')).toHaveLength(1);
    expect(await server.storage.countQueue(bobId, 1, Date.now())).toBe(0);
  });

  it('lost session: the receiver asks once for a re-send over a fresh session and gets the original text', async () => {
    const { alice, bob, aliceId, bobId } = await pair();
    // Bob's device loses its session with Alice (e.g. restored from an old backup).
    await clientStore(bob.client).apply({ delete: [['sessions', `${aliceId}.1`]] });

    const lost = await alice.client.sendText(bobId, 'sent into a lost session');
    const [original] = await queued(server, bobId);
    expect(original?.timestamp).toBe(lost.timestamp);

    const bobSends = spySends(bob);
    const retryRequests = () => bobSends.mock.calls.filter((call) => call[3].startsWith('retry:'));
    await bob.client.fetchQueue();
    const failure = await bob.next((e) => e.type === 'decryption-failed');
    expect(failure).toMatchObject({ from: aliceId, timestamp: lost.timestamp });
    expect(systemTexts(await bob.client.history(aliceId)).join('\n')).toMatch(/could not be decrypted/);
    expect(texts(await bob.client.history(aliceId))).not.toContain('sent into a lost session');
    expect(retryRequests()).toHaveLength(1);

    // Alice gets the request and re-sends the original over the new session.
    const aliceSends = spySends(alice);
    await alice.client.fetchQueue();
    expect(aliceSends.mock.calls.map((call) => call[3])).toContain(`${lost.id}:retry`);
    await bob.client.fetchQueue();
    const received = (await bob.client.history(aliceId)).filter((m) => m.body === 'sent into a lost session');
    expect(received).toHaveLength(1);
    expect(received[0]).toMatchObject({ id: messageId(aliceId, lost.timestamp), direction: 'in', kind: 'text' });

    // The same broken message arriving again fails again, but asks for nothing more: no loop.
    await alice.client.fetchQueue(); // Bob's delivery receipt
    await server.storage.insertEnvelopes([{ ...(original as ServerEnvelope), guid: randomUUID() }]);
    await bob.client.fetchQueue();
    expect(bob.events.filter((e) => e.type === 'decryption-failed')).toHaveLength(2);
    expect(retryRequests()).toHaveLength(1);
    expect(await server.storage.countQueue(aliceId, 1, Date.now())).toBe(0);
    expect(texts(await bob.client.history(aliceId)).filter((t) => t === 'sent into a lost session')).toHaveLength(1);

    // The repaired session works both ways, and Alice never saw a failure.
    await bob.client.sendText(aliceId, 'repaired, Bob to Alice');
    await alice.client.fetchQueue();
    await alice.client.sendText(bobId, 'repaired, Alice to Bob');
    await bob.client.fetchQueue();
    expect(texts(await alice.client.history(bobId))).toContain('repaired, Bob to Alice');
    expect(texts(await bob.client.history(aliceId))).toContain('repaired, Alice to Bob');
    expect(alice.events.filter((e) => e.type === 'decryption-failed')).toEqual([]);
  });

  it('two messages lost in a row: one new session, both re-sent whole (attachment, quote, timer)', async () => {
    const { alice, bob, aliceId, bobId } = await pair();
    await alice.client.setExpireTimer(bobId, 3600);
    await bob.client.fetchQueue();
    const quoted = (await alice.client.history(bobId)).find((m) => m.body === 'hello Alice') as StoredMessage;
    await clientStore(bob.client).apply({ delete: [['sessions', `${aliceId}.1`]] });

    const data = new Uint8Array(2000).map((_, i) => i % 251);
    const sent = await alice.client.sendFile(bobId, data, 'notes.bin', 'application/octet-stream', 'see attached');
    expect(sent.expiresAt).toBeDefined();
    await alice.client.sendText(bobId, 'quoting you', {
      quote: { id: quoted.timestamp, author: quoted.author, text: quoted.body },
    });
    const aliceKeys = await alice.client.api.keyCounts();
    const bobSends = spySends(bob);
    await bob.client.fetchQueue(); // both fail: a retry request for each
    expect(bobSends.mock.calls.filter((call) => call[3].startsWith('retry:'))).toHaveLength(2);
    // Both requests travel on one new session (one of Alice's one-time keys), not one each.
    expect((await alice.client.api.keyCounts()).preKeys).toBe(aliceKeys.preKeys - 1);
    await alice.client.fetchQueue(); // both re-sent
    await bob.client.fetchQueue();

    const history = await bob.client.history(aliceId);
    const file = history.find((m) => m.body === 'see attached');
    expect(file?.attachments?.[0]?.fileName).toBe('notes.bin');
    expect(file?.expiresAt).toBeDefined();
    const attachment = file?.attachments?.[0] as NonNullable<StoredMessage['attachments']>[number];
    expect(Buffer.from(await bob.client.downloadAttachment(attachment)).equals(Buffer.from(data))).toBe(true);
    expect(history.find((m) => m.body === 'quoting you')?.quote).toMatchObject({ author: bobId, text: 'hello Alice' });
    // The re-send did not switch disappearing messages off.
    expect((await bob.client.conversations()).find((c) => c.id === aliceId)?.expireTimer).toBe(3600);
  });

  /*
   * Identity change. In Signal an account id survives re-registration, so a contact who reinstalls
   * keeps the id and gets a new identity key. This server mints a new account id for a
   * re-registered number (and drops the old account), which the first lines below record. The
   * client keys trust by account id, so the honest way to put Alice's device into Signal's
   * situation is to give her the record she would hold then: for Bob's (new) account id, the
   * identity key she knew him by before (his real previous key, from their earlier conversation).
   * Everything after that is the client's own behaviour against real keys and the real server.
   */
  const identityChange = async () => {
    const { alice, bob, aliceId } = await pair();
    const oldBobId = bob.client.account.accountId;
    const known = (await alice.client.contact(oldBobId)) as Contact;
    expect(known.identityKey).toBeDefined();

    const newBob = await client({ number: bob.client.account.number });
    const bobId = newBob.client.account.accountId;
    expect(bobId).not.toBe(oldBobId); // what this server does on re-registration
    expect(newBob.client.identity.publicKey.serialize()).not.toEqual(bob.client.identity.publicKey.serialize());
    await expect(alice.client.sendText(oldBobId, 'to the old account')).rejects.toThrow(); // dropped by the server

    await clientStore(alice.client).apply({
      put: [['contacts', bobId, jsonValue({ ...known, accountId: bobId } satisfies Contact)]],
    });
    const before = await alice.client.safetyNumber(bobId);
    return { alice, newBob, aliceId, bobId, before, known };
  };

  it('identity change on receive: flagged, the safety number changes, nothing is sent until accepted', async () => {
    const { alice, newBob, aliceId, bobId, before, known } = await identityChange();

    await newBob.client.sendText(aliceId, 'hi, new phone');
    await alice.client.fetchQueue();
    await alice.next((e) => e.type === 'identity-changed' && e.accountId === bobId);
    const contact = (await alice.client.contact(bobId)) as Contact;
    expect(contact.trust).toBe('changed');
    expect(contact.previousIdentityKey).toBe(known.identityKey);
    expect(contact.identityKey).toBe(Buffer.from(newBob.client.identity.publicKey.serialize()).toString('base64'));
    const history = await alice.client.history(bobId);
    expect(texts(history)).toContain('hi, new phone'); // incoming still decrypts
    expect(systemTexts(history).join('\n')).toMatch(/safety number changed/i);
    const after = await alice.client.safetyNumber(bobId);
    expect(after.digits).not.toBe(before.digits);
    expect(after.trust).toBe('changed');

    await expect(alice.client.sendText(bobId, 'not yet')).rejects.toBeInstanceOf(UntrustedIdentityError);
    expect((await alice.client.history(bobId)).find((m) => m.body === 'not yet')?.status).toBe('failed');
    await expect(alice.client.sendText(bobId, 'still not')).rejects.toBeInstanceOf(UntrustedIdentityError);

    expect(await alice.client.acceptIdentity(bobId)).toBe(true);
    expect((await alice.client.contact(bobId))?.trust).toBe('unverified');
    expect((await alice.client.sendText(bobId, 'accepted')).status).toBe('sent');
    await newBob.client.fetchQueue();
    const bobSide = texts(await newBob.client.history(aliceId));
    expect(bobSide).toContain('accepted');
    expect(bobSide).not.toContain('not yet');
    // Both sides now show the same (new) safety number.
    expect((await newBob.client.safetyNumber(aliceId)).digits).toBe(after.digits);
  });

  it('identity change on send: the new key from the server is flagged, not used, until accepted', async () => {
    const { alice, newBob, aliceId, bobId, before } = await identityChange();

    // Alice writes first: the bundle the server hands out carries Bob's new key.
    await expect(alice.client.sendText(bobId, 'are you there?')).rejects.toBeInstanceOf(UntrustedIdentityError);
    await alice.next((e) => e.type === 'identity-changed' && e.accountId === bobId);
    expect((await alice.client.contact(bobId))?.trust).toBe('changed');
    expect(systemTexts(await alice.client.history(bobId)).join('\n')).toMatch(/safety number changed/i);
    const after = await alice.client.safetyNumber(bobId);
    expect(after.digits).not.toBe(before.digits);
    await expect(alice.client.sendText(bobId, 'again?')).rejects.toBeInstanceOf(UntrustedIdentityError);
    expect(await server.storage.countQueue(bobId, 1, Date.now())).toBe(0);

    expect(await alice.client.acceptIdentity(bobId)).toBe(true);
    expect((await alice.client.sendText(bobId, 'accepted your new key')).status).toBe('sent');
    await newBob.client.fetchQueue();
    expect(texts(await newBob.client.history(aliceId))).toEqual(['accepted your new key']);
    expect((await newBob.client.safetyNumber(aliceId)).digits).toBe(after.digits);
  });

  it('corrupted envelopes are reported and acknowledged; valid messages and the session keep working', async () => {
    const { alice, bob, aliceId, bobId } = await pair();
    const real = await alice.client.sendText(bobId, 'the real one');
    const [original] = await queued(server, bobId);
    if (!original) throw new Error('no envelope queued');
    expect(original.type).toBe(2); // a SignalMessage on the acknowledged session
    // Damaged copies arrive first, then the intact original, then another valid message.
    await server.storage.deleteEnvelope(bobId, 1, original.guid);
    const forged = (type: number, content: Uint8Array, timestamp: number): ServerEnvelope => ({
      ...original,
      guid: randomUUID(),
      type,
      content,
      timestamp,
    });
    // Garbage behind a current version byte (0x44), so that it gets past the version check.
    const garbage = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i === 0 ? 0x44 : (i * 131 + 7) % 256));
    await server.storage.insertEnvelopes([
      forged(2, garbage(120), real.timestamp - 3),
      forged(3, garbage(300), real.timestamp - 2),
      forged(2, original.content.slice(0, original.content.length - 12), real.timestamp),
      forged(original.type, original.content, original.timestamp),
    ]);
    await alice.client.sendText(bobId, 'valid after the damage');

    await bob.client.fetchQueue();
    expect(await server.storage.countQueue(bobId, 1, Date.now())).toBe(0);
    const failures = bob.events.filter((e) => e.type === 'decryption-failed');
    expect(failures).toHaveLength(3);
    const history = await bob.client.history(aliceId);
    expect(incoming(history)).toEqual(['hello Bob', 'the real one', 'valid after the damage']);
    expect(systemTexts(history).filter((t) => /could not be decrypted/.test(t))).toHaveLength(3);

    // Alice handles Bob's retry requests (only the damaged copy of a real message gets re-sent)...
    await alice.client.fetchQueue();
    await bob.client.fetchQueue();
    expect(incoming(await bob.client.history(aliceId))).toEqual([
      'hello Bob',
      'the real one',
      'valid after the damage',
    ]);
    // ...and the session still works both ways.
    await bob.client.sendText(aliceId, 'still fine, Bob to Alice');
    await alice.client.fetchQueue();
    await alice.client.sendText(bobId, 'still fine, Alice to Bob');
    await bob.client.fetchQueue();
    expect(texts(await alice.client.history(bobId))).toContain('still fine, Bob to Alice');
    expect(texts(await bob.client.history(aliceId))).toContain('still fine, Alice to Bob');
    expect(alice.events.filter((e) => e.type === 'decryption-failed')).toEqual([]);
    expect(bob.events.filter((e) => e.type === 'decryption-failed')).toHaveLength(3);
    expect(parseJson(await clientStore(bob.client).get('contacts', aliceId))).toMatchObject({ trust: 'unverified' });
  });
});
