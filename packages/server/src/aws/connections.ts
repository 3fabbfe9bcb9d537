import { randomBytes } from 'node:crypto';
import {
  ApiGatewayManagementApiClient,
  DeleteConnectionCommand,
  PostToConnectionCommand,
} from '@aws-sdk/client-apigatewaymanagementapi';
import {
  DeleteCommand,
  type DynamoDBDocumentClient,
  GetCommand,
  QueryCommand,
  TransactWriteCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import type { Logger } from 'pino';
import type { Clock, DeliveryNotifier, Device, PushSender, Storage } from '../core/ports.ts';
import { envelopeJson } from '../http/app.ts';
import { tableNames } from '../storage/dynamodb/tables.ts';

/*
 * Live delivery on API Gateway WebSocket APIs. There is no process that holds a socket: a
 * connection is a row, and every Lambda that stores an envelope (or gets an ack) delivers by
 * posting frames to the connection through the @connections API. The frames are the standalone
 * socket's (src/ws/socket-server.ts): envelope, queue-empty, response, error.
 *
 * Table `<prefix>connections` (pk, sk; TTL on `ttl`), two items per connection, written and
 * deleted together:
 *   C#<connectionId> / C          the connection: accountId, deviceId, passwordHash (to notice a
 *                                 re-registered or re-linked device), and its delivery state:
 *                                 cursor (last envelope posted), backlogDone (queue-empty sent),
 *                                 more (a drain stopped at its window), lease/leaseUntil/dirty
 *   D#<accountId>#<deviceId> / <connectionId>   the device's connections, for notify (a strongly
 *                                 consistent Query, no GSI lag)
 *
 * One drainer per connection at a time, as the standalone Connection.drain: a drainer takes a
 * short lease with a conditional update; whoever finds the lease taken sets `dirty` instead, and
 * the holder releases only on the condition that `dirty` is still false, else drains once more.
 * So frames on one connection leave in FIFO order, nothing stored is skipped, and a notify never
 * waits for another one. A drain posts at most WINDOW envelopes, then sets `more`; the next ack
 * drains on (the standalone's in-flight window, without counting every ack in the table).
 */

const WINDOW = 256;
const PAGE = 100;
/** A drainer that died keeps the lease this long at most (a Lambda's own timeout is shorter). */
const LEASE_MS = 30_000;
/** API Gateway keeps a WebSocket connection at most 2 hours; rows outlive it a little. */
const CONNECTION_TTL_S = 3 * 60 * 60;
/**
 * Right after $connect the connection may not accept posts yet (API Gateway answers 410 until
 * $connect's answer went through): a young connection whose row exists is retried for this long.
 */
const YOUNG_CONNECTION_MS = 10_000;

export interface ConnectionRecord {
  connectionId: string;
  accountId: string;
  deviceId: number;
  passwordHash: Uint8Array;
  connectedAt: number;
  cursor?: string;
  backlogDone: boolean;
  more: boolean;
  lease?: string;
  leaseUntil?: number;
}

export type PostResult = 'ok' | 'gone' | 'too_large';

/** The @connections API (API Gateway Management API). */
export interface ConnectionsApi {
  post(connectionId: string, data: string): Promise<PostResult>;
  /** Closes the connection; false when it was gone already. */
  close(connectionId: string): Promise<boolean>;
}

export class ManagementApi implements ConnectionsApi {
  constructor(readonly client: ApiGatewayManagementApiClient) {}

  static create(
    endpoint: string,
    aws: { region: string; credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string } },
  ) {
    return new ManagementApi(
      new ApiGatewayManagementApiClient({
        endpoint,
        region: aws.region,
        ...(aws.credentials ? { credentials: aws.credentials } : {}),
      }),
    );
  }

  async post(connectionId: string, data: string): Promise<PostResult> {
    try {
      await this.client.send(
        new PostToConnectionCommand({ ConnectionId: connectionId, Data: new TextEncoder().encode(data) }),
      );
      return 'ok';
    } catch (error) {
      const e = error as { name?: string; $metadata?: { httpStatusCode?: number } };
      if (e.name === 'GoneException' || e.$metadata?.httpStatusCode === 410) return 'gone';
      if (e.name === 'PayloadTooLargeException' || e.$metadata?.httpStatusCode === 413) return 'too_large';
      throw error;
    }
  }

  async close(connectionId: string): Promise<boolean> {
    try {
      await this.client.send(new DeleteConnectionCommand({ ConnectionId: connectionId }));
      return true;
    } catch (error) {
      const e = error as { name?: string; $metadata?: { httpStatusCode?: number } };
      if (e.name === 'GoneException' || e.$metadata?.httpStatusCode === 410) return false;
      throw error;
    }
  }
}

