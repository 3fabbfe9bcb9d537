import { randomUUID } from 'node:crypto';
import { DescribeTimeToLiveCommand } from '@aws-sdk/client-dynamodb';
import { PutCommand, ScanCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ApiError } from '../src/core/errors.ts';
import type { Account, Device, Envelope, KeyUpload } from '../src/core/ports.ts';
import { DynamoDbStorage } from '../src/storage/dynamodb/dynamodb-storage.ts';
import { type TableName, createTables, deleteTables, tableNames } from '../src/storage/dynamodb/tables.ts';
import { storageContract } from './storage-contract.ts';
import { type DynamoDbLocal, emptyTables, startDynamoDbLocal } from './support/dynamodb-local.ts';

/*
 * The storage contract against Amazon's DynamoDB Local (Java, in memory), started here on a free
 * loopback port and stopped after the file. One set of tables for the file, emptied before each
 * test (the contract wants an empty storage; making tables anew for each test takes longer).
 * Then what only this adapter has: shared payloads, sends and key uploads larger than one
 * transaction, undecided sends, cursors under concurrent sends, purges, TTL attributes.
 */

let local: DynamoDbLocal;
const prefix = 'contract-';

beforeAll(async () => {
  local = await startDynamoDbLocal();
  await createTables(local.client, prefix, { ttl: false });
}, 90_000);
afterAll(async () => {
  await local?.stop();
});

storageContract('dynamodb', async () => {
  await emptyTables(local, prefix);
  return { storage: new DynamoDbStorage(local.doc, prefix), close: async () => {} };
});

