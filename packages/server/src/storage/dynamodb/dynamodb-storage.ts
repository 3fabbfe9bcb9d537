/*
 * The DynamoDB storage of the serverless deployment: the `Storage` port (core/ports.ts) on three
 * tables (tables.ts). It only stores: every rule about what may be stored lives in core/.
 *
 * DynamoDB gives single-item atomicity, conditional writes, and TransactWriteItems (at most 100
 * items and 4 MB, no two operations on one item). The SQLite adapter leans on transactions over
 * unbounded rows; here no write ever touches an unbounded set of items. The observable guarantees
 * of the port are kept as follows.
 *
 * Layout (main table unless said; pk / sk):
 *   S#<session id> / -           verification session; swept a day after its code expired
 *   R#<key> / -                  rate-limit window {count, resetAt}
 *   N#<number> / -               {accountId}: one account per number (conditional put)
 *   A#<account> / A              the account, with `dv`, a counter bumped by every device change
 *   A#<account> / D#<device>     a device: credentials, signed prekey, last-resort Kyber key, and
 *                                `inc`, its key incarnation (a fresh random id per device)
 *   L#<code hash hex> / -        link code            P#<address> / -   provisioning message
 *   Q#<account> / -              queue head of an account: `seq` (last position handed out),
 *                                `f<device>` (the floor of each device's queue) and `gone`
 *   T#<src>#<dev>#<gen>#<id> / - send receipt; gen = the source device's queue floor (see below)
 *   M#<payload id> / -           a payload shared by several envelopes, with a reference count
 *   C#<send id> / -              commit record of a send too large for one transaction
 *   purge / <id>                 what a sweep deletes later: unreachable keys and queue items
 *   keys:     K#<incarnation> / E#<key id> | K#<key id>     one-time EC and Kyber prekeys
 *   messages: <account>#<device> / <guid>, LSI byPosition on `pos`: the FIFO queue of a device
 *
 * Uniqueness and exactly-once:
 * - One account per number: the number item is written on the condition that it is absent or
 *   still names the account read before (a concurrent re-registration makes one of two retry).
 * - A verification session is consumed by a conditional update inside the account transaction.
 * - One-time prekeys: query a few, pick one at random, delete it on the condition that it is the
 *   version read (`v`); a lost race tries another. Whoever's delete succeeds hands the key out, so
 *   a key goes to exactly one caller, also under concurrency (random picks keep races rare).
 * - Link codes and provisioning messages are consumed by a (conditional) delete; one caller wins.
 * - Rate limits: a conditional increment of an open window, else a conditional put of a new one.
 * - Send receipts: a put on the condition that the receipt is absent, in the same transaction as
 *   the envelopes (or as the commit record of a large send): a duplicate stores nothing.
 *
 * Generations instead of unbounded deletes:
 * - Keys live under the device's incarnation, not its id. A new device (registration, linking)
 *   gets a fresh incarnation: its one-time keys are written first, where nothing can reach them,
 *   and become reachable in the one transaction that writes the device item. Removing a device
 *   deletes its one item: its keys are unreachable at once (a purge record lets a sweep delete
 *   them later; a purge "intent" written before the keys cleans up after a crash mid-way).
 * - Queues are ordered by a position from the account's queue head: a send reads the head and
 *   writes its envelopes at seq+1.. in a transaction that also moves `seq` on the condition that
 *   it is unchanged. So positions are handed out in commit order: a reader that has seen position
 *   p never later finds an envelope before p (cursors stay valid). Removing or linking a device
 *   sets its floor `f<device>` to a new position inside the same transaction; a reader only sees
 *   positions above the floor, so the old queue (and whatever a late send put under that id) is
 *   gone at once and is deleted later by the sweep or by TTL.
 * - Send receipts are keyed by the source device's floor, so removing or relinking a device
 *   drops its receipts the same way; those items expire by themselves.
 * - Replacing the account of a number is one transaction of bounded size (≤ 6 devices): the old
 *   account item and device items are deleted (conditioned on `dv`, so a device linked meanwhile
 *   makes it retry), the old queue head is marked `gone` (readers see empty queues, sends to it
 *   are dropped), and a purge record names the old keys and queues. Its link codes and
 *   provisioning messages are refused on read because their account is gone, and expire.
 * - An upload of one-time keys that does not fit one transaction is marked pending on the device
 *   item first, written, then unmarked with the signed keys in one update: readers ignore keys of
 *   a pending upload, so the upload appears at once.
 *
 * Sends: a send that fits (≤ 100 items, ≤ ~3.5 MB: every 1:1 send) is ONE transaction: receipt,
 * queue heads, envelopes, and a payload item when several envelopes share one content (a
 * multi-recipient message is stored once, with a small per-device view, as Signal-Server does).
 * A larger send (multi-recipient to hundreds of devices) is written in chunk transactions whose
 * views carry the send id, and then committed by one conditional put of its commit record (with
 * the receipt). Readers stop at a view whose send is still undecided (FIFO: nothing after it is
 * handed out before it), skip views of an aborted send, and after a deadline abort a send whose
 * writer died (the commit record decides: committed or aborted, never both).
 *
 * Reads that must see the latest write are strongly consistent. Expired items are filtered on
 * read and deleted by `deleteExpired` (a scan: for tests and local runs) and by DynamoDB's TTL
 * (`ttl`, seconds) in the cloud. Items are kept under 400 KB: an envelope's content may be at most
 * MAX_CONTENT_BYTES (the core allows 96 KiB).
 */