const b64 = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
const isConditionFailure = (error: unknown) =>
  (error as { name?: string }).name === 'ConditionalCheckFailedException' ||
  (error as { name?: string }).name === 'TransactionCanceledException';

/** The connections table. */
export class ConnectionStore {
  readonly table: string;

  constructor(
    private readonly db: DynamoDBDocumentClient,
    prefix: string,
  ) {
    this.table = tableNames(prefix).connections;
  }

  async add(connectionId: string, device: Device, now: number): Promise<void> {
    const ttl = Math.floor(now / 1000) + CONNECTION_TTL_S;
    await this.db.send(
      new TransactWriteCommand({
        TransactItems: [
          {
            Put: {
              TableName: this.table,
              Item: {
                pk: `C#${connectionId}`,
                sk: 'C',
                accountId: device.accountId,
                deviceId: device.deviceId,
                passwordHash: b64(device.passwordHash),
                connectedAt: now,
                backlogDone: false,
                more: false,
                ttl,
              },
            },
          },
          {
            Put: {
              TableName: this.table,
              Item: { pk: deviceKey(device.accountId, device.deviceId), sk: connectionId, ttl },
            },
          },
        ],
      }),
    );
  }

  async get(connectionId: string): Promise<ConnectionRecord | null> {
    const out = await this.db.send(
      new GetCommand({ TableName: this.table, Key: { pk: `C#${connectionId}`, sk: 'C' }, ConsistentRead: true }),
    );
    return out.Item ? toRecord(connectionId, out.Item) : null;
  }