describe('DynamoDbStorage', () => {
  const T0 = 1_700_000_000_000;
  const DAY = 86_400_000;
  const tables = tableNames(prefix);
  let storage: DynamoDbStorage;
  beforeEach(async () => {
    await emptyTables(local, prefix);
    storage = new DynamoDbStorage(local.doc, prefix);
  });

  const bytes = (length: number, seed: number) => Uint8Array.from({ length }, (_, i) => (seed * 31 + i * 7) & 0xff);
  const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);
  const ecKeys = (from: number, count: number) =>
    range(from, count).map((keyId) => ({ keyId, publicKey: bytes(33, keyId) }));
  const kyberKeys = (from: number, count: number) =>
    range(from, count).map((keyId) => ({ keyId, publicKey: bytes(1569, keyId), signature: bytes(64, keyId) }));

  async function scan(table: TableName): Promise<Record<string, unknown>[]> {
    const items: Record<string, unknown>[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const out = await local.doc.send(
        new ScanCommand({
          TableName: tables[table],
          ConsistentRead: true,
          ...(start ? { ExclusiveStartKey: start } : {}),
        }),
      );
      items.push(...(out.Items ?? []));
      start = out.LastEvaluatedKey;
    } while (start);
    return items;
  }
  const withPrefix = async (table: TableName, p: string) =>
    (await scan(table)).filter((i) => String(i.pk).startsWith(p));

  async function register(keys: KeyUpload = {}, number = `+1${2_000_000_000 + Math.floor(Math.random() * 7e9)}`) {
    const sessionId = randomUUID();
    await storage.insertVerificationSession({
      id: sessionId,
      number,
      codeHash: bytes(32, 1),
      createdAt: T0,
      expiresAt: T0 + 600_000,
      failedAttempts: 0,
      verified: true,
      consumed: false,
    });
    const account: Account = { id: randomUUID(), number, identityKey: bytes(33, 5), createdAt: T0 };
    const device: Device = {
      accountId: account.id,
      deviceId: 1,
      registrationId: 7,
      passwordHash: bytes(32, 2),
      passwordSalt: bytes(16, 3),
      createdAt: T0,
    };
    const keysWithSigned = {
      signedPreKey: { keyId: 1, publicKey: bytes(33, 1), signature: bytes(64, 1) },
      pqLastResortPreKey: { keyId: 1, publicKey: bytes(1569, 1), signature: bytes(64, 2) },
      ...keys,
    };
    await storage.createAccount(account, device, keysWithSigned, sessionId);
    return account;
  }

  let seq = 0;
  const envelope = (accountId: string, deviceId = 1, over: Partial<Envelope> = {}): Envelope => ({
    guid: randomUUID(),
    type: 1,
    sourceAccountId: 'sender',
    sourceDeviceId: 1,
    destinationAccountId: accountId,
    destinationDeviceId: deviceId,
    timestamp: T0 + seq,
    serverTimestamp: T0 + seq++,
    content: bytes(64, seq),
    expiresAt: T0 + 30 * DAY,
    ...over,
  });
  const same = (a: Uint8Array | undefined, b: Uint8Array) => Buffer.from(a ?? []).equals(b);

  it('creates its tables idempotently, with TTL on the `ttl` attribute', async () => {
    const p = `ttl-${Date.now()}-`;
    await createTables(local.client, p);
    await createTables(local.client, p);
    for (const t of ['main', 'messages'] as const) {
      const out = await local.client.send(new DescribeTimeToLiveCommand({ TableName: tableNames(p)[t] }));
      expect(out.TimeToLiveDescription).toMatchObject({ AttributeName: 'ttl', TimeToLiveStatus: 'ENABLED' });
    }
    await deleteTables(local.client, p);
  });

  it('marks envelopes, receipts and sessions with a TTL in seconds', async () => {
    const e = envelope(randomUUID(), 1, { expiresAt: T0 + 1234 });
    await storage.insertEnvelopes([e], { sourceAccountId: 's', sourceDeviceId: 1, messageId: 'm', expiresAt: T0 + 5 });
    const [item] = await scan('messages');
    expect(item?.ttl).toBe(Math.ceil((T0 + 1234) / 1000));
    expect((await withPrefix('main', 'T#'))[0]?.ttl).toBe(Math.ceil((T0 + 5) / 1000));
  });

  it('refuses a malformed cursor with a 400', async () => {
    const error = await storage.fetchQueue('a', 1, 10, T0, 'x1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).status).toBe(400);
  });

  it('stores a content shared by several envelopes once and drops it with the last acknowledgement', async () => {
    const content = bytes(10_000, 9);
    const to = [randomUUID(), randomUUID()];
    const sent = [
      envelope(to[0] as string, 1, { content }),
      envelope(to[0] as string, 2, { content }),
      envelope(to[1] as string, 1, { content }),
    ];
    expect(await storage.insertEnvelopes(sent)).toBe(true);
    expect(await withPrefix('main', 'M#')).toHaveLength(1);
    for (const e of sent) {
      const [got] = await storage.fetchQueue(e.destinationAccountId, e.destinationDeviceId, 10, T0);
      expect(got?.guid).toBe(e.guid);
      expect(same(got?.content, content)).toBe(true);
    }
    for (const e of sent.slice(0, 2))
      expect(await storage.deleteEnvelope(e.destinationAccountId, e.destinationDeviceId, e.guid)).toBe(true);
    expect(await withPrefix('main', 'M#')).toHaveLength(1);
    const last = sent[2] as Envelope;
    expect(await storage.deleteEnvelope(last.destinationAccountId, 1, last.guid)).toBe(true);
    expect(await withPrefix('main', 'M#')).toHaveLength(0);
  });

  it('acknowledges an envelope to exactly one of 10 concurrent deletes, and releases its payload once', async () => {
    const content = bytes(100, 3);
    const [a, b] = [envelope(randomUUID(), 1, { content }), envelope(randomUUID(), 1, { content })] as [
      Envelope,
      Envelope,
    ];
    await storage.insertEnvelopes([a, b]);
    const results = await Promise.all(
      range(0, 10).map(() => storage.deleteEnvelope(a.destinationAccountId, 1, a.guid)),
    );
    expect(results.filter(Boolean)).toHaveLength(1);
    const [left] = await storage.fetchQueue(b.destinationAccountId, 1, 10, T0);
    expect(same(left?.content, content)).toBe(true);
  });

  it('commits a multi-recipient send too large for one transaction once, in FIFO order with later sends', async () => {
    const accounts = range(0, 240).map(() => randomUUID());
    const content = bytes(20_000, 4);
    const receipt = {
      sourceAccountId: 'group-sender',
      sourceDeviceId: 1,
      messageId: randomUUID(),
      expiresAt: T0 + DAY,
    };
    const sent = accounts.map((a) => envelope(a, 1, { content }));
    expect(await storage.insertEnvelopes(sent, receipt)).toBe(true);
    expect(await scan('messages')).toHaveLength(240);
    expect(await withPrefix('main', 'M#')).toHaveLength(1);
    expect(await withPrefix('main', 'C#')).toMatchObject([{ state: 'committed' }]);
    // a retry (new guids) stores nothing and leaves nothing behind
    expect(
      await storage.insertEnvelopes(
        accounts.map((a) => envelope(a, 1, { content })),
        receipt,
      ),
    ).toBe(false);
    expect(await scan('messages')).toHaveLength(240);
    expect(await withPrefix('main', 'M#')).toHaveLength(1);
    // later sends queue behind it
    const later = envelope(accounts[0] as string);
    await storage.insertEnvelopes([later]);
    const queue = await storage.fetchQueue(accounts[0] as string, 1, 10, T0);
    expect(queue.map((e) => e.guid)).toEqual([sent[0]?.guid, later.guid]);
    expect(same(queue[0]?.content, content)).toBe(true);
    expect(await storage.countQueue(accounts[239] as string, 1, T0)).toBe(1);
  });

  it('hands out nothing past an undecided send, and aborts it once its writer is past the deadline', async () => {
    const accountId = randomUUID();
    const queue = `${accountId}#1`;
    // What a writer that died after writing a chunk leaves: a head moved by one and one view.
    await local.doc.send(new PutCommand({ TableName: tables.main, Item: { pk: `Q#${accountId}`, sk: '-', seq: 1 } }));
    const stuck = {
      pk: queue,
      sk: randomUUID(),
      pos: 1,
      type: 1,
      src: 's',
      srcDevice: 1,
      ts: T0,
      sts: T0,
      exp: T0 + DAY,
      content: bytes(10, 1),
      s: 'send-of-a-dead-writer',
      sd: Date.now() + 60_000,
    };
    await local.doc.send(new PutCommand({ TableName: tables.messages, Item: stuck }));
    const after = envelope(accountId);
    await storage.insertEnvelopes([after]);
    expect(await storage.fetchQueue(accountId, 1, 10, T0)).toEqual([]);
    await local.doc.send(
      new UpdateCommand({
        TableName: tables.messages,
        Key: { pk: queue, sk: stuck.sk },
        UpdateExpression: 'SET sd = :past',
        ExpressionAttributeValues: { ':past': Date.now() - 1 },
      }),
    );
    expect((await storage.fetchQueue(accountId, 1, 10, T0)).map((e) => e.guid)).toEqual([after.guid]);
    expect(await withPrefix('main', 'C#')).toMatchObject([{ state: 'aborted' }]);
    expect(await storage.countQueue(accountId, 1, T0)).toBe(1);
  });

  it('keeps cursors valid while concurrent sends commit: a reader following its cursor misses nothing', async () => {
    const accountId = randomUUID();
    const sent: string[] = [];
    let done = false;
    const senders = range(0, 8).map(async () => {
      for (let i = 0; i < 5; i++) {
        const e = envelope(accountId);
        await storage.insertEnvelopes([e]);
        sent.push(e.guid);
      }
    });
    const seen: string[] = [];
    let cursor: string | undefined;
    const reader = (async () => {
      for (;;) {
        const finished = done;
        const page = await storage.fetchQueue(accountId, 1, 100, T0, cursor);
        for (const e of page) seen.push(e.guid);
        cursor = page.at(-1)?.cursor ?? cursor;
        if (finished && page.length === 0) return;
      }
    })();
    await Promise.all(senders);
    done = true;
    await reader;
    expect(seen).toHaveLength(40);
    expect(new Set(seen)).toEqual(new Set(sent));
  });

  it('stores uploads of 100 + 100 one-time keys (more than one transaction) at registration and later', async () => {
    const account = await register({ preKeys: ecKeys(1, 100), pqPreKeys: kyberKeys(1, 100) });
    expect(await storage.countKeys(account.id, 1)).toEqual({ preKeys: 100, pqPreKeys: 100 });
    await storage.storeKeys(account.id, 1, {
      preKeys: ecKeys(101, 100),
      pqPreKeys: kyberKeys(101, 100),
      signedPreKey: { keyId: 2, publicKey: bytes(33, 2), signature: bytes(64, 2) },
    });
    expect(await storage.countKeys(account.id, 1)).toEqual({ preKeys: 200, pqPreKeys: 200 });
    const taken = await storage.takeKeys(account.id, 1);
    expect(taken?.signedPreKey.keyId).toBe(2);
    expect(taken?.pqLastResort).toBe(false);
    const device = (await withPrefix('main', `A#${account.id}`)).find((i) => i.sk === 'D#00000001');
    expect(device?.pending).toBeUndefined();
    // keys for a device that does not exist: 404, nothing pending anywhere
    const error = await storage
      .storeKeys(account.id, 2, { preKeys: ecKeys(1, 100), pqPreKeys: kyberKeys(1, 100) })
      .catch((e: unknown) => e);
    expect((error as ApiError).status).toBe(404);
  });

  it('purges the keys and queues that removal and re-registration left unreachable', async () => {
    const old = await register({ preKeys: ecKeys(1, 5), pqPreKeys: kyberKeys(1, 5) });
    await storage.insertEnvelopes([envelope(old.id, 1), envelope(old.id, 2)]);
    const fresh = await register({ preKeys: ecKeys(1, 3) }, old.number);
    await storage.insertEnvelopes([envelope(fresh.id, 1)]);
    expect((await scan('keys')).length).toBe(13);
    await storage.deleteExpired(T0);
    expect((await scan('keys')).length).toBe(3);
    expect((await scan('messages')).map((i) => i.pk)).toEqual([`${fresh.id}#1`]);
    expect(await withPrefix('main', 'purge')).toEqual([]);
  });
});
