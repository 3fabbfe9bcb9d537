/**
 * The device's key lifecycle and trust decisions against the real standalone server: one-time
 * keys uploaded at registration, consumed by bundle fetches, refilled; the signed prekey and the
 * last-resort Kyber key rotated; used one-time private keys deleted; safety numbers and QR checks.
 */
import { PreKeySignalMessage } from '@hush/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIN_SERVER_KEYS, TARGET_SERVER_KEYS, UnknownContactError } from '../src/index.ts';
import { keyId } from '../src/store/protocol-stores.ts';
import { type TestClient, type TestServer, clientStore, registeredClient, startTestServer } from './support/harness.ts';

const DAY = 24 * 60 * 60 * 1000;

/** Keys of one namespace of a client's store. */
const keysIn = async (test: TestClient, namespace: string) =>
  (await clientStore(test.client).list(namespace)).map(([key]) => key);

describe('keys and trust against the real server', () => {
  let server: TestServer;
  const opened: TestClient[] = [];
  const client = async (options: Parameters<typeof registeredClient>[1] = {}) => {
    const c = await registeredClient(server, options);
    opened.push(c);
    return c;
  };
  /** A clock the test moves by hand (starts at the real time; the server keeps its own). */
  const manualClock = () => {
    const clock = { t: Date.now(), now: () => clock.t };
    return clock;
  };

  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    for (const c of opened) await c.client.close().catch(() => undefined);
    await server.close();
  });

  it('registration uploads 100 EC and 100 Kyber one-time keys; every bundle fetch consumes one of each', async () => {
    const bob = await client();
    const alice = await client();
    const bobId = bob.client.account.accountId;
    expect(await bob.client.api.keyCounts()).toEqual({ preKeys: TARGET_SERVER_KEYS, pqPreKeys: TARGET_SERVER_KEYS });
    // The private halves stay on the device: 100 one-time EC keys, 100 one-time Kyber keys + 1 last resort.
    expect(await keysIn(bob, 'prekeys')).toHaveLength(100);
    expect(await keysIn(bob, 'kyber-prekeys')).toHaveLength(101);
    expect(await keysIn(bob, 'kyber-last-resort')).toHaveLength(1);

    const first = await alice.client.api.bundles(bobId, '*');
    const second = await alice.client.api.bundles(bobId, '*');
    const [a, b] = [first.devices[0], second.devices[0]];
    expect(a?.preKey?.keyId).toBeDefined();
    expect(a?.preKey?.keyId).not.toBe(b?.preKey?.keyId);
    expect(a?.pqPreKey.keyId).not.toBe(b?.pqPreKey.keyId);
    expect(await bob.client.api.keyCounts()).toEqual({ preKeys: 98, pqPreKeys: 98 });

    // Well above the minimum: nothing to upload, nothing to rotate.
    expect(await bob.client.maintainKeys()).toEqual({ preKeys: 0, pqPreKeys: 0, rotated: false });
    expect(await bob.client.api.keyCounts()).toEqual({ preKeys: 98, pqPreKeys: 98 });
  });

  it(`below ${MIN_SERVER_KEYS} keys, maintainKeys refills to ${TARGET_SERVER_KEYS} with fresh key ids`, async () => {
    const bob = await client();
    const alice = await client();
    const bobId = bob.client.account.accountId;
    // 91 fetches at once: each one-time key is handed out at most once.
    const bundles = await Promise.all(Array.from({ length: 91 }, () => alice.client.api.bundles(bobId, '*')));
    const ecIds = bundles.map((b) => b.devices[0]?.preKey?.keyId);
    const pqIds = bundles.map((b) => b.devices[0]?.pqPreKey.keyId);
    expect(new Set(ecIds).size).toBe(91);
    expect(new Set(pqIds).size).toBe(91);
    expect(await bob.client.api.keyCounts()).toEqual({ preKeys: 9, pqPreKeys: 9 });

    expect(await bob.client.maintainKeys()).toEqual({ preKeys: 91, pqPreKeys: 91, rotated: false });
    expect(await bob.client.api.keyCounts()).toEqual({ preKeys: 100, pqPreKeys: 100 });
    // New ids continue after the first 100, so no id is ever reused.
    expect(bob.client.account.nextPreKeyId).toBe(192);
    expect(await keysIn(bob, 'prekeys')).toContain(keyId(191));
    expect(await bob.client.maintainKeys()).toEqual({ preKeys: 0, pqPreKeys: 0, rotated: false });

    // A session from one of the refilled keys works.
    for (let i = 0; i < 9; i++) await alice.client.api.bundles(bobId, '*'); // the old ones go first
    await alice.client.sendText(bobId, 'on a refilled key');
    const [envelope] = await server.storage.fetchQueue(bobId, 1, 10, Date.now());
    expect(PreKeySignalMessage.deserialize(envelope?.content as Uint8Array).fields.preKeyId).toBeGreaterThan(100);
    await bob.client.fetchQueue();
    expect((await bob.client.history(alice.client.account.accountId)).map((m) => m.body)).toContain(
      'on a refilled key',
    );
  });

  it('with every one-time key gone, bundles carry the last-resort Kyber key, which is kept after use', async () => {
    const bob = await client();
    const alice = await client();
    const carol = await client();
    const bobId = bob.client.account.accountId;
    await Promise.all(Array.from({ length: 100 }, () => carol.client.api.bundles(bobId, '*')));
    expect(await bob.client.api.keyCounts()).toEqual({ preKeys: 0, pqPreKeys: 0 });
    const bundle = (await carol.client.api.bundles(bobId, '*')).devices[0];
    expect(bundle?.preKey).toBeUndefined();
    expect(bundle?.pqPreKey.keyId).toBe(bob.client.account.lastResortKeyId);

    await alice.client.sendText(bobId, 'via the last-resort key');
    await carol.client.sendText(bobId, 'via the last-resort key too');
    await bob.client.fetchQueue();
    expect((await bob.client.history(alice.client.account.accountId)).map((m) => m.body)).toContain(
      'via the last-resort key',
    );
    expect((await bob.client.history(carol.client.account.accountId)).map((m) => m.body)).toContain(
      'via the last-resort key too',
    );
    expect(await keysIn(bob, 'kyber-prekeys')).toContain(keyId(bob.client.account.lastResortKeyId));
    expect(await bob.client.maintainKeys()).toEqual({ preKeys: 100, pqPreKeys: 100, rotated: false });
  });

  it('the signed prekey and the last-resort key rotate every two days; messages to the old keys still decrypt', async () => {
    const clock = manualClock();
    const bob = await client({ now: clock.now });
    const alice = await client();
    const carol = await client();
    const bobId = bob.client.account.accountId;
    const initial = { ...bob.client.account };
    expect(initial.signedPreKeyId).toBe(1);

    // Alice writes while Bob is offline, on the keys of the day.
    await alice.client.sendText(bobId, 'before the rotation');

    clock.t += DAY;
    expect(await bob.client.maintainKeys()).toEqual({ preKeys: 0, pqPreKeys: 0, rotated: false });
    clock.t += DAY + 1;
    expect(await bob.client.maintainKeys()).toEqual({ preKeys: 0, pqPreKeys: 0, rotated: true });
    expect(bob.client.account.signedPreKeyId).toBe(2);
    expect(bob.client.account.lastResortKeyId).toBe(initial.lastResortKeyId + 1);
    expect(bob.client.account.signedPreKeyRotatedAt).toBe(clock.t);
    expect(await bob.client.maintainKeys()).toMatchObject({ rotated: false });

    // The server hands out the new signed key; the device keeps the old one for messages in flight.
    const bundle = (await carol.client.api.bundles(bobId, '*')).devices[0];
    expect(bundle?.signedPreKey.keyId).toBe(2);
    expect(await keysIn(bob, 'signed-prekeys')).toEqual([keyId(1), keyId(2)]);
    expect(await keysIn(bob, 'kyber-last-resort')).toEqual([
      keyId(initial.lastResortKeyId),
      keyId(initial.lastResortKeyId + 1),
    ]);

    await bob.client.fetchQueue();
    expect((await bob.client.history(alice.client.account.accountId)).map((m) => m.body)).toContain(
      'before the rotation',
    );

    // With every one-time key gone, a new contact gets (and can use) the new last-resort key.
    await Promise.all(Array.from({ length: 99 }, () => carol.client.api.bundles(bobId, '*')));
    const last = (await carol.client.api.bundles(bobId, '*')).devices[0];
    expect(last?.pqPreKey.keyId).toBe(initial.lastResortKeyId + 1);
    await carol.client.sendText(bobId, 'on the new last-resort key');
    await bob.client.fetchQueue();
    expect((await bob.client.history(carol.client.account.accountId)).map((m) => m.body)).toContain(
      'on the new last-resort key',
    );
  });

  it('a device back after a month keeps the signed prekey it just replaced, for messages sent meanwhile', async () => {
    const clock = manualClock();
    const bob = await client({ now: clock.now });
    const alice = await client();
    const bobId = bob.client.account.accountId;
    clock.t += 2 * DAY;
    expect(await bob.client.maintainKeys()).toMatchObject({ rotated: true }); // signed key 2

    // Bob's phone is off for a month. Shortly before he is back, Alice writes to key 2.
    clock.t += 31 * DAY;
    await alice.client.sendText(bobId, 'while you were away');
    // Bob is back: the app maintains its keys first, then drains the queue.
    expect(await bob.client.maintainKeys()).toMatchObject({ rotated: true }); // signed key 3
    await bob.client.fetchQueue();
    expect(bob.events.filter((e) => e.type === 'decryption-failed')).toEqual([]);
    expect((await bob.client.history(alice.client.account.accountId)).map((m) => m.body)).toContain(
      'while you were away',
    );
    // Key 1 was replaced more than 30 days ago and is gone; key 2 stays for its grace period.
    expect(await keysIn(bob, 'signed-prekeys')).toEqual([keyId(2), keyId(3)]);

    clock.t += 31 * DAY;
    expect(await bob.client.maintainKeys()).toMatchObject({ rotated: true }); // signed key 4
    expect(await keysIn(bob, 'signed-prekeys')).toEqual([keyId(3), keyId(4)]);
  });

  it('a used one-time private key is deleted from the device once its PreKey message is decrypted', async () => {
    const bob = await client();
    const alice = await client();
    const bobId = bob.client.account.accountId;
    // Two messages before Bob answers: both are PreKey messages naming the same one-time keys.
    await alice.client.sendText(bobId, 'first contact');
    await alice.client.sendText(bobId, 'second, same session');
    const envelopes = await server.storage.fetchQueue(bobId, 1, 10, Date.now());
    expect(envelopes.map((e) => e.type)).toEqual([3, 3]);
    const fields = PreKeySignalMessage.deserialize(envelopes[0]?.content as Uint8Array).fields;
    const preKeyId = fields.preKeyId as number;
    expect(preKeyId).toBeDefined();
    expect(await keysIn(bob, 'prekeys')).toContain(keyId(preKeyId));
    expect(await keysIn(bob, 'kyber-prekeys')).toContain(keyId(fields.kyberPreKeyId));

    await bob.client.fetchQueue();
    expect(
      (await bob.client.history(alice.client.account.accountId)).filter((m) => m.direction === 'in').map((m) => m.body),
    ).toEqual(['first contact', 'second, same session']);
    const preKeys = await keysIn(bob, 'prekeys');
    expect(preKeys).toHaveLength(99);
    expect(preKeys).not.toContain(keyId(preKeyId));
    const kyberKeys = await keysIn(bob, 'kyber-prekeys');
    expect(kyberKeys).toHaveLength(100);
    expect(kyberKeys).not.toContain(keyId(fields.kyberPreKeyId));
    expect(kyberKeys).toContain(keyId(bob.client.account.lastResortKeyId));
  });

  it('safety numbers: 60 digits, the same on both sides; the other side’s QR verifies, a wrong one does not', async () => {
    const alice = await client();
    const bob = await client();
    const carol = await client();
    const [aliceId, bobId] = [alice.client.account.accountId, bob.client.account.accountId];
    await expect(alice.client.safetyNumber(bobId)).rejects.toBeInstanceOf(UnknownContactError);
    await alice.client.sendText(bobId, 'hi');
    await bob.client.fetchQueue();
    await carol.client.sendText(aliceId, 'hi from carol');
    await alice.client.fetchQueue();

    const onAlice = await alice.client.safetyNumber(bobId);
    const onBob = await bob.client.safetyNumber(aliceId);
    expect(onAlice.digits).toMatch(/^\d{60}$/);
    expect(onBob.digits).toBe(onAlice.digits);
    expect(onAlice.trust).toBe('unverified');
    expect((await alice.client.safetyNumber(carol.client.account.accountId)).digits).not.toBe(onAlice.digits);

    // Wrong QR payloads change nothing: Bob's own, one from another conversation, a damaged one.
    expect(await bob.client.acceptIdentity(aliceId, onBob.qr)).toBe(false);
    expect(await bob.client.acceptIdentity(aliceId, (await carol.client.safetyNumber(aliceId)).qr)).toBe(false);
    const damaged = Buffer.from(onAlice.qr, 'base64');
    damaged[damaged.length - 1] = (damaged[damaged.length - 1] as number) ^ 1;
    expect(await bob.client.acceptIdentity(aliceId, damaged.toString('base64'))).toBe(false);
    expect((await bob.client.contact(aliceId))?.trust).toBe('unverified');

    // Bob scans the code on Alice's screen.
    expect(await bob.client.acceptIdentity(aliceId, onAlice.qr)).toBe(true);
    expect((await bob.client.contact(aliceId))?.trust).toBe('verified');
    expect((await bob.client.safetyNumber(aliceId)).trust).toBe('verified');
    expect(await alice.client.acceptIdentity(bobId, onBob.qr)).toBe(true);
    expect((await alice.client.contact(bobId))?.trust).toBe('verified');

    // Verified contacts keep talking.
    expect((await bob.client.sendText(aliceId, 'verified')).status).toBe('sent');
    await alice.client.fetchQueue();
    expect((await alice.client.history(bobId)).map((m) => m.body)).toContain('verified');
  });
});