  async byDevice(accountId: string, deviceId: number): Promise<string[]> {
    const ids: string[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const out = await this.db.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: 'pk = :pk',
          ExpressionAttributeValues: { ':pk': deviceKey(accountId, deviceId) },
          ConsistentRead: true,
          ...(start ? { ExclusiveStartKey: start } : {}),
        }),
      );
      for (const item of out.Items ?? []) ids.push(item.sk as string);
      start = out.LastEvaluatedKey;
    } while (start);
    return ids;
  }

  /** Removes both items of a connection ($disconnect, or a post answered 410). */
  async remove(connectionId: string, known?: { accountId: string; deviceId: number }): Promise<void> {
    let owner = known;
    if (!owner) {
      const out = await this.db.send(
        new DeleteCommand({
          TableName: this.table,
          Key: { pk: `C#${connectionId}`, sk: 'C' },
          ReturnValues: 'ALL_OLD',
        }),
      );
      if (!out.Attributes) return;
      owner = { accountId: out.Attributes.accountId as string, deviceId: out.Attributes.deviceId as number };
    } else {
      await this.db.send(new DeleteCommand({ TableName: this.table, Key: { pk: `C#${connectionId}`, sk: 'C' } }));
    }
    await this.db.send(
      new DeleteCommand({
        TableName: this.table,
        Key: { pk: deviceKey(owner.accountId, owner.deviceId), sk: connectionId },
      }),
    );
  }

  /**
   * Takes the connection's drain lease; when another drainer holds it, marks the connection dirty
   * (that drainer drains once more) and returns null. Null too when the connection is gone.
   */
  async acquire(connectionId: string, now: number): Promise<{ record: ConnectionRecord; lease: string } | null> {
    const lease = randomBytes(12).toString('base64url');
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const out = await this.db.send(
          new UpdateCommand({
            TableName: this.table,
            Key: { pk: `C#${connectionId}`, sk: 'C' },
            UpdateExpression: 'SET lease = :lease, leaseUntil = :until, dirty = :false',
            ConditionExpression: 'attribute_exists(pk) AND (attribute_not_exists(lease) OR leaseUntil < :now)',
            ExpressionAttributeValues: { ':lease': lease, ':until': now + LEASE_MS, ':now': now, ':false': false },
            ReturnValues: 'ALL_NEW',
          }),
        );
        return { record: toRecord(connectionId, out.Attributes ?? {}), lease };
      } catch (error) {
        if (!isConditionFailure(error)) throw error;
      }
      try {
        await this.db.send(
          new UpdateCommand({
            TableName: this.table,
            Key: { pk: `C#${connectionId}`, sk: 'C' },
            UpdateExpression: 'SET dirty = :true',
            ConditionExpression: 'attribute_exists(lease) AND leaseUntil >= :now',
            ExpressionAttributeValues: { ':true': true, ':now': now },
          }),
        );
        return null;
      } catch (error) {
        if (!isConditionFailure(error)) throw error;
        // The lease was released (or the connection is gone) in between: try to take it again.
      }
    }
    return null;
  }

  /**
   * Saves the drain's progress and releases the lease if no one marked the connection dirty
   * meanwhile: 'released'. Otherwise keeps the lease, clears dirty: 'again' (drain once more).
   * 'lost' when the lease is no longer ours (it timed out, or the connection is gone).
   */
  async release(
    connectionId: string,
    lease: string,
    state: { cursor: string | undefined; backlogDone: boolean; more: boolean },
  ): Promise<'released' | 'again' | 'lost'> {
    const values = {
      ':lease': lease,
      ':backlogDone': state.backlogDone,
      ':more': state.more,
      ...(state.cursor !== undefined ? { ':cursor': state.cursor } : {}),
    };
    const set = `backlogDone = :backlogDone, more = :more${state.cursor !== undefined ? ', #cursor = :cursor' : ''}`;
    const names = state.cursor !== undefined ? { ExpressionAttributeNames: { '#cursor': 'cursor' } } : {};
    try {
      await this.db.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { pk: `C#${connectionId}`, sk: 'C' },
          UpdateExpression: `SET ${set} REMOVE lease, leaseUntil, dirty`,
          ConditionExpression: 'lease = :lease AND (attribute_not_exists(dirty) OR dirty = :false)',
          ExpressionAttributeValues: { ...values, ':false': false },
          ...names,
        }),
      );
      return 'released';
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
    }
    try {
      await this.db.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { pk: `C#${connectionId}`, sk: 'C' },
          UpdateExpression: `SET ${set}, dirty = :false`,
          ConditionExpression: 'lease = :lease',
          ExpressionAttributeValues: { ...values, ':false': false },
          ...names,
        }),
      );
      return 'again';
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
      return 'lost';
    }
  }
}

function deviceKey(accountId: string, deviceId: number): string {
  return `D#${accountId}#${deviceId}`;
}

function toRecord(connectionId: string, item: Record<string, unknown>): ConnectionRecord {
  return {
    connectionId,
    accountId: item.accountId as string,
    deviceId: item.deviceId as number,
    passwordHash: new Uint8Array(Buffer.from((item.passwordHash as string) ?? '', 'base64')),
    connectedAt: (item.connectedAt as number) ?? 0,
    ...(typeof item.cursor === 'string' ? { cursor: item.cursor } : {}),
    backlogDone: item.backlogDone === true,
    more: item.more === true,
    ...(typeof item.lease === 'string' ? { lease: item.lease } : {}),
    ...(typeof item.leaseUntil === 'number' ? { leaseUntil: item.leaseUntil } : {}),
  };
}

/** Work a Lambda must finish before it answers (it is frozen after): notifications, wake-ups. */
export class PendingWork {
  private readonly pending = new Set<Promise<unknown>>();

  track<T>(work: Promise<T>): Promise<T> {
    this.pending.add(work);
    const done = () => this.pending.delete(work);
    work.then(done, done);
    return work;
  }

  /** Waits until nothing is pending (work may start more work). */
  async settle(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }
}

export interface LiveDeliveryDeps {
  connections: ConnectionStore;
  api: ConnectionsApi;
  storage: Storage;
  push: PushSender;
  clock: Clock;
  logger: Logger;
  work: PendingWork;
}

