import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError, type StoredMessage } from '../src/index.ts';
import { LinkUriError } from '../src/provisioning.ts';
import {
  type TestClient,
  type TestTarget,
  openClient,
  registeredClient,
  startServerlessTestServer,
  startTestServer,
} from './support/harness.ts';

/*
 * Linked devices (issue 4, "encrypt once per own other device"): a primary links a second device by
 * QR link; every message to the account reaches both; what one device sends or reads shows on the
 * other; groups include our own devices; an unlinked device is dropped from every fan-out.
 */

const isMessage = (body: string) => (e: { type: string; message?: StoredMessage }) =>
  e.type === 'message' && e.message?.body === body;

/** Against both deployments: standalone, and serverless run locally (Lambda handlers, DynamoDB Local). */
const deployments: { name: string; start: () => Promise<TestTarget> }[] = [
  { name: 'standalone', start: () => startTestServer() },
  { name: 'serverless-local', start: startServerlessTestServer },
];

describe.each(deployments)('linked devices: $name', (deployment) => {
  let server: TestTarget;
  const opened: TestClient[] = [];
  const client = async () => {
    const c = await registeredClient(server);
    opened.push(c);
    return c;
  };

  /** Links a new device to `primary`'s account the way a user would: the new device shows a link, the primary scans it. */
  const link = async (primary: TestClient, name?: string): Promise<TestClient> => {
    const device = await openClient(server);
    opened.push(device);
    let scanned: Promise<void> | undefined;
    await device.client.linkAsNewDevice({
      ...(name ? { name } : {}),
      pollIntervalMs: 25,
      onLinkUri: (uri) => {
        scanned = primary.client.linkDevice(uri);
      },
    });
    await scanned;
    return device;
  };

  beforeAll(async () => {
    server = await deployment.start();
  }, 90_000);
  afterAll(async () => {
    for (const c of opened) await c.client.close().catch(() => undefined);
    await server.close();
  });

  it('a linked device joins the account with its own keys and the shared identity; names are encrypted', async () => {
    const alice = await client();
    const laptop = await link(alice, 'laptop');
    expect(laptop.client.account.accountId).toBe(alice.client.account.accountId);
    expect(laptop.client.account.number).toBe(alice.client.account.number);
    expect(laptop.client.account.deviceId).toBe(2);
    expect(laptop.client.identity.publicKey.equals(alice.client.identity.publicKey)).toBe(true);
    expect(laptop.client.account.registrationId).not.toBe(alice.client.account.registrationId);
    expect(laptop.client.account.password).not.toBe(alice.client.account.password);

    const devices = await alice.client.devices();
    expect(devices.map((d) => [d.deviceId, d.name ?? null, d.current])).toEqual([
      [1, null, true],
      [2, 'laptop', false],
    ]);
    // The primary hears the new device's hello and now holds a session with it.
    await alice.client.fetchQueue();
    expect(alice.events.some((e) => e.type === 'device-linked' && e.deviceId === 2)).toBe(true);

    // The server never saw the identity private key (the provisioning message was sealed to the
    // new device's ephemeral key) nor the device name. The public identity key, which the server
    // does keep, shows that the scan reads what the deployment stores.
    const stored = Buffer.from(await server.storedBytes());
    const holds = (bytes: Uint8Array) =>
      [Buffer.from(bytes), Buffer.from(Buffer.from(bytes).toString('base64'))].some((form) => stored.includes(form));
    expect(holds(alice.client.identity.publicKey.serialize())).toBe(true);
    expect(holds(alice.client.identity.privateKey.serialize())).toBe(false);
    expect(holds(new TextEncoder().encode('laptop'))).toBe(false);
  });

  it('messages to the account reach every device; what one device sends shows on the other', async () => {
    const alice = await client();
    const bob = await client();
    const laptop = await link(alice);
    await alice.client.fetchQueue(); // the laptop's hello
    for (const c of [alice, bob, laptop]) await c.client.connect();
    const aliceId = alice.client.account.accountId;
    const bobId = bob.client.account.accountId;

    // Bob knew only device 1 of Alice? He had no session at all: he fetches all her devices.
    await bob.client.sendText(aliceId, 'hi both of you');
    await alice.next(isMessage('hi both of you'));
    await laptop.next(isMessage('hi both of you'));

    // Sent from the phone: Bob gets it, the laptop shows it as sent by Alice, in Bob's conversation.
    const fromPhone = await alice.client.sendText(bobId, 'from my phone');
    await bob.next(isMessage('from my phone'));
    const synced = (await laptop.next(isMessage('from my phone'))) as { message: StoredMessage };
    expect(synced.message).toMatchObject({
      id: fromPhone.id,
      conversationId: bobId,
      direction: 'out',
      author: aliceId,
      authorDevice: 1,
      status: 'sent',
    });

    // Sent from the laptop: same the other way round.
    await laptop.client.sendText(bobId, 'from my laptop');
    const atBob = (await bob.next(isMessage('from my laptop'))) as { message: StoredMessage };
    expect(atBob.message.authorDevice).toBe(2);
    const atPhone = (await alice.next(isMessage('from my laptop'))) as { message: StoredMessage };
    expect(atPhone.message).toMatchObject({ conversationId: bobId, direction: 'out' });

    // Bob's reply reaches both, and both conversations read the same.
    await bob.client.sendText(aliceId, 'got both');
    await alice.next(isMessage('got both'));
    await laptop.next(isMessage('got both'));
    const view = async (c: TestClient) =>
      (await c.client.history(bobId)).filter((m) => m.kind === 'text').map((m) => [m.direction, m.body]);
    expect(await view(laptop)).toEqual(await view(alice));
    expect(await view(alice)).toEqual([
      ['in', 'hi both of you'],
      ['out', 'from my phone'],
      ['out', 'from my laptop'],
      ['in', 'got both'],
    ]);

    // Reading on the phone clears the laptop's unread count.
    expect((await laptop.client.conversations()).find((c) => c.id === bobId)?.unread).toBe(2);
    await alice.client.markRead(bobId);
    await laptop.next(
      (e) => e.type === 'message-updated' && e.message.body === 'got both' && e.message.status === 'read',
    );
    await laptop.client.idle();
    expect((await laptop.client.conversations()).find((c) => c.id === bobId)?.unread).toBe(0);
  });

  it('groups: our own devices get the group and every message; a member’s new device can read at once', async () => {
    const alice = await client();
    const bob = await client();
    const carol = await client();
    const laptop = await link(alice);
    await alice.client.fetchQueue();
    for (const c of [alice, bob, carol, laptop]) await c.client.connect();
    const group = await alice.client.createGroup('trio', [
      bob.client.account.accountId,
      carol.client.account.accountId,
    ]);
    await laptop.next((e) => e.type === 'group-updated' && e.group.id === group.id);
    await bob.next((e) => e.type === 'group-updated' && e.group.id === group.id);
    await carol.next((e) => e.type === 'group-updated' && e.group.id === group.id);

    await alice.client.sendText(`group:${group.id}`, 'from the phone to the group');
    for (const c of [bob, carol]) await c.next(isMessage('from the phone to the group'));
    const own = (await laptop.next(isMessage('from the phone to the group'))) as { message: StoredMessage };
    expect(own.message).toMatchObject({ conversationId: `group:${group.id}`, direction: 'out' });

    await laptop.client.sendText(`group:${group.id}`, 'from the laptop to the group');
    for (const c of [alice, bob, carol]) await c.next(isMessage('from the laptop to the group'));

    // Bob links a tablet after the group exists: Alice's next group message reaches it too (the
    // server's 409 names the new device, Alice sends it her sender key, then the message).
    const tablet = await link(bob);
    await tablet.client.connect();
    await alice.client.sendText(`group:${group.id}`, 'hello tablet');
    await tablet.next(isMessage('hello tablet'));
    await bob.next(isMessage('hello tablet'));
    expect(tablet.events.some((e) => e.type === 'decryption-failed')).toBe(false);
  });

  it('an unlinked device is dropped: its credentials stop working and senders stop encrypting for it', async () => {
    const alice = await client();
    const bob = await client();
    const laptop = await link(alice);
    await alice.client.fetchQueue();
    const aliceId = alice.client.account.accountId;
    await bob.client.sendText(aliceId, 'to both');
    expect(await laptop.client.fetchQueue()).toBe(1);

    await alice.client.removeDevice(2);
    expect((await alice.client.devices()).map((d) => d.deviceId)).toEqual([1]);
    await expect(laptop.client.fetchQueue()).rejects.toMatchObject({ status: 401 });

    // Bob still has a session with device 2: the server's 409 (extra device) makes him drop it.
    await bob.client.sendText(aliceId, 'only the phone now');
    await alice.client.fetchQueue();
    expect((await alice.client.history(bob.client.account.accountId)).map((m) => m.body)).toContain(
      'only the phone now',
    );
    // And the phone's own sends no longer copy to the removed laptop (no 409 loop, no error).
    const sent = await alice.client.sendText(bob.client.account.accountId, 'after unlinking');
    expect(sent.status).toBe('sent');
  });

  it('mistakes get clear errors', async () => {
    const alice = await client();
    await expect(alice.client.linkDevice('https://example.com')).rejects.toBeInstanceOf(LinkUriError);
    await expect(alice.client.linkDevice('hush://link?address=short&key=BQ')).rejects.toBeInstanceOf(LinkUriError);
    const laptop = await link(alice);
    const fresh = await openClient(server);
    opened.push(fresh);
    let shown: (uri: string) => void = () => undefined;
    const uri = new Promise<string>((resolve) => {
      shown = resolve;
    });
    const waiting = fresh.client.linkAsNewDevice({ pollIntervalMs: 25, timeoutMs: 1500, onLinkUri: shown });
    // Only the primary links devices.
    await expect(laptop.client.linkDevice(await uri)).rejects.toSatisfy(
      (e: unknown) => e instanceof ApiError && e.status === 403,
    );
    // Nobody scanned it: the new device gives up with a clear error and stays unregistered.
    await expect(waiting).rejects.toThrow(/not scanned in time/);
    expect(() => fresh.client.account).toThrow(/not registered/);
  });
});
