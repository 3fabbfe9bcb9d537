import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StoredMessage } from '../src/index.ts';
import {
  type TestClient,
  type TestTarget,
  openClient,
  registeredClient,
  startServerlessTestServer,
  startTestServer,
} from './support/harness.ts';

const isMessage = (body: string) => (e: { type: string; message?: StoredMessage }) =>
  e.type === 'message' && e.message?.body === body;

/**
 * Against both deployments: the standalone server, and the serverless one run locally (Lambda
 * handlers behind a local API Gateway, DynamoDB Local, s3rver).
 */
const deployments: { name: string; start: () => Promise<TestTarget> }[] = [
  { name: 'standalone', start: () => startTestServer() },
  { name: 'serverless-local', start: startServerlessTestServer },
];

describe.each(deployments)('two and three clients against the real server: $name', (deployment) => {
  let server: TestTarget;
  const opened: TestClient[] = [];
  const client = async () => {
    const c = await registeredClient(server);
    opened.push(c);
    return c;
  };

  beforeAll(async () => {
    server = await deployment.start();
  }, 90_000);
  afterAll(async () => {
    for (const c of opened) await c.client.close().catch(() => undefined);
    await server.close();
  });

  it('1:1 both ways, live, with delivery and read receipts', async () => {
    const alice = await client();
    const bob = await client();
    await alice.client.connect();
    await bob.client.connect();
    const sent = await alice.client.sendText(bob.client.account.accountId, 'hello Bob');
    expect(sent.status).toBe('sent');
    await bob.next(isMessage('hello Bob'));
    // Bob's device answered with a delivery receipt.
    await alice.next(
      (e) => e.type === 'message-updated' && e.message.id === sent.id && e.message.status === 'delivered',
    );
    await bob.client.sendText(alice.client.account.accountId, 'hi Alice');
    await alice.next(isMessage('hi Alice'));
    await bob.client.markRead(alice.client.account.accountId);
    await alice.next((e) => e.type === 'message-updated' && e.message.id === sent.id && e.message.status === 'read');
    const history = await alice.client.history(bob.client.account.accountId);
    expect(history.map((m) => [m.direction, m.body])).toEqual([
      ['out', 'hello Bob'],
      ['in', 'hi Alice'],
    ]);
  });

  it('connects with an explicit socketUrl (on AWS, the WebSocket API has its own URL)', async () => {
    const alice = await client();
    const socketUrl = server.socketUrl ?? `${server.url.replace(/^http/, 'ws')}/v1/websocket`;
    const bob = await registeredClient(server, { socketUrl });
    opened.push(bob);
    await bob.client.connect();
    await bob.next((e) => e.type === 'queue-empty');
    await alice.client.sendText(bob.client.account.accountId, 'over the socket URL');
    await bob.next(isMessage('over the socket URL'));
  });

  it('offline delivery: messages wait on the server and arrive when the client connects', async () => {
    const alice = await client();
    const bob = await client();
    for (const text of ['one', 'two', 'three']) await alice.client.sendText(bob.client.account.accountId, text);
    await bob.client.connect();
    await bob.next((e) => e.type === 'queue-empty');
    await bob.client.idle();
    const history = await bob.client.history(alice.client.account.accountId);
    expect(history.filter((m) => m.kind === 'text').map((m) => m.body)).toEqual(['one', 'two', 'three']);
  });

  it('restart mid-conversation: the store reopens and the history and sessions still work', async () => {
    const alice = await client();
    const bob = await client();
    await bob.client.connect();
    await alice.client.sendText(bob.client.account.accountId, 'before restart');
    await bob.next(isMessage('before restart'));
    bob.client.disconnect();
    await bob.client.close();
    const reopened = await openClient(server, dirname(bob.storePath));
    opened.push(reopened);
    expect(reopened.client.account.accountId).toBe(bob.client.account.accountId);
    expect((await reopened.client.history(alice.client.account.accountId)).map((m) => m.body)).toContain(
      'before restart',
    );
    await reopened.client.connect();
    await alice.client.sendText(bob.client.account.accountId, 'after restart');
    await reopened.next(isMessage('after restart'));
  });

  it('a group of three; after a member is removed, they cannot read what follows', async () => {
    const alice = await client();
    const bob = await client();
    const carol = await client();
    for (const c of [alice, bob, carol]) await c.client.connect();
    const group = await alice.client.createGroup('trio', [
      bob.client.account.accountId,
      carol.client.account.accountId,
    ]);
    await bob.next((e) => e.type === 'group-updated' && e.group.id === group.id);
    await carol.next((e) => e.type === 'group-updated' && e.group.id === group.id);
    await alice.client.sendText(`group:${group.id}`, 'hello group');
    await bob.next(isMessage('hello group'));
    await carol.next(isMessage('hello group'));

    await alice.client.removeMember(group.id, carol.client.account.accountId);
    await carol.next((e) => e.type === 'group-updated' && !e.group.active);
    await bob.next((e) => e.type === 'group-updated' && e.group.revision === 2);
    await alice.client.sendText(`group:${group.id}`, 'without carol');
    await bob.next(isMessage('without carol'));
    await new Promise((r) => setTimeout(r, 500));
    await carol.client.idle();
    const carolHistory = await carol.client.history(`group:${group.id}`);
    expect(carolHistory.map((m) => m.body)).not.toContain('without carol');
  });

  it('an attachment round trip: encrypted on the device, checked and decrypted by the receiver', async () => {
    const alice = await client();
    const bob = await client();
    await bob.client.connect();
    const data = new Uint8Array(50_000).map((_, i) => (i * 7) % 256);
    await alice.client.sendFile(
      bob.client.account.accountId,
      data,
      'pattern.bin',
      'application/octet-stream',
      'a file',
    );
    const event = await bob.next(isMessage('a file'));
    const attachment = (event as { message: StoredMessage }).message.attachments?.[0];
    expect(attachment?.fileName).toBe('pattern.bin');
    const downloaded = await bob.client.downloadAttachment(attachment as NonNullable<typeof attachment>);
    expect(Buffer.from(downloaded).equals(Buffer.from(data))).toBe(true);
  });

  it('disappearing messages are removed on both sides when their timer runs out', async () => {
    const alice = await client();
    const bob = await client();
    await bob.client.connect();
    const conversation = bob.client.account.accountId;
    await alice.client.setExpireTimer(conversation, 1);
    await alice.client.sendText(conversation, 'vanishing');
    await bob.next(isMessage('vanishing'));
    await new Promise((r) => setTimeout(r, 1200));
    await alice.client.removeExpired();
    await bob.client.removeExpired();
    expect((await alice.client.history(conversation)).map((m) => m.body)).not.toContain('vanishing');
    expect((await bob.client.history(alice.client.account.accountId)).map((m) => m.body)).not.toContain('vanishing');
  });

  it('the client database holds no plaintext and no private key bytes', async () => {
    const alice = await client();
    const bob = await client();
    await bob.client.connect();
    const secret = `MARKER-${Math.random().toString(36).slice(2)}`;
    await alice.client.sendText(bob.client.account.accountId, secret);
    await bob.next(isMessage(secret));
    for (const c of [alice, bob]) {
      const identityPrivate = Buffer.from(c.client.identity.privateKey.serialize());
      for (const file of readdirSync(dirname(c.storePath))) {
        if (file.endsWith('.key')) continue;
        const bytes = readFileSync(join(dirname(c.storePath), file));
        expect(bytes.includes(Buffer.from(secret)), `${file} contains the plaintext`).toBe(false);
        expect(bytes.includes(identityPrivate), `${file} contains the identity private key`).toBe(false);
        expect(bytes.includes(Buffer.from(c.client.account.password)), `${file} contains the password`).toBe(false);
      }
    }
  });
});