import { randomUUID } from 'node:crypto';
import {
  BatchGetCommand,
  BatchWriteCommand,
  DeleteCommand,
  type DynamoDBDocumentClient,
  GetCommand,
  type NativeAttributeValue,
  PutCommand,
  QueryCommand,
  type QueryCommandInput,
  ScanCommand,
  TransactWriteCommand,
  type TransactWriteCommandInput,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import { ApiError, badRequest } from '../../core/errors.ts';
import { VERIFICATION_SESSION_RETENTION_MS } from '../../core/limits.ts';
import type {
  Account,
  Device,
  ECPreKey,
  Envelope,
  KeyUpload,
  KyberPreKey,
  LinkCode,
  ProvisioningMessage,
  QueuedEnvelope,
  SendReceipt,
  SignedECPreKey,
  Storage,
  TakenKeys,
  VerificationSession,
} from '../../core/ports.ts';
import { BY_POSITION_INDEX, type TableName, tableNames } from './tables.ts';

type Item = Record<string, NativeAttributeValue>;
type TransactItem = NonNullable<TransactWriteCommandInput['TransactItems']>[number];
type NewKeys = Required<Pick<KeyUpload, 'signedPreKey' | 'pqLastResortPreKey'>> & KeyUpload;

/** Largest envelope content stored (an item holds at most 400 KB). */
export const MAX_CONTENT_BYTES = 380 * 1024;
/** TransactWriteItems limits: 100 items, 4 MB (we stay well below the size). */
const MAX_TRANSACTION_ITEMS = 100;
const MAX_TRANSACTION_BYTES = 3_500_000;
/** A large send not committed this long after its views were written may be aborted by readers. */
const SEND_COMMIT_DEADLINE_MS = 60_000;
/** A purge intent (keys written before their device) is acted on this long after it was written. */
const PURGE_INTENT_DELAY_MS = 15 * 60_000;
/** Attempts of an optimistic write before giving up (conflicts are retried with jittered backoff). */
const MAX_ATTEMPTS = 40;
const KEY_CANDIDATES = 10;
const DAY_MS = 86_400_000;
const PARALLEL = 16;

const bytes = (value: unknown): Uint8Array => new Uint8Array(value as Uint8Array);
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const ttl = (ms: number) => Math.ceil(ms / 1000);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const backoff = (attempt: number) => sleep(Math.random() * Math.min(200, 3 * 2 ** Math.min(attempt, 8)));
const pad = (n: number) => String(n).padStart(8, '0');

const K = {
  session: (id: string) => ({ pk: `S#${id}`, sk: '-' }),
  rate: (key: string) => ({ pk: `R#${key}`, sk: '-' }),
  number: (number: string) => ({ pk: `N#${number}`, sk: '-' }),
  account: (id: string) => ({ pk: `A#${id}`, sk: 'A' }),
  device: (accountId: string, deviceId: number) => ({ pk: `A#${accountId}`, sk: `D#${pad(deviceId)}` }),
  linkCode: (hash: Uint8Array) => ({ pk: `L#${hex(hash)}`, sk: '-' }),
  provisioning: (address: string) => ({ pk: `P#${address}`, sk: '-' }),
  head: (accountId: string) => ({ pk: `Q#${accountId}`, sk: '-' }),
  receipt: (r: SendReceipt, gen: string) => ({
    pk: `T#${r.sourceAccountId}#${r.sourceDeviceId}#${gen}#${r.messageId}`,
    sk: '-',
  }),
  payload: (id: string) => ({ pk: `M#${id}`, sk: '-' }),
  send: (id: string) => ({ pk: `C#${id}`, sk: '-' }),
  purge: (id: string) => ({ pk: 'purge', sk: id }),
  queue: (accountId: string, deviceId: number) => `${accountId}#${deviceId}`,
  keys: (inc: string) => `K#${inc}`,
};
const EC = 'E#';
const KY = 'K#';
const floorAttr = (deviceId: number) => `f${deviceId}`;

function cancellationCodes(error: unknown): string[] | undefined {
  if ((error as { name?: string })?.name !== 'TransactionCanceledException') return undefined;
  const reasons = (error as { CancellationReasons?: { Code?: string }[] }).CancellationReasons ?? [];
  return reasons.map((r) => r.Code ?? 'None');
}
const isConditionFailure = (error: unknown) => (error as { name?: string })?.name === 'ConditionalCheckFailedException';
/** Errors worth another attempt of an optimistic write. */
const isRetryable = (error: unknown) => {
  const name = (error as { name?: string })?.name;
  return name === 'TransactionConflictException' || name === 'ThrottlingException';
};

/** Runs `fn` over `items` with at most `limit` at a time. */
async function parallel<T>(items: T[], fn: (item: T) => Promise<unknown>, limit = PARALLEL): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

const itemBytes = (item: Item): number => {
  let n = 100;
  for (const [k, v] of Object.entries(item)) {
    n += k.length;
    if (v instanceof Uint8Array) n += v.byteLength;
    else if (typeof v === 'string') n += v.length;
    else if (v && typeof v === 'object') n += itemBytes(v as Item);
    else n += 8;
  }
  return n;
};

function parseCursor(cursor: string | undefined): number {
  if (cursor === undefined) return 0;
  if (!/^(0|[1-9][0-9]{0,15})$/.test(cursor)) throw badRequest('invalid_cursor', 'the queue cursor is not valid');
  return Number(cursor);
}

const keyMap = (k: { keyId: number; publicKey: Uint8Array; signature: Uint8Array }): Item => ({
  keyId: k.keyId,
  publicKey: k.publicKey,
  signature: k.signature,
});
const toSigned = (m: Item): SignedECPreKey => ({
  keyId: m.keyId as number,
  publicKey: bytes(m.publicKey),
  signature: bytes(m.signature),
});
const toKyber = (m: Item): KyberPreKey => ({
  keyId: m.keyId as number,
  publicKey: bytes(m.publicKey),
  signature: bytes(m.signature),
});

const toSession = (i: Item): VerificationSession => ({
  id: i.id as string,
  number: i.number as string,
  codeHash: bytes(i.codeHash),
  createdAt: i.createdAt as number,
  expiresAt: i.expiresAt as number,
  failedAttempts: i.failedAttempts as number,
  verified: i.verified as boolean,
  consumed: i.consumed as boolean,
});
const toAccount = (i: Item): Account => ({
  id: i.id as string,
  number: i.number as string,
  identityKey: bytes(i.identityKey),
  ...(i.name === undefined ? {} : { name: i.name as string }),
  createdAt: i.createdAt as number,
});
const toDevice = (i: Item): Device => ({
  accountId: i.accountId as string,
  deviceId: i.deviceId as number,
  registrationId: i.registrationId as number,
  passwordHash: bytes(i.passwordHash),
  passwordSalt: bytes(i.passwordSalt),
  createdAt: i.createdAt as number,
  ...(i.pushSubscription === undefined ? {} : { pushSubscription: i.pushSubscription as string }),
  ...(i.name === undefined ? {} : { name: bytes(i.name) }),
});

/** A queue head as read: undefined attributes are 0 / false. */
interface Head {
  seq: number;
  gone: boolean;
  floor(deviceId: number): number;
  /** The item's `seq` attribute as read (undefined if absent), for the write condition. */
  rawSeq: number | undefined;
}
const toHead = (i: Item | undefined): Head => ({
  seq: (i?.seq as number | undefined) ?? 0,
  gone: i?.gone === true,
  floor: (d) => (i?.[floorAttr(d)] as number | undefined) ?? 0,
  rawSeq: i?.seq as number | undefined,
});

/** The generation of a source device's send receipts. */
const receiptGen = (head: Head, deviceId: number) => (head.gone ? 'gone' : String(head.floor(deviceId)));

export interface DynamoDbStorageOptions {
  /** Called with errors of best-effort clean-ups (which never fail a call). */
  onCleanupError?: (error: unknown) => void;
}

export class DynamoDbStorage implements Storage {
  readonly tables: Record<TableName, string>;
  /** Sends known to be committed (their commit record never changes again). */
  private readonly committedSends = new Set<string>();

  constructor(
    private readonly db: DynamoDBDocumentClient,
    prefix: string,
    private readonly options: DynamoDbStorageOptions = {},
  ) {
    this.tables = tableNames(prefix);
  }

  // ---- small helpers ----

  private async get(key: { pk: string; sk: string }, table: TableName = 'main'): Promise<Item | undefined> {
    const out = await this.db.send(new GetCommand({ TableName: this.tables[table], Key: key, ConsistentRead: true }));
    return out.Item;
  }

  private async transact(items: TransactItem[]): Promise<void> {
    await this.db.send(new TransactWriteCommand({ TransactItems: items }));
  }

  /**
   * Deletes an item and returns what it held, or undefined if it was not there. Conditional, so
   * that of concurrent calls exactly one gets the item (DynamoDB Local hands the old item to
   * several concurrent unconditional deletes).
   */
  private async take(table: TableName, key: Item): Promise<Item | undefined> {
    try {
      const out = await this.db.send(
        new DeleteCommand({
          TableName: this.tables[table],
          Key: key,
          ConditionExpression: 'attribute_exists(pk)',
          ReturnValues: 'ALL_OLD',
        }),
      );
      return out.Attributes;
    } catch (error) {
      if (isConditionFailure(error)) return undefined;
      throw error;
    }
  }

  private put(item: Item, condition?: string, values?: Item, names?: Record<string, string>): TransactItem {
    return {
      Put: {
        TableName: this.tables.main,
        Item: item,
        ...(condition ? { ConditionExpression: condition } : {}),
        ...(values ? { ExpressionAttributeValues: values } : {}),
        ...(names ? { ExpressionAttributeNames: names } : {}),
      },
    };
  }

  /** Consistent BatchGet of main-table items (any number of keys), by pk. */
  private async batchGet(keys: { pk: string; sk: string }[]): Promise<Map<string, Item>> {
    const found = new Map<string, Item>();
    const unique = [...new Map(keys.map((k) => [`${k.pk}\u0000${k.sk}`, k])).values()];
    for (let i = 0; i < unique.length; i += 100) {
      let request: Record<string, { Keys: Item[]; ConsistentRead: boolean }> | undefined = {
        [this.tables.main]: { Keys: unique.slice(i, i + 100), ConsistentRead: true },
      };
      for (let attempt = 0; request && Object.keys(request).length > 0; attempt++) {
        if (attempt > 0) await backoff(attempt);
        const out = await this.db.send(new BatchGetCommand({ RequestItems: request }));
        for (const item of out.Responses?.[this.tables.main] ?? []) found.set(item.pk as string, item);
        request = out.UnprocessedKeys as typeof request;
      }
    }
    return found;
  }

  /** BatchWrite with retries of unprocessed items (not atomic: for unreachable or disposable items). */
  private async batchWrite(table: TableName, requests: Item[]): Promise<void> {
    for (let i = 0; i < requests.length; i += 25) {
      let pending: Record<string, Item[]> | undefined = { [this.tables[table]]: requests.slice(i, i + 25) };
      for (let attempt = 0; pending && Object.keys(pending).length > 0; attempt++) {
        if (attempt > 0) await backoff(attempt);
        const out = await this.db.send(new BatchWriteCommand({ RequestItems: pending as never }));
        pending = out.UnprocessedItems as typeof pending;
      }
    }
  }

  private async queryAll(input: QueryCommandInput): Promise<Item[]> {
    const items: Item[] = [];
    let start: Item | undefined;
    do {
      const out = await this.db.send(
        new QueryCommand({ ...input, ConsistentRead: true, ...(start ? { ExclusiveStartKey: start } : {}) }),
      );
      items.push(...(out.Items ?? []));
      start = out.LastEvaluatedKey;
    } while (start);
    return items;
  }

  private cleanupFailed = (error: unknown) => this.options.onCleanupError?.(error);

  // ---- verification sessions ----

  private sessionItem(v: VerificationSession): Item {
    const sweepAt = v.expiresAt + VERIFICATION_SESSION_RETENTION_MS;
    return {
      ...K.session(v.id),
      id: v.id,
      number: v.number,
      codeHash: v.codeHash,
      createdAt: v.createdAt,
      expiresAt: v.expiresAt,
      failedAttempts: v.failedAttempts,
      verified: v.verified,
      consumed: v.consumed,
      sweepAt,
      ttl: ttl(sweepAt),
    };
  }

  async insertVerificationSession(session: VerificationSession): Promise<void> {
    await this.db.send(
      new PutCommand({
        TableName: this.tables.main,
        Item: this.sessionItem(session),
        ConditionExpression: 'attribute_not_exists(pk)',
      }),
    );
  }

  async getVerificationSession(id: string): Promise<VerificationSession | null> {
    const item = await this.get(K.session(id));
    return item ? toSession(item) : null;
  }

  async updateVerificationSession(session: VerificationSession): Promise<void> {
    try {
      await this.db.send(
        new PutCommand({
          TableName: this.tables.main,
          Item: this.sessionItem(session),
          ConditionExpression: 'attribute_exists(pk)',
        }),
      );
    } catch (error) {
      if (!isConditionFailure(error)) throw error; // like an UPDATE of no row
    }
  }

  // ---- rate limits ----

  async hit(key: string, windowMs: number, now: number): Promise<{ count: number; resetAt: number }> {
    for (let attempt = 0; ; attempt++) {
      try {
        const out = await this.db.send(
          new UpdateCommand({
            TableName: this.tables.main,
            Key: K.rate(key),
            UpdateExpression: 'SET #count = #count + :one',
            ConditionExpression: 'resetAt > :now',
            ExpressionAttributeNames: { '#count': 'count' },
            ExpressionAttributeValues: { ':one': 1, ':now': now },
            ReturnValues: 'ALL_NEW',
          }),
        );
        return { count: out.Attributes?.count as number, resetAt: out.Attributes?.resetAt as number };
      } catch (error) {
        if (!isConditionFailure(error)) throw error;
      }
      const resetAt = now + windowMs;
      try {
        await this.db.send(
          new PutCommand({
            TableName: this.tables.main,
            Item: { ...K.rate(key), count: 1, resetAt, sweepAt: resetAt, ttl: ttl(resetAt) },
            ConditionExpression: 'attribute_not_exists(pk) OR resetAt <= :now',
            ExpressionAttributeValues: { ':now': now },
          }),
        );
        return { count: 1, resetAt };
      } catch (error) {
        if (!isConditionFailure(error)) throw error;
      }
      // Another caller opened the window between the two writes: count in it.
      if (attempt >= MAX_ATTEMPTS) throw new Error(`rate limit ${key}: too much contention`);
    }
  }

  // ---- accounts and devices ----

  private deviceItem(device: Device, inc: string, keys: NewKeys): Item {
    return {
      ...K.device(device.accountId, device.deviceId),
      accountId: device.accountId,
      deviceId: device.deviceId,
      registrationId: device.registrationId,
      passwordHash: device.passwordHash,
      passwordSalt: device.passwordSalt,
      createdAt: device.createdAt,
      ...(device.pushSubscription === undefined ? {} : { pushSubscription: device.pushSubscription }),
      ...(device.name === undefined ? {} : { name: device.name }),
      inc,
      signed: keyMap(keys.signedPreKey),
      lastResort: keyMap(keys.pqLastResortPreKey),
    };
  }

  /**
   * Writes the one-time keys of a device that does not exist yet under a fresh incarnation (where
   * nothing reaches them), after a purge intent that deletes them unless the transaction that
   * makes the device (and deletes the intent) commits. Returns the incarnation.
   */
  private async prepareKeys(keys: KeyUpload): Promise<{ inc: string; intent: TransactItem }> {
    const inc = randomUUID();
    const intentKey = K.purge(`inc#${inc}`);
    const oneTime = this.keyItems(inc, keys, undefined);
    if (oneTime.length > 0) {
      await this.db.send(
        new PutCommand({
          TableName: this.tables.main,
          Item: { ...intentKey, keys: [inc], queues: [], notBefore: Date.now() + PURGE_INTENT_DELAY_MS },
        }),
      );
      await this.batchWrite(
        'keys',
        oneTime.map((Item) => ({ PutRequest: { Item } })),
      );
    }
    return { inc, intent: { Delete: { TableName: this.tables.main, Key: intentKey } } };
  }

  /** Best effort: the keys written by prepareKeys for a device that was never made. */
  private async discardKeys(inc: string): Promise<void> {
    try {
      await this.purgeKeys(inc);
      await this.db.send(new DeleteCommand({ TableName: this.tables.main, Key: K.purge(`inc#${inc}`) }));
    } catch (error) {
      this.cleanupFailed(error);
    }
  }

  async createAccount(
    account: Account,
    device: Device,
    keys: NewKeys,
    consumeVerificationSessionId: string,
  ): Promise<{ replacedAccountId?: string }> {
    const sessionId = consumeVerificationSessionId;
    const checkSession = async () => {
      const session = await this.getVerificationSession(sessionId);
      if (!session) throw new ApiError(404, 'verification_session_not_found', 'no such verification session');
      if (session.consumed) {
        throw new ApiError(409, 'verification_session_used', 'the verification session was already used');
      }
      if (!session.verified) throw new ApiError(403, 'number_not_verified', 'the number has not been verified');
      if (session.number !== account.number) {
        throw badRequest('number_mismatch', 'the verification session is for another number');
      }
    };
    await checkSession();
    if (device.accountId !== account.id) {
      throw badRequest('device_account_mismatch', 'the device belongs to another account');
    }
    const { inc, intent } = await this.prepareKeys(keys);
    try {
      for (let attempt = 0; ; attempt++) {
        if (attempt > 0) await backoff(attempt);
        const numberItem = await this.get(K.number(account.number));
        const oldId = numberItem?.accountId as string | undefined;
        const old = oldId ? await this.queryAll(this.accountPartition(oldId)) : [];
        const oldAccount = old.find((i) => i.sk === 'A');
        const oldDevices = old.filter((i) => (i.sk as string).startsWith('D#'));
        const items: TransactItem[] = [
          {
            Update: {
              TableName: this.tables.main,
              Key: K.session(sessionId),
              UpdateExpression: 'SET #consumed = :t',
              ConditionExpression: '#consumed = :f AND verified = :t AND #number = :number',
              ExpressionAttributeNames: { '#number': 'number', '#consumed': 'consumed' },
              ExpressionAttributeValues: { ':t': true, ':f': false, ':number': account.number },
            },
          },
          oldId
            ? this.put({ ...K.number(account.number), accountId: account.id }, 'accountId = :old', { ':old': oldId })
            : this.put({ ...K.number(account.number), accountId: account.id }, 'attribute_not_exists(pk)'),
          this.put(
            {
              ...K.account(account.id),
              id: account.id,
              number: account.number,
              identityKey: account.identityKey,
              ...(account.name === undefined ? {} : { name: account.name }),
              createdAt: account.createdAt,
              dv: 0,
            },
            'attribute_not_exists(pk)',
          ),
          this.put(this.deviceItem(device, inc, keys), 'attribute_not_exists(pk)'),
          intent,
        ];
        if (oldId) {
          items.push({
            Delete: {
              TableName: this.tables.main,
              Key: K.account(oldId),
              ConditionExpression: oldAccount ? 'dv = :dv' : 'attribute_not_exists(pk)',
              ...(oldAccount ? { ExpressionAttributeValues: { ':dv': oldAccount.dv as number } } : {}),
            },
          });
          for (const d of oldDevices) {
            items.push({
              Delete: {
                TableName: this.tables.main,
                Key: { pk: d.pk as string, sk: d.sk as string },
                ConditionExpression: 'attribute_exists(pk)',
              },
            });
          }
          items.push({
            Update: {
              TableName: this.tables.main,
              Key: K.head(oldId),
              UpdateExpression: 'SET gone = :t',
              ExpressionAttributeValues: { ':t': true },
            },
          });
          const deviceIds = new Set([1, 2, 3, 4, 5, 6, ...oldDevices.map((d) => d.deviceId as number)]);
          items.push(
            this.put({
              ...K.purge(randomUUID()),
              keys: oldDevices.map((d) => d.inc as string),
              queues: [...deviceIds].map((d) => K.queue(oldId, d)),
              notBefore: 0,
            }),
          );
        }
        try {
          await this.transact(items);
          return oldId ? { replacedAccountId: oldId } : {};
        } catch (error) {
          const codes = cancellationCodes(error);
          if (!codes && !isRetryable(error)) throw error;
          if (codes?.[0] === 'ConditionalCheckFailed') {
            await checkSession();
            throw new ApiError(409, 'verification_session_used', 'the verification session was already used');
          }
          if (codes?.[2] === 'ConditionalCheckFailed' || codes?.[3] === 'ConditionalCheckFailed') {
            throw new ApiError(409, 'account_exists', 'an account with this id exists');
          }
          if (attempt >= MAX_ATTEMPTS) throw error;
        }
      }
    } catch (error) {
      await this.discardKeys(inc);
      throw error;
    }
  }

  private accountPartition(accountId: string): QueryCommandInput {
    return {
      TableName: this.tables.main,
      KeyConditionExpression: 'pk = :pk',
      ExpressionAttributeValues: { ':pk': `A#${accountId}` },
    };
  }

  async getAccount(id: string): Promise<Account | null> {
    const item = await this.get(K.account(id));
    return item ? toAccount(item) : null;
  }

  async getAccountByNumber(number: string): Promise<Account | null> {
    const n = await this.get(K.number(number));
    return n ? this.getAccount(n.accountId as string) : null;
  }

  private async getDeviceItem(accountId: string, deviceId: number): Promise<Item | undefined> {
    return this.get(K.device(accountId, deviceId));
  }

  async getDevice(accountId: string, deviceId: number): Promise<Device | null> {
    const item = await this.getDeviceItem(accountId, deviceId);
    return item ? toDevice(item) : null;
  }

  private async deviceItems(accountId: string): Promise<Item[]> {
    const items = await this.queryAll({
      TableName: this.tables.main,
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :d)',
      ExpressionAttributeValues: { ':pk': `A#${accountId}`, ':d': 'D#' },
    });
    return items.sort((a, b) => (a.deviceId as number) - (b.deviceId as number));
  }

  async listDevices(accountId: string): Promise<Device[]> {
    return (await this.deviceItems(accountId)).map(toDevice);
  }

  async setPushSubscription(accountId: string, deviceId: number, subscription: string | null): Promise<void> {
    try {
      await this.db.send(
        new UpdateCommand({
          TableName: this.tables.main,
          Key: K.device(accountId, deviceId),
          ConditionExpression: 'attribute_exists(pk)',
          ...(subscription === null
            ? { UpdateExpression: 'REMOVE pushSubscription' }
            : { UpdateExpression: 'SET pushSubscription = :s', ExpressionAttributeValues: { ':s': subscription } }),
        }),
      );
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
    }
  }

  // ---- linked devices ----

  /** Puts `item` on the condition that its account exists; 404 otherwise. */
  private async putForAccount(accountId: string, item: Item): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) await backoff(attempt);
      try {
        await this.transact([
          {
            ConditionCheck: {
              TableName: this.tables.main,
              Key: K.account(accountId),
              ConditionExpression: 'attribute_exists(pk)',
            },
          },
          this.put(item),
        ]);
        return;
      } catch (error) {
        const codes = cancellationCodes(error);
        if (codes?.[0] === 'ConditionalCheckFailed') throw new ApiError(404, 'account_not_found', 'no such account');
        if ((!codes && !isRetryable(error)) || attempt >= MAX_ATTEMPTS) throw error;
      }
    }
  }

  private async accountExists(accountId: string): Promise<boolean> {
    return (await this.get(K.account(accountId))) !== undefined;
  }

  async insertLinkCode(code: LinkCode): Promise<void> {
    await this.putForAccount(code.accountId, {
      ...K.linkCode(code.codeHash),
      codeHash: code.codeHash,
      accountId: code.accountId,
      createdAt: code.createdAt,
      expiresAt: code.expiresAt,
      sweepAt: code.expiresAt,
      ttl: ttl(code.expiresAt),
    });
  }

  async getLinkCode(codeHash: Uint8Array): Promise<LinkCode | null> {
    const item = await this.get(K.linkCode(codeHash));
    if (!item || !(await this.accountExists(item.accountId as string))) return null;
    return {
      codeHash: bytes(item.codeHash),
      accountId: item.accountId as string,
      createdAt: item.createdAt as number,
      expiresAt: item.expiresAt as number,
    };
  }

  /** Sets the floor of a device's queue to a new position (dropping what is queued under its id). */
  private floorUpdate(accountId: string, deviceId: number, condition?: string): TransactItem {
    return {
      Update: {
        TableName: this.tables.main,
        Key: K.head(accountId),
        UpdateExpression: 'SET seq = if_not_exists(seq, :zero) + :one, #floor = if_not_exists(seq, :zero) + :one',
        ...(condition ? { ConditionExpression: condition } : {}),
        ExpressionAttributeNames: { '#floor': floorAttr(deviceId) },
        ExpressionAttributeValues: { ':zero': 0, ':one': 1 },
      },
    };
  }

  private bumpDevices(accountId: string): TransactItem {
    return {
      Update: {
        TableName: this.tables.main,
        Key: K.account(accountId),
        UpdateExpression: 'ADD dv :one',
        ConditionExpression: 'attribute_exists(pk)',
        ExpressionAttributeValues: { ':one': 1 },
      },
    };
  }

  async linkDevice(
    codeHash: Uint8Array,
    device: Omit<Device, 'deviceId'>,
    keys: NewKeys,
    now: number,
    maxDevices: number,
  ): Promise<Device> {
    const invalid = () => new ApiError(403, 'link_code_invalid', 'the link code is unknown, expired or already used');
    const checkCode = async () => {
      const code = await this.get(K.linkCode(codeHash));
      if (!code || (code.expiresAt as number) <= now || code.accountId !== device.accountId) throw invalid();
    };
    await checkCode();
    const { inc, intent } = await this.prepareKeys(keys);
    try {
      for (let attempt = 0; ; attempt++) {
        if (attempt > 0) await backoff(attempt);
        const taken = new Set((await this.deviceItems(device.accountId)).map((d) => d.deviceId as number));
        let deviceId = 2;
        while (taken.has(deviceId)) deviceId++;
        if (taken.size >= maxDevices || deviceId > maxDevices) {
          await checkCode();
          throw new ApiError(409, 'too_many_devices', `an account has at most ${maxDevices} devices`);
        }
        const linked: Device = { ...device, deviceId };
        try {
          await this.transact([
            {
              Delete: {
                TableName: this.tables.main,
                Key: K.linkCode(codeHash),
                ConditionExpression: 'attribute_exists(pk) AND accountId = :account AND expiresAt > :now',
                ExpressionAttributeValues: { ':account': device.accountId, ':now': now },
              },
            },
            this.bumpDevices(device.accountId),
            this.put(this.deviceItem(linked, inc, keys), 'attribute_not_exists(pk)'),
            this.floorUpdate(device.accountId, deviceId, 'attribute_not_exists(gone)'),
            intent,
            this.put({
              ...K.purge(randomUUID()),
              keys: [],
              queues: [K.queue(device.accountId, deviceId)],
              notBefore: 0,
            }),
          ]);
          return linked;
        } catch (error) {
          const codes = cancellationCodes(error);
          if (!codes && !isRetryable(error)) throw error;
          if (codes && [0, 1, 3].some((i) => codes[i] === 'ConditionalCheckFailed')) throw invalid();
          if (attempt >= MAX_ATTEMPTS) throw error;
          // The id was taken meanwhile, or a conflict: read the devices again.
        }
      }
    } catch (error) {
      await this.discardKeys(inc);
      throw error;
    }
  }

  async removeDevice(accountId: string, deviceId: number): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) await backoff(attempt);
      const item = await this.getDeviceItem(accountId, deviceId);
      if (!item) return false;
      try {
        await this.transact([
          {
            Delete: {
              TableName: this.tables.main,
              Key: K.device(accountId, deviceId),
              ConditionExpression: 'inc = :inc',
              ExpressionAttributeValues: { ':inc': item.inc as string },
            },
          },
          this.bumpDevices(accountId),
          this.floorUpdate(accountId, deviceId),
          this.put({
            ...K.purge(randomUUID()),
            keys: [item.inc as string],
            queues: [K.queue(accountId, deviceId)],
            notBefore: 0,
          }),
        ]);
        return true;
      } catch (error) {
        const codes = cancellationCodes(error);
        if ((!codes && !isRetryable(error)) || attempt >= MAX_ATTEMPTS) throw error;
        // A condition failed (removed or replaced meanwhile) or a conflict: look again.
      }
    }
  }

  async putProvisioningMessage(m: ProvisioningMessage): Promise<void> {
    await this.putForAccount(m.accountId, {
      ...K.provisioning(m.address),
      accountId: m.accountId,
      body: m.body,
      expiresAt: m.expiresAt,
      sweepAt: m.expiresAt,
      ttl: ttl(m.expiresAt),
    });
  }

  async takeProvisioningMessage(address: string, now: number): Promise<Uint8Array | null> {
    const item = await this.take('main', K.provisioning(address));
    if (!item || (item.expiresAt as number) <= now) return null;
    if (!(await this.accountExists(item.accountId as string))) return null;
    return bytes(item.body);
  }

  // ---- keys ----

  /** The one-time key items of an upload, deduplicated by id (the last wins). */
  private keyItems(inc: string, upload: KeyUpload, uploadId: string | undefined): Item[] {
    const items = new Map<string, Item>();
    const extra = uploadId ? { u: uploadId } : {};
    for (const k of upload.preKeys ?? []) {
      const sk = `${EC}${pad(k.keyId)}`;
      items.set(sk, { pk: K.keys(inc), sk, keyId: k.keyId, publicKey: k.publicKey, v: randomUUID(), ...extra });
    }
    for (const k of upload.pqPreKeys ?? []) {
      const sk = `${KY}${pad(k.keyId)}`;
      items.set(sk, {
        pk: K.keys(inc),
        sk,
        keyId: k.keyId,
        publicKey: k.publicKey,
        signature: k.signature,
        v: randomUUID(),
        ...extra,
      });
    }
    return [...items.values()];
  }

  private async purgeKeys(inc: string): Promise<void> {
    const items = await this.queryAll({
      TableName: this.tables.keys,
      KeyConditionExpression: 'pk = :pk',
      ExpressionAttributeValues: { ':pk': K.keys(inc) },
      ProjectionExpression: 'pk, sk',
    });
    await this.batchWrite(
      'keys',
      items.map((Key) => ({ DeleteRequest: { Key } })),
    );
  }

  /** Rejects with ApiError 404 when the device does not exist (e.g. its account was just replaced). */
  async storeKeys(accountId: string, deviceId: number, upload: KeyUpload): Promise<void> {
    const notFound = () => new ApiError(404, 'device_not_found', 'no such device');
    const sets: string[] = [];
    const values: Item = {};
    if (upload.signedPreKey) {
      sets.push('signed = :signed');
      values[':signed'] = keyMap(upload.signedPreKey);
    }
    if (upload.pqLastResortPreKey) {
      sets.push('lastResort = :lastResort');
      values[':lastResort'] = keyMap(upload.pqLastResortPreKey);
    }
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) await backoff(attempt);
      const device = await this.getDeviceItem(accountId, deviceId);
      if (!device) throw notFound();
      const inc = device.inc as string;
      const probe = this.keyItems(inc, upload, undefined);
      const size = probe.reduce((n, i) => n + itemBytes(i), 0);
      if (probe.length + 1 > MAX_TRANSACTION_ITEMS || size > MAX_TRANSACTION_BYTES) {
        return this.storeKeysInSteps(accountId, deviceId, inc, upload, sets, values);
      }
      const deviceOp: TransactItem =
        sets.length > 0
          ? {
              Update: {
                TableName: this.tables.main,
                Key: K.device(accountId, deviceId),
                UpdateExpression: `SET ${sets.join(', ')}`,
                ConditionExpression: 'inc = :inc',
                ExpressionAttributeValues: { ...values, ':inc': inc },
              },
            }
          : {
              ConditionCheck: {
                TableName: this.tables.main,
                Key: K.device(accountId, deviceId),
                ConditionExpression: 'inc = :inc',
                ExpressionAttributeValues: { ':inc': inc },
              },
            };
      try {
        await this.transact([deviceOp, ...probe.map((Item) => ({ Put: { TableName: this.tables.keys, Item } }))]);
        return;
      } catch (error) {
        const codes = cancellationCodes(error);
        if ((!codes && !isRetryable(error)) || attempt >= MAX_ATTEMPTS) throw error;
        // the device changed: read it again (404 if it is gone)
      }
    }
  }

  /**
   * An upload too large for one transaction: announced as pending on the device item, written,
   * then made visible in one update together with the signed keys. Readers ignore keys of an
   * upload that is still pending; a failed upload deletes what it wrote.
   */
  private async storeKeysInSteps(
    accountId: string,
    deviceId: number,
    inc: string,
    upload: KeyUpload,
    sets: string[],
    values: Item,
  ): Promise<void> {
    const uploadId = `${Date.now()}-${randomUUID()}`;
    const update = async (expression: string, extra: Item) => {
      try {
        await this.db.send(
          new UpdateCommand({
            TableName: this.tables.main,
            Key: K.device(accountId, deviceId),
            UpdateExpression: expression,
            ConditionExpression: 'inc = :inc',
            ExpressionAttributeValues: { ...extra, ':inc': inc, ':u': new Set([uploadId]) },
          }),
        );
      } catch (error) {
        if (isConditionFailure(error)) throw new ApiError(404, 'device_not_found', 'no such device');
        throw error;
      }
    };
    await update('ADD pending :u', {});
    const items = this.keyItems(inc, upload, uploadId);
    try {
      await this.batchWrite(
        'keys',
        items.map((Item) => ({ PutRequest: { Item } })),
      );
      await update(['DELETE pending :u', ...(sets.length > 0 ? [`SET ${sets.join(', ')}`] : [])].join(' '), values);
    } catch (error) {
      try {
        await this.batchWrite(
          'keys',
          items.map((i) => ({ DeleteRequest: { Key: { pk: i.pk, sk: i.sk } } })),
        );
        await update('DELETE pending :u', {});
      } catch (cleanup) {
        this.cleanupFailed(cleanup);
      }
      throw error;
    }
  }

  private pendingUploads(device: Item): Set<string> {
    return (device.pending as Set<string> | undefined) ?? new Set();
  }

  async countKeys(accountId: string, deviceId: number): Promise<{ preKeys: number; pqPreKeys: number }> {
    const device = await this.getDeviceItem(accountId, deviceId);
    if (!device) return { preKeys: 0, pqPreKeys: 0 };
    const pending = this.pendingUploads(device);
    const count = async (prefix: string) => {
      let n = 0;
      let start: Item | undefined;
      do {
        const out = await this.db.send(
          new QueryCommand({
            TableName: this.tables.keys,
            KeyConditionExpression: 'pk = :pk AND begins_with(sk, :prefix)',
            ExpressionAttributeValues: { ':pk': K.keys(device.inc as string), ':prefix': prefix },
            ConsistentRead: true,
            ...(pending.size > 0 ? { ProjectionExpression: 'u' } : { Select: 'COUNT' }),
            ...(start ? { ExclusiveStartKey: start } : {}),
          }),
        );
        n += pending.size > 0 ? (out.Items ?? []).filter((i) => !pending.has(i.u as string)).length : (out.Count ?? 0);
        start = out.LastEvaluatedKey;
      } while (start);
      return n;
    };
    const [preKeys, pqPreKeys] = await Promise.all([count(EC), count(KY)]);
    return { preKeys, pqPreKeys };
  }

  /** Removes and returns one visible one-time key with this prefix, or undefined if none is left. */
  private async takeOneTimeKey(inc: string, prefix: string, pending: Set<string>): Promise<Item | undefined> {
    let start: Item | undefined;
    for (let attempt = 0; attempt < MAX_ATTEMPTS * 4; attempt++) {
      const out = await this.db.send(
        new QueryCommand({
          TableName: this.tables.keys,
          KeyConditionExpression: 'pk = :pk AND begins_with(sk, :prefix)',
          ExpressionAttributeValues: { ':pk': K.keys(inc), ':prefix': prefix },
          ConsistentRead: true,
          Limit: KEY_CANDIDATES,
          ...(start ? { ExclusiveStartKey: start } : {}),
        }),
      );
      const candidates = (out.Items ?? []).filter((i) => !pending.has(i.u as string));
      if (candidates.length === 0) {
        if (!out.LastEvaluatedKey) return undefined;
        start = out.LastEvaluatedKey; // only keys of pending uploads here: look further
        continue;
      }
      start = undefined;
      while (candidates.length > 0) {
        const [pick] = candidates.splice(Math.floor(Math.random() * candidates.length), 1) as [Item];
        try {
          await this.db.send(
            new DeleteCommand({
              TableName: this.tables.keys,
              Key: { pk: pick.pk, sk: pick.sk },
              ConditionExpression: 'v = :v',
              ExpressionAttributeValues: { ':v': pick.v },
            }),
          );
          return pick;
        } catch (error) {
          if (!isConditionFailure(error)) throw error;
          // taken by someone else (or replaced): try another
        }
      }
    }
    throw new Error('takeKeys: too much contention');
  }

  async takeKeys(accountId: string, deviceId: number): Promise<TakenKeys | null> {
    const device = await this.getDeviceItem(accountId, deviceId);
    if (!device?.signed || !device.lastResort) return null;
    const inc = device.inc as string;
    const pending = this.pendingUploads(device);
    const [ec, kyber] = await Promise.all([
      this.takeOneTimeKey(inc, EC, pending),
      this.takeOneTimeKey(inc, KY, pending),
    ]);
    const preKey: ECPreKey | undefined = ec ? { keyId: ec.keyId as number, publicKey: bytes(ec.publicKey) } : undefined;
    return {
      signedPreKey: toSigned(device.signed as Item),
      ...(preKey ? { preKey } : {}),
      pqPreKey: kyber ? toKyber(kyber) : toKyber(device.lastResort as Item),
      pqLastResort: !kyber,
    };
  }

  // ---- messages ----

  private async readHeads(accountIds: string[]): Promise<Map<string, Head>> {
    const items = await this.batchGet(accountIds.map(K.head));
    return new Map(accountIds.map((id) => [id, toHead(items.get(K.head(id).pk))]));
  }

  /** Moves an account's `seq` by `count` on the condition that it is as read and not gone. */
  private headUpdate(accountId: string, head: Head, count: number): TransactItem {
    return {
      Update: {
        TableName: this.tables.main,
        Key: K.head(accountId),
        UpdateExpression: 'SET seq = :seq',
        ConditionExpression:
          head.rawSeq === undefined
            ? 'attribute_not_exists(seq) AND attribute_not_exists(gone)'
            : 'seq = :old AND attribute_not_exists(gone)',
        ExpressionAttributeValues: {
          ':seq': head.seq + count,
          ...(head.rawSeq === undefined ? {} : { ':old': head.rawSeq }),
        },
      },
    };
  }

  private envelopeItem(e: Envelope, pos: number, payloadId: string | undefined, sendId?: string, deadline?: number) {
    return {
      pk: K.queue(e.destinationAccountId, e.destinationDeviceId),
      sk: e.guid,
      pos,
      type: e.type,
      src: e.sourceAccountId,
      srcDevice: e.sourceDeviceId,
      ts: e.timestamp,
      sts: e.serverTimestamp,
      exp: e.expiresAt,
      ttl: ttl(e.expiresAt),
      ...(payloadId ? { p: payloadId } : { content: e.content }),
      ...(sendId ? { s: sendId, sd: deadline as number } : {}),
    };
  }

  private envelopePut(item: Item): TransactItem {
    return { Put: { TableName: this.tables.messages, Item: item, ConditionExpression: 'attribute_not_exists(pk)' } };
  }

  private receiptItem(receipt: SendReceipt, gen: string): Item {
    return {
      ...K.receipt(receipt, gen),
      expiresAt: receipt.expiresAt,
      sweepAt: receipt.expiresAt,
      ttl: ttl(receipt.expiresAt),
    };
  }

  /**
   * A receipt that is still stored counts as seen, also after its expiresAt, until `deleteExpired`
   * (or TTL) removes it. Envelopes for an account whose number was re-registered meanwhile are
   * dropped (as the re-registration would have dropped them).
   */
  async insertEnvelopes(envelopes: Envelope[], receipt?: SendReceipt): Promise<boolean> {
    for (const e of envelopes) {
      if (e.content.byteLength > MAX_CONTENT_BYTES)
        throw new Error(`an envelope's content exceeds ${MAX_CONTENT_BYTES} bytes`);
    }
    if (envelopes.length === 0 && !receipt) return true;
    // Envelopes sharing one content (a multi-recipient send) share one payload item.
    const byContent = new Map<Uint8Array, Envelope[]>();
    for (const e of envelopes) byContent.set(e.content, [...(byContent.get(e.content) ?? []), e]);
    const payloadOf = new Map<Envelope, string>();
    const payloads: { id: string; content: Uint8Array; users: Envelope[] }[] = [];
    for (const [content, users] of byContent) {
      if (users.length < 2) continue;
      const id = randomUUID();
      payloads.push({ id, content, users });
      for (const e of users) payloadOf.set(e, id);
    }
    const byAccount = new Map<string, Envelope[]>();
    for (const e of envelopes) {
      byAccount.set(e.destinationAccountId, [...(byAccount.get(e.destinationAccountId) ?? []), e]);
    }
    const accounts = [...byAccount.keys()];

    let items = 0;
    let size = receipt ? 300 : 0;
    for (const p of payloads) size += p.content.byteLength + 300;
    for (const e of envelopes) size += (payloadOf.has(e) ? 0 : e.content.byteLength) + 400;
    items = (receipt ? 1 : 0) + payloads.length + accounts.length + envelopes.length;
    if (items > MAX_TRANSACTION_ITEMS || size > MAX_TRANSACTION_BYTES) {
      return this.insertInChunks(byAccount, payloads, payloadOf, receipt);
    }

    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) await backoff(attempt);
      const heads = await this.readHeads(receipt ? [...accounts, receipt.sourceAccountId] : accounts);
      const ops: TransactItem[] = [];
      if (receipt) {
        const gen = receiptGen(heads.get(receipt.sourceAccountId) as Head, receipt.sourceDeviceId);
        ops.push(this.put(this.receiptItem(receipt, gen), 'attribute_not_exists(pk)'));
      }
      const written = new Map<string, number>();
      const views: TransactItem[] = [];
      for (const [accountId, list] of byAccount) {
        const head = heads.get(accountId) as Head;
        if (head.gone) continue;
        ops.push(this.headUpdate(accountId, head, list.length));
        list.forEach((e, i) => {
          const payloadId = payloadOf.get(e);
          if (payloadId) written.set(payloadId, (written.get(payloadId) ?? 0) + 1);
          views.push(this.envelopePut(this.envelopeItem(e, head.seq + 1 + i, payloadId)));
        });
      }
      for (const p of payloads) {
        const refs = written.get(p.id);
        if (!refs) continue;
        const sweepAt = Math.max(...p.users.map((e) => e.expiresAt));
        ops.push(this.put({ ...K.payload(p.id), content: p.content, refs, sweepAt, ttl: ttl(sweepAt) }));
      }
      ops.push(...views);
      if (ops.length === 0) return true;
      try {
        await this.transact(ops);
        return true;
      } catch (error) {
        const codes = cancellationCodes(error);
        if (receipt && codes?.[0] === 'ConditionalCheckFailed') return false;
        if ((!codes && !isRetryable(error)) || attempt >= MAX_ATTEMPTS) throw error;
        // a queue head moved (or an account was replaced) meanwhile: read the heads again
      }
    }
  }

  /** A send too large for one transaction: chunks of views, then one commit (see the top). */
  private async insertInChunks(
    byAccount: Map<string, Envelope[]>,
    payloads: { id: string; content: Uint8Array; users: Envelope[] }[],
    payloadOf: Map<Envelope, string>,
    receipt: SendReceipt | undefined,
  ): Promise<boolean> {
    const sendId = randomUUID();
    const deadline = Date.now() + SEND_COMMIT_DEADLINE_MS;
    const written: Item[] = [];
    let maxExpiry = receipt?.expiresAt ?? 0;
    for (const list of byAccount.values()) for (const e of list) maxExpiry = Math.max(maxExpiry, e.expiresAt);
    const dropped = new Map<string, number>();
    const abort = async () => {
      try {
        await this.db.send(
          new PutCommand({
            TableName: this.tables.main,
            Item: { ...K.send(sendId), state: 'aborted', sweepAt: maxExpiry, ttl: ttl(maxExpiry) },
            ConditionExpression: 'attribute_not_exists(pk)',
          }),
        );
      } catch (error) {
        if (!isConditionFailure(error)) this.cleanupFailed(error);
      }
      try {
        await this.batchWrite(
          'messages',
          written.map((i) => ({ DeleteRequest: { Key: { pk: i.pk, sk: i.sk } } })),
        );
        await this.batchWrite(
          'main',
          payloads.map((p) => ({ DeleteRequest: { Key: K.payload(p.id) } })),
        );
      } catch (error) {
        this.cleanupFailed(error);
      }
    };
    try {
      for (const p of payloads) {
        const sweepAt = Math.max(...p.users.map((e) => e.expiresAt));
        await this.db.send(
          new PutCommand({
            TableName: this.tables.main,
            Item: { ...K.payload(p.id), content: p.content, refs: p.users.length, sweepAt, ttl: ttl(sweepAt) },
          }),
        );
      }
      // Accounts in chunks that fit one transaction each.
      const chunks: string[][] = [];
      let chunk: string[] = [];
      let items = 0;
      let size = 0;
      for (const [accountId, list] of byAccount) {
        const n = 1 + list.length;
        const s = list.reduce((t, e) => t + (payloadOf.has(e) ? 0 : e.content.byteLength) + 500, 300);
        if (n > MAX_TRANSACTION_ITEMS || s > MAX_TRANSACTION_BYTES) {
          throw new Error('one account gets more envelopes in one send than a transaction holds');
        }
        if (chunk.length > 0 && (items + n > MAX_TRANSACTION_ITEMS || size + s > MAX_TRANSACTION_BYTES)) {
          chunks.push(chunk);
          chunk = [];
          items = 0;
          size = 0;
        }
        chunk.push(accountId);
        items += n;
        size += s;
      }
      if (chunk.length > 0) chunks.push(chunk);
      for (const accounts of chunks) {
        for (let attempt = 0; ; attempt++) {
          if (attempt > 0) await backoff(attempt);
          const heads = await this.readHeads(accounts);
          const ops: TransactItem[] = [];
          const views: Item[] = [];
          for (const accountId of accounts) {
            const head = heads.get(accountId) as Head;
            const list = byAccount.get(accountId) as Envelope[];
            if (head.gone) {
              for (const e of list) {
                const p = payloadOf.get(e);
                if (p) dropped.set(p, (dropped.get(p) ?? 0) + 1);
              }
              continue;
            }
            ops.push(this.headUpdate(accountId, head, list.length));
            list.forEach((e, i) => {
              views.push(this.envelopeItem(e, head.seq + 1 + i, payloadOf.get(e), sendId, deadline));
            });
          }
          if (ops.length === 0) break;
          try {
            await this.transact([...ops, ...views.map((v) => this.envelopePut(v))]);
            written.push(...views);
            break;
          } catch (error) {
            const codes = cancellationCodes(error);
            if ((!codes && !isRetryable(error)) || attempt >= MAX_ATTEMPTS) throw error;
          }
        }
      }
      // The commit: one conditional put decides (with the receipt, if any).
      const commit = this.put(
        { ...K.send(sendId), state: 'committed', sweepAt: maxExpiry, ttl: ttl(maxExpiry) },
        'attribute_not_exists(pk)',
      );
      for (let attempt = 0; ; attempt++) {
        if (attempt > 0) await backoff(attempt);
        try {
          if (receipt) {
            const head = (await this.readHeads([receipt.sourceAccountId])).get(receipt.sourceAccountId) as Head;
            const gen = receiptGen(head, receipt.sourceDeviceId);
            await this.transact([commit, this.put(this.receiptItem(receipt, gen), 'attribute_not_exists(pk)')]);
          } else {
            await this.transact([commit]);
          }
          break;
        } catch (error) {
          const codes = cancellationCodes(error);
          if (codes?.[1] === 'ConditionalCheckFailed') {
            await abort();
            return false;
          }
          if (codes?.[0] === 'ConditionalCheckFailed') {
            throw new Error('the send was not committed in time and was aborted');
          }
          if ((!codes && !isRetryable(error)) || attempt >= MAX_ATTEMPTS) throw error;
        }
      }
      this.committedSends.add(sendId);
    } catch (error) {
      await abort();
      throw error;
    }
    for (const [payloadId, count] of dropped) await this.releasePayload(payloadId, count);
    return true;
  }

  /** committed / aborted, or pending while its writer may still commit it. */
  private async sendState(sendId: string, deadline: number): Promise<'committed' | 'aborted' | 'pending'> {
    if (this.committedSends.has(sendId)) return 'committed';
    for (;;) {
      const record = await this.get(K.send(sendId));
      if (record) {
        if (record.state === 'committed') {
          if (this.committedSends.size > 100_000) this.committedSends.clear();
          this.committedSends.add(sendId);
          return 'committed';
        }
        return 'aborted';
      }
      if (Date.now() <= deadline) return 'pending';
      try {
        await this.db.send(
          new PutCommand({
            TableName: this.tables.main,
            // Kept past the expiry of any view of the send (30 days after it was stored).
            Item: {
              ...K.send(sendId),
              state: 'aborted',
              sweepAt: deadline + 31 * DAY_MS,
              ttl: ttl(deadline + 31 * DAY_MS),
            },
            ConditionExpression: 'attribute_not_exists(pk)',
          }),
        );
        return 'aborted';
      } catch (error) {
        if (!isConditionFailure(error)) throw error;
      }
    }
  }

  private async releasePayload(payloadId: string, count = 1): Promise<void> {
    try {
      const out = await this.db.send(
        new UpdateCommand({
          TableName: this.tables.main,
          Key: K.payload(payloadId),
          UpdateExpression: 'ADD refs :minus',
          ConditionExpression: 'attribute_exists(pk)',
          ExpressionAttributeValues: { ':minus': -count },
          ReturnValues: 'UPDATED_NEW',
        }),
      );
      if ((out.Attributes?.refs as number) <= 0) {
        await this.db.send(
          new DeleteCommand({
            TableName: this.tables.main,
            Key: K.payload(payloadId),
            ConditionExpression: 'refs <= :zero',
            ExpressionAttributeValues: { ':zero': 0 },
          }),
        );
      }
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
    }
  }

  private async queryQueue(queue: string, after: number, limit: number, start?: Item) {
    return this.db.send(
      new QueryCommand({
        TableName: this.tables.messages,
        IndexName: BY_POSITION_INDEX,
        KeyConditionExpression: 'pk = :pk AND pos > :after',
        ExpressionAttributeValues: { ':pk': queue, ':after': after },
        ConsistentRead: true,
        Limit: limit,
        ...(start ? { ExclusiveStartKey: start } : {}),
      }),
    );
  }

  /** An envelope is expired when `expiresAt <= now`. Rejects with ApiError 400 on a malformed cursor. */
  async fetchQueue(
    accountId: string,
    deviceId: number,
    limit: number,
    now: number,
    afterCursor?: string,
  ): Promise<QueuedEnvelope[]> {
    const after = parseCursor(afterCursor);
    const count = Math.max(0, Math.floor(limit));
    if (count === 0) return [];
    const queue = K.queue(accountId, deviceId);
    // The head (for the floor) and the first page in parallel; read again from the floor if the
    // page started below it (only after a device was removed or linked under this id).
    const [head, first] = await Promise.all([
      this.readHeads([accountId]).then((h) => h.get(accountId) as Head),
      this.queryQueue(queue, after, count),
    ]);
    if (head.gone) return [];
    const floor = head.floor(deviceId);
    let page = floor > after ? await this.queryQueue(queue, floor, count) : first;
    const found: Item[] = [];
    outer: for (;;) {
      for (const item of page.Items ?? []) {
        if ((item.exp as number) <= now) continue;
        if (item.s) {
          const state = await this.sendState(item.s as string, item.sd as number);
          if (state === 'pending') break outer; // FIFO: nothing after an undecided send yet
          if (state === 'aborted') continue;
        }
        found.push(item);
        if (found.length === count) break outer;
      }
      if (!page.LastEvaluatedKey) break;
      page = await this.queryQueue(queue, after, count - found.length, page.LastEvaluatedKey);
    }
    const payloadIds = [...new Set(found.flatMap((i) => (i.p ? [i.p as string] : [])))];
    const payloads = payloadIds.length > 0 ? await this.batchGet(payloadIds.map(K.payload)) : new Map();
    const result: QueuedEnvelope[] = [];
    for (const i of found) {
      const content = i.p ? payloads.get(K.payload(i.p as string).pk)?.content : i.content;
      if (content === undefined) continue; // its payload expired
      result.push({
        guid: i.sk as string,
        type: i.type as number,
        sourceAccountId: i.src as string,
        sourceDeviceId: i.srcDevice as number,
        destinationAccountId: accountId,
        destinationDeviceId: deviceId,
        timestamp: i.ts as number,
        serverTimestamp: i.sts as number,
        content: bytes(content),
        expiresAt: i.exp as number,
        cursor: String(i.pos),
      });
    }
    return result;
  }

  /** Deletes one envelope from this device's queue only; false if it was not there (or unreachable). */
  async deleteEnvelope(accountId: string, deviceId: number, guid: string): Promise<boolean> {
    const [old, head] = await Promise.all([
      this.take('messages', { pk: K.queue(accountId, deviceId), sk: guid }),
      this.readHeads([accountId]).then((h) => h.get(accountId) as Head),
    ]);
    if (!old) return false;
    if (old.p) await this.releasePayload(old.p as string);
    if (head.gone || (old.pos as number) <= head.floor(deviceId)) return false;
    if (old.s && (await this.sendState(old.s as string, old.sd as number)) !== 'committed') return false;
    return true;
  }

  async countQueue(accountId: string, deviceId: number, now: number): Promise<number> {
    const head = (await this.readHeads([accountId])).get(accountId) as Head;
    if (head.gone) return 0;
    const items = await this.queryAll({
      TableName: this.tables.messages,
      IndexName: BY_POSITION_INDEX,
      KeyConditionExpression: 'pk = :pk AND pos > :floor',
      ExpressionAttributeValues: { ':pk': K.queue(accountId, deviceId), ':floor': head.floor(deviceId) },
      ProjectionExpression: 'exp, s, sd',
    });
    let n = 0;
    for (const i of items) {
      if ((i.exp as number) <= now) continue;
      if (i.s && (await this.sendState(i.s as string, i.sd as number)) !== 'committed') continue;
      n++;
    }
    return n;
  }

  private async scanAll(table: TableName, filter: string, values: Item, projection: string): Promise<Item[]> {
    const items: Item[] = [];
    let start: Item | undefined;
    do {
      const out = await this.db.send(
        new ScanCommand({
          TableName: this.tables[table],
          FilterExpression: filter,
          ExpressionAttributeValues: values,
          ProjectionExpression: projection,
          ConsistentRead: true,
          ...(start ? { ExclusiveStartKey: start } : {}),
        }),
      );
      items.push(...(out.Items ?? []));
      start = out.LastEvaluatedKey;
    } while (start);
    return items;
  }

  /** Deletes the queue items a purge record names: below the floor, or all of a gone account. */
  private async purgeQueue(queue: string): Promise<void> {
    const cut = queue.lastIndexOf('#');
    const accountId = queue.slice(0, cut);
    const deviceId = Number(queue.slice(cut + 1));
    const head = (await this.readHeads([accountId])).get(accountId) as Head;
    const items = await this.queryAll({
      TableName: this.tables.messages,
      IndexName: BY_POSITION_INDEX,
      KeyConditionExpression: head.gone ? 'pk = :pk' : 'pk = :pk AND pos <= :floor',
      ExpressionAttributeValues: { ':pk': queue, ...(head.gone ? {} : { ':floor': head.floor(deviceId) }) },
      ProjectionExpression: 'pk, sk, p',
    });
    await parallel(items, async (i) => {
      const old = await this.take('messages', { pk: i.pk, sk: i.sk });
      if (old?.p) await this.releasePayload(old.p as string);
    });
  }

  /**
   * Drops expired envelopes, receipts, link codes, provisioning messages, ended rate-limit windows
   * and old verification sessions (everything whose `sweepAt` / `exp` has come), and carries out
   * purge records (unreachable keys and queues). Scans: meant for tests and local runs; in the
   * cloud TTL does the same. Returns how many envelopes went.
   */
  async deleteExpired(now: number): Promise<number> {
    const main = await this.scanAll('main', 'sweepAt <= :now', { ':now': now }, 'pk, sk');
    await parallel(main, async (key) => {
      try {
        await this.db.send(
          new DeleteCommand({
            TableName: this.tables.main,
            Key: key,
            ConditionExpression: 'sweepAt <= :now',
            ExpressionAttributeValues: { ':now': now },
          }),
        );
      } catch (error) {
        if (!isConditionFailure(error)) throw error;
      }
    });
    const expired = await this.scanAll('messages', 'exp <= :now', { ':now': now }, 'pk, sk');
    let envelopes = 0;
    await parallel(expired, async (key) => {
      try {
        const out = await this.db.send(
          new DeleteCommand({
            TableName: this.tables.messages,
            Key: key,
            ConditionExpression: 'exp <= :now',
            ExpressionAttributeValues: { ':now': now },
            ReturnValues: 'ALL_OLD',
          }),
        );
        envelopes++;
        if (out.Attributes?.p) await this.releasePayload(out.Attributes.p as string);
      } catch (error) {
        if (!isConditionFailure(error)) throw error;
      }
    });
    await this.runPurges();
    return envelopes;
  }

  /**
   * Runs the purge records only (what became unreachable: queues and keys of removed devices and
   * replaced accounts), without `deleteExpired`'s scans: enough where DynamoDB's TTL deletes what
   * expires (the cloud).
   */
  async runPurges(): Promise<void> {
    const records = await this.queryAll({
      TableName: this.tables.main,
      KeyConditionExpression: 'pk = :pk',
      FilterExpression: 'notBefore <= :now',
      ExpressionAttributeValues: { ':pk': 'purge', ':now': Date.now() },
    });
    for (const r of records) {
      for (const inc of (r.keys as string[] | undefined) ?? []) await this.purgeKeys(inc);
      for (const queue of (r.queues as string[] | undefined) ?? []) await this.purgeQueue(queue);
      await this.db.send(new DeleteCommand({ TableName: this.tables.main, Key: { pk: r.pk, sk: r.sk } }));
    }
  }
}