/**
 * The DeliveryNotifier of the AWS deployment, and the drain that posts a device's queue to its
 * connections.
 *
 * `notify` does the wake-up push itself when the device has no live connection and always
 * returns true: the core fires notifications without awaiting them, and a Lambda is frozen once it
 * answers, so everything a notification does is one tracked promise the handler awaits
 * (`PendingWork.settle`) before it answers.
 */
export class LiveDelivery implements DeliveryNotifier {
  constructor(private readonly deps: LiveDeliveryDeps) {}

  notify(accountId: string, deviceId: number): Promise<boolean> {
    return this.deps.work.track(
      (async () => {
        const ids = await this.deps.connections.byDevice(accountId, deviceId);
        const results = await Promise.all(ids.map((id) => this.drain(id)));
        if (results.some((r) => r === 'delivered')) return true;
        const device = await this.deps.storage.getDevice(accountId, deviceId);
        if (device) await this.deps.push.wake(device);
        return true;
      })().catch((error: unknown) => {
        this.deps.logger.error({ err: { message: (error as Error).message } }, 'notify failed');
        return true;
      }),
    );
  }

  /** Closes a connection that has no row (any more). */
  async closeConnection(connectionId: string): Promise<void> {
    await this.deps.api.close(connectionId);
  }

  async disconnect(accountId: string, deviceId: number): Promise<void> {
    const ids = await this.deps.connections.byDevice(accountId, deviceId);
    await Promise.all(
      ids.map(async (id) => {
        await this.deps.api.close(id);
        await this.deps.connections.remove(id, { accountId, deviceId });
      }),
    );
  }

  /**
   * Posts what is queued for the connection's device after what it already got, then queue-empty
   * once the backlog is through. 'delivered': the connection is live (this or another drainer
   * posts); 'gone': the connection no longer exists (its rows are removed).
   */
  async drain(connectionId: string): Promise<'delivered' | 'gone'> {
    const { connections, storage, clock } = this.deps;
    const taken = await connections.acquire(connectionId, clock.now());
    if (!taken) return (await connections.get(connectionId)) ? 'delivered' : 'gone';
    const { record, lease } = taken;
    let cursor = record.cursor;
    let backlogDone = record.backlogDone;
    for (;;) {
      let sent = 0;
      let reachedEnd = false;
      while (sent < WINDOW) {
        const limit = Math.min(PAGE, WINDOW - sent);
        const page = await storage.fetchQueue(record.accountId, record.deviceId, limit, clock.now(), cursor);
        for (const envelope of page) {
          const frame = JSON.stringify({ type: 'envelope', envelope: envelopeJson(envelope) });
          const result = await this.post(record, frame);
          if (result === 'gone') return 'gone';
          if (result === 'too_large') {
            // Over API Gateway's 128 KB frame limit: it stays queued for GET /v1/messages.
            this.deps.logger.warn(
              { accountId: record.accountId, deviceId: record.deviceId },
              'envelope too large for a frame',
            );
          }
          cursor = envelope.cursor;
          sent++;
        }
        if (page.length < limit) {
          reachedEnd = true;
          break;
        }
      }
      if (reachedEnd && !backlogDone) {
        if ((await this.post(record, '{"type":"queue-empty"}')) === 'gone') return 'gone';
        backlogDone = true;
      }
      const released = await connections.release(connectionId, lease, { cursor, backlogDone, more: !reachedEnd });
      if (released !== 'again') return 'delivered';
    }
  }

  /** Posts one frame; a connection that is gone has its rows removed. */
  async post(record: ConnectionRecord, frame: string): Promise<PostResult> {
    let delay = 25;
    for (;;) {
      const result = await this.deps.api.post(record.connectionId, frame);
      if (result !== 'gone') return result;
      // Just connected: API Gateway may not take posts until $connect's answer went through.
      const young = this.deps.clock.now() - record.connectedAt < YOUNG_CONNECTION_MS;
      if (young && (await this.deps.connections.get(record.connectionId))) {
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(delay * 2, 1000);
        continue;
      }
      await this.deps.connections.remove(record.connectionId, record);
      return 'gone';
    }
  }
}
