import { createRequire } from 'node:module';
import { MessageChannel, type MessagePort, Worker, receiveMessageOnPort } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { ApiError, badRequest } from '../../core/errors.ts';
import { VERIFICATION_SESSION_RETENTION_MS } from '../../core/limits.ts';
import type {
  Account,
  AttachmentMeta,
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
import { migrate } from './migrations.ts';

export interface SqliteStorageOptions {
  /**
   * FULL (default) syncs the WAL on every commit, so an acknowledged write survives a power loss.
   * NORMAL syncs only at checkpoints: a crash of the process loses nothing, a power loss may lose
   * the last commits. Only benchmarks should pass NORMAL.
   */
  synchronous?: 'FULL' | 'NORMAL';
  /** How long a writer waits for another connection's lock before failing (ms). */
  busyTimeoutMs?: number;
}

type Blob = Uint8Array;

interface SessionRow {
  id: string;
  number: string;
  code_hash: Blob;
  created_at: number;
  expires_at: number;
  failed_attempts: number;
  verified: number;
  consumed: number;
}
interface AccountRow {
  id: string;
  number: string;
  identity_key: Blob;
  name: string | null;
  created_at: number;
}
interface DeviceRow {
  account_id: string;
  device_id: number;
  registration_id: number;
  password_hash: Blob;
  password_salt: Blob;
  created_at: number;
  push_subscription: string | null;
  name: Blob | null;
}
interface LinkCodeRow {
  code_hash: Blob;
  account_id: string;
  created_at: number;
  expires_at: number;
}
interface KeyRow {
  key_id: number;
  public_key: Blob;
  signature: Blob;
}
interface EnvelopeRow {
  position: number;
  account_id: string;
  device_id: number;
  guid: string;
  type: number;
  source_account_id: string;
  source_device_id: number;
  timestamp: number;
  server_timestamp: number;
  content: Blob;
  expires_at: number;
}
interface AttachmentRow {
  id: string;
  size: number;
  created_at: number;
  expires_at: number;
}

/** better-sqlite3 hands BLOBs back as Buffers; the ports get plain Uint8Array copies. */
const bytes = (blob: Blob): Uint8Array => new Uint8Array(blob);

const toSession = (r: SessionRow): VerificationSession => ({
  id: r.id,
  number: r.number,
  codeHash: bytes(r.code_hash),
  createdAt: r.created_at,
  expiresAt: r.expires_at,
  failedAttempts: r.failed_attempts,
  verified: r.verified === 1,
  consumed: r.consumed === 1,
});

const toAccount = (r: AccountRow): Account => ({
  id: r.id,
  number: r.number,
  identityKey: bytes(r.identity_key),
  ...(r.name === null ? {} : { name: r.name }),
  createdAt: r.created_at,
});

const toDevice = (r: DeviceRow): Device => ({
  accountId: r.account_id,
  deviceId: r.device_id,
  registrationId: r.registration_id,
  passwordHash: bytes(r.password_hash),
  passwordSalt: bytes(r.password_salt),
  createdAt: r.created_at,
  ...(r.push_subscription === null ? {} : { pushSubscription: r.push_subscription }),
  ...(r.name === null ? {} : { name: bytes(r.name) }),
});

const toLinkCode = (r: LinkCodeRow): LinkCode => ({
  codeHash: bytes(r.code_hash),
  accountId: r.account_id,
  createdAt: r.created_at,
  expiresAt: r.expires_at,
});

const toSignedKey = (r: KeyRow): SignedECPreKey => ({
  keyId: r.key_id,
  publicKey: bytes(r.public_key),
  signature: bytes(r.signature),
});
const toKyberKey = (r: KeyRow): KyberPreKey => ({
  keyId: r.key_id,
  publicKey: bytes(r.public_key),
  signature: bytes(r.signature),
});

const toEnvelope = (r: EnvelopeRow): QueuedEnvelope => ({
  guid: r.guid,
  type: r.type,
  sourceAccountId: r.source_account_id,
  sourceDeviceId: r.source_device_id,
  destinationAccountId: r.account_id,
  destinationDeviceId: r.device_id,
  timestamp: r.timestamp,
  serverTimestamp: r.server_timestamp,
  content: bytes(r.content),
  expiresAt: r.expires_at,
  cursor: String(r.position),
});

const toAttachment = (r: AttachmentRow): AttachmentMeta => ({
  id: r.id,
  size: r.size,
  createdAt: r.created_at,
  expiresAt: r.expires_at,
});

/** A cursor is the decimal queue position of the last envelope seen. */
function parseCursor(cursor: string | undefined): number {
  if (cursor === undefined) return 0;
  if (!/^(0|[1-9][0-9]{0,15})$/.test(cursor)) throw badRequest('invalid_cursor', 'the queue cursor is not valid');
  return Number(cursor);
}

const INSERT_RECEIPT_SQL = `INSERT INTO send_receipts (source_account_id, source_device_id, message_id, expires_at)
  VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`;
const INSERT_ENVELOPE_SQL = `INSERT INTO envelopes
  (account_id, device_id, guid, type, source_account_id, source_device_id, timestamp, server_timestamp, content,
   expires_at)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`;
const DELETE_ENVELOPE_SQL = 'DELETE FROM envelopes WHERE account_id = ? AND device_id = ? AND guid = ?';

function prepareStatements(db: Database.Database) {
  const s = <R = unknown>(sql: string) => db.prepare<unknown[], R>(sql);
  return {
    insertSession: s(
      `INSERT INTO verification_sessions
         (id, number, code_hash, created_at, expires_at, failed_attempts, verified, consumed)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    getSession: s<SessionRow>('SELECT * FROM verification_sessions WHERE id = ?'),
    updateSession: s(
      `UPDATE verification_sessions
          SET number = ?, code_hash = ?, created_at = ?, expires_at = ?, failed_attempts = ?, verified = ?, consumed = ?
        WHERE id = ?`,
    ),
    consumeSession: s('UPDATE verification_sessions SET consumed = 1 WHERE id = ? AND consumed = 0'),
    deleteOldSessions: s('DELETE FROM verification_sessions WHERE expires_at <= ?'),

    // One statement, so atomic on its own: a window that has ended (reset_at <= now) starts over.
    hit: s<{ count: number; reset_at: number }>(
      `INSERT INTO rate_limits (key, count, reset_at) VALUES (@key, 1, @now + @windowMs)
       ON CONFLICT (key) DO UPDATE SET
         count    = CASE WHEN reset_at <= @now THEN 1 ELSE count + 1 END,
         reset_at = CASE WHEN reset_at <= @now THEN excluded.reset_at ELSE reset_at END
       RETURNING count, reset_at`,
    ),
    deleteExpiredRateLimits: s('DELETE FROM rate_limits WHERE reset_at <= ?'),

    insertAccount: s('INSERT INTO accounts (id, number, identity_key, name, created_at) VALUES (?, ?, ?, ?, ?)'),
    getAccount: s<AccountRow>('SELECT * FROM accounts WHERE id = ?'),
    getAccountByNumber: s<AccountRow>('SELECT * FROM accounts WHERE number = ?'),
    deleteAccount: s('DELETE FROM accounts WHERE id = ?'),
    deleteQueuesOfAccount: s('DELETE FROM envelopes WHERE account_id = ?'),
    deleteReceiptsOfAccount: s('DELETE FROM send_receipts WHERE source_account_id = ?'),
    insertDevice: s(
      `INSERT INTO devices
         (account_id, device_id, registration_id, password_hash, password_salt, created_at, push_subscription, name)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    deviceIds: s<{ device_id: number }>('SELECT device_id FROM devices WHERE account_id = ? ORDER BY device_id'),
    deleteDevice: s('DELETE FROM devices WHERE account_id = ? AND device_id = ?'),
    deleteQueueOfDevice: s('DELETE FROM envelopes WHERE account_id = ? AND device_id = ?'),
    deleteReceiptsOfDevice: s('DELETE FROM send_receipts WHERE source_account_id = ? AND source_device_id = ?'),

    // Inserted only while the account exists (no foreign-key failure when it was just replaced).
    insertLinkCode: s(
      `INSERT INTO link_codes (code_hash, account_id, created_at, expires_at)
       SELECT @codeHash, @accountId, @createdAt, @expiresAt WHERE EXISTS (SELECT 1 FROM accounts WHERE id = @accountId)`,
    ),
    getLinkCode: s<LinkCodeRow>('SELECT * FROM link_codes WHERE code_hash = ?'),
    deleteLinkCode: s('DELETE FROM link_codes WHERE code_hash = ?'),
    deleteExpiredLinkCodes: s('DELETE FROM link_codes WHERE expires_at <= ?'),
    putProvisioning: s(
      `INSERT INTO provisioning_messages (address, account_id, body, expires_at)
       SELECT @address, @accountId, @body, @expiresAt WHERE EXISTS (SELECT 1 FROM accounts WHERE id = @accountId)
       ON CONFLICT (address) DO UPDATE SET
         account_id = excluded.account_id, body = excluded.body, expires_at = excluded.expires_at`,
    ),
    takeProvisioning: s<{ body: Blob; expires_at: number }>(
      'DELETE FROM provisioning_messages WHERE address = ? RETURNING body, expires_at',
    ),
    deleteExpiredProvisioning: s('DELETE FROM provisioning_messages WHERE expires_at <= ?'),
    getDevice: s<DeviceRow>('SELECT * FROM devices WHERE account_id = ? AND device_id = ?'),
    listDevices: s<DeviceRow>('SELECT * FROM devices WHERE account_id = ? ORDER BY device_id'),
    setPush: s('UPDATE devices SET push_subscription = ? WHERE account_id = ? AND device_id = ?'),
    deviceExists: s<{ one: number }>('SELECT 1 AS one FROM devices WHERE account_id = ? AND device_id = ?'),

    upsertSignedKey: s(
      `INSERT INTO signed_prekeys (account_id, device_id, key_id, public_key, signature) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (account_id, device_id) DO UPDATE SET
         key_id = excluded.key_id, public_key = excluded.public_key, signature = excluded.signature`,
    ),
    upsertLastResortKey: s(
      `INSERT INTO kyber_last_resort_prekeys (account_id, device_id, key_id, public_key, signature)
       VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (account_id, device_id) DO UPDATE SET
         key_id = excluded.key_id, public_key = excluded.public_key, signature = excluded.signature`,
    ),
    // REPLACE deletes the old row and inserts a new one, so a replaced key also moves to the back.
    putEcKey: s('INSERT OR REPLACE INTO ec_prekeys (account_id, device_id, key_id, public_key) VALUES (?, ?, ?, ?)'),
    putKyberKey: s(
      `INSERT OR REPLACE INTO kyber_prekeys (account_id, device_id, key_id, public_key, signature)
       VALUES (?, ?, ?, ?, ?)`,
    ),
    countEcKeys: s<{ n: number }>('SELECT count(*) AS n FROM ec_prekeys WHERE account_id = ? AND device_id = ?'),
    countKyberKeys: s<{ n: number }>('SELECT count(*) AS n FROM kyber_prekeys WHERE account_id = ? AND device_id = ?'),
    getSignedKey: s<KeyRow>(
      'SELECT key_id, public_key, signature FROM signed_prekeys WHERE account_id = ? AND device_id = ?',
    ),
    getLastResortKey: s<KeyRow>(
      'SELECT key_id, public_key, signature FROM kyber_last_resort_prekeys WHERE account_id = ? AND device_id = ?',
    ),
    // Oldest first (rowid order). Select and delete in one statement, inside an IMMEDIATE transaction.
    takeEcKey: s<{ key_id: number; public_key: Blob }>(
      `DELETE FROM ec_prekeys WHERE rowid =
         (SELECT rowid FROM ec_prekeys WHERE account_id = ? AND device_id = ? ORDER BY rowid LIMIT 1)
       RETURNING key_id, public_key`,
    ),
    takeKyberKey: s<KeyRow>(
      `DELETE FROM kyber_prekeys WHERE rowid =
         (SELECT rowid FROM kyber_prekeys WHERE account_id = ? AND device_id = ? ORDER BY rowid LIMIT 1)
       RETURNING key_id, public_key, signature`,
    ),

    insertReceipt: s(INSERT_RECEIPT_SQL),
    insertEnvelope: s(INSERT_ENVELOPE_SQL),
    fetchQueue: s<EnvelopeRow>(
      `SELECT * FROM envelopes
        WHERE account_id = ? AND device_id = ? AND position > ? AND expires_at > ?
        ORDER BY position LIMIT ?`,
    ),
    deleteEnvelope: s(DELETE_ENVELOPE_SQL),
    countQueue: s<{ n: number }>(
      'SELECT count(*) AS n FROM envelopes WHERE account_id = ? AND device_id = ? AND expires_at > ?',
    ),
    countAllEnvelopes: s<{ n: number }>('SELECT count(*) AS n FROM envelopes WHERE expires_at > ?'),
    deleteExpiredEnvelopes: s('DELETE FROM envelopes WHERE expires_at <= ?'),
    deleteExpiredReceipts: s('DELETE FROM send_receipts WHERE expires_at <= ?'),

    insertAttachment: s(
      `INSERT INTO attachments (id, size, created_at, expires_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET size = excluded.size, created_at = excluded.created_at,
         expires_at = excluded.expires_at`,
    ),
    getAttachment: s<AttachmentRow>('SELECT * FROM attachments WHERE id = ?'),
    deleteExpiredAttachments: s<{ id: string }>('DELETE FROM attachments WHERE expires_at <= ? RETURNING id'),
  };
}

/*
 * Writes travel to the writer thread as flat arrays (structured clone copies arrays of primitives
 * several times faster than objects with named fields):
 *   delete: [id, accountId, deviceId, guid]
 *   insert: [id, receipt, ...envelope] with receipt = [sourceAccountId, sourceDeviceId, messageId,
 *           expiresAt] or null, then ENVELOPE_FIELDS values per envelope in INSERT_ENVELOPE_SQL's order,
 *           where the content is its length: the contents of one message to the writer are copied
 *           one after another into one buffer (transferred when large, not cloned).
 * Outcomes come back as one flat array per transaction: first 1 if another connection (this
 * process's main one, or another process) committed since the writer's last transaction, else 0;
 * then per write its id and result: a delete's true/false, an insert's queue positions (or false
 * for a duplicate receipt), or an error.
 */
type WriteOp = unknown[];
type Described = { name: string; message: string; code?: string };
const ENVELOPE_FIELDS = 10;

function encodeInsert(id: number, envelopes: Envelope[], receipt: SendReceipt | undefined): WriteOp {
  const op: unknown[] = [
    id,
    receipt ? [receipt.sourceAccountId, receipt.sourceDeviceId, receipt.messageId, receipt.expiresAt] : null,
  ];
  for (const e of envelopes) {
    op.push(
      e.destinationAccountId,
      e.destinationDeviceId,
      e.guid,
      e.type,
      e.sourceAccountId,
      e.sourceDeviceId,
      e.timestamp,
      e.serverTimestamp,
      e.content.byteLength,
      e.expiresAt,
    );
  }
  return op;
}

/*
 * The writer thread, as plain JavaScript (it runs without the TypeScript loader). It owns a second
 * connection to the same file with the same pragmas, and commits every write that reached it since
 * its last commit in ONE immediate transaction: group commit. While one commit waits for its fsync,
 * the next writes queue up in its port and go into the next transaction together.
 *
 * A write of several statements must be all or nothing, and one failing write must not fail the
 * others. A savepoint per write would give both but triples the cost of a write, so the writes run
 * without: if any of them throws (never expected: the inputs are validated, guids are random), the
 * whole transaction rolls back and runs again with a savepoint per write. If the transaction
 * itself fails, every write of it fails and none of it is stored.
 */
const WRITER_SOURCE = `
const { workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const { port, closed, path, busyTimeoutMs, synchronous, sql } = workerData;
const db = new Database(path, { timeout: busyTimeoutMs });
db.pragma('busy_timeout = ' + busyTimeoutMs);
db.pragma('synchronous = ' + synchronous);
db.pragma('foreign_keys = ON');
const insertReceipt = db.prepare(sql.insertReceipt);
const insertEnvelope = db.prepare(sql.insertEnvelope);
const deleteEnvelope = db.prepare(sql.deleteEnvelope);
const dataVersion = db.prepare('PRAGMA data_version').pluck();
let lastVersion;
const FIELDS = ${ENVELOPE_FIELDS};
function apply(op) {
  if (op.length === 4) return deleteEnvelope.run(op[1], op[2], op[3]).changes > 0;
  const r = op[1];
  if (r && insertReceipt.run(r[0], r[1], r[2], r[3]).changes === 0) return false;
  const positions = [];
  for (let i = 2; i < op.length; i += FIELDS) {
    const row = insertEnvelope.run(op[i], op[i + 1], op[i + 2], op[i + 3], op[i + 4], op[i + 5], op[i + 6], op[i + 7], op[i + 8], op[i + 9]);
    positions.push(Number(row.lastInsertRowid));
  }
  return positions;
}
const applyAlone = db.transaction(apply);
const describe = (error) => ({ name: error.name, message: error.message, code: error.code });
const fast = db.transaction((ops, outcomes) => {
  for (const op of ops) outcomes.push(op[0], apply(op));
  return outcomes;
});
const safe = db.transaction((ops, outcomes) => {
  for (const op of ops) {
    try {
      outcomes.push(op[0], applyAlone(op));
    } catch (error) {
      if (!db.inTransaction) throw error;
      outcomes.push(op[0], describe(error));
    }
  }
  return outcomes;
});
let pending = [];
let scheduled = false;
function run() {
  scheduled = false;
  const ops = pending;
  pending = [];
  if (ops.length === 0) return;
  const version = dataVersion.get();
  const head = [lastVersion !== undefined && version !== lastVersion ? 1 : 0];
  lastVersion = version;
  let outcomes;
  try {
    outcomes = fast.immediate(ops, head.slice());
  } catch {
    try {
      outcomes = safe.immediate(ops, head.slice());
    } catch (error) {
      const described = describe(error);
      outcomes = head.slice();
      for (const op of ops) outcomes.push(op[0], described);
    }
  }
  port.postMessage(outcomes);
}
port.on('message', (message) => {
  if (message === 'close') {
    run();
    db.close();
    port.close();
    Atomics.store(closed, 0, 1);
    Atomics.notify(closed, 0);
    return;
  }
  const [ops, contents] = message;
  let offset = 0;
  for (const op of ops) {
    if (op.length !== 4) {
      for (let i = 2 + 8; i < op.length; i += FIELDS) {
        const length = op[i];
        op[i] = contents.subarray(offset, offset + length);
        offset += length;
      }
    }
    pending.push(op);
  }
  if (!scheduled) {
    scheduled = true;
    setImmediate(run);
  }
});
`;

interface Waiting {
  resolve: (value: boolean) => void;
  reject: (error: Error) => void;
  /** An insert: what it stores. */
  envelopes: Envelope[] | undefined;
  /** A delete: from which device's queue, which guid. */
  device: string | undefined;
  guid: string | undefined;
}

const noop = () => {};

/**
 * How long an acknowledgement's delete may wait for a send to share a commit with. Nothing waits
 * on a delete but the acking socket's in-flight window; a read from the start of a queue that
 * needs it flushes it at once.
 */
const DELETE_DELAY_MS = 20;

const deviceKey = (accountId: string, deviceId: number) => `${accountId}.${deviceId}`;

/** Accounts whose device list is kept in memory. */
const MAX_CACHED_ACCOUNTS = 10_000;
/** Devices whose queue tail is kept, envelopes kept per device, and content bytes kept in all. */
const MAX_TAILS = 4096;
const MAX_TAIL_ENVELOPES = 1024;
const MAX_TAIL_BYTES = 32 * 1024 * 1024;

/**
 * The end of some devices' queues, in memory, so that live delivery does not read back from the
 * database what this process has just written. Every envelope is inserted by the writer thread,
 * which hands back its queue position; a tail starts when a read after a cursor reached the end of
 * a queue (`learn`), and from then on holds exactly the envelopes of that device after `from`:
 * those of the read, then every insert the writer reports, minus every committed delete. A read
 * (`read`) after a cursor at or past `from` is answered from it. Anything that changes envelopes
 * otherwise (the main connection deleting a replaced account's queues or expired envelopes,
 * another process writing the file) drops all tails, and reads go to the database again.
 */
class QueueTails {
  private readonly tails = new Map<string, { from: number; last: number; items: QueuedEnvelope[] }>();
  private bytes = 0;

  /** The envelopes after `after`, if this device's tail covers them; undefined if it does not. */
  read(key: string, after: number, limit: number, now: number): QueuedEnvelope[] | undefined {
    const tail = this.tails.get(key);
    if (!tail || after < tail.from) return undefined;
    // Most recently read last: eviction drops the least recently read tails first.
    this.tails.delete(key);
    this.tails.set(key, tail);
    // Items are in queue order: find the first after the cursor (the ones before it are usually
    // delivered and waiting for their acks), then take up to `limit` unexpired ones.
    const items = tail.items;
    let lo = 0;
    let hi = items.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (Number((items[mid] as QueuedEnvelope).cursor) > after) hi = mid;
      else lo = mid + 1;
    }
    const page: QueuedEnvelope[] = [];
    for (let i = lo; i < items.length && page.length < limit; i++) {
      const e = items[i] as QueuedEnvelope;
      if (e.expiresAt > now) page.push(e);
    }
    return page;
  }

  /** A database read after `after` returned `page`; if that is the whole rest of the queue, keep it. */
  learn(key: string, after: number, page: QueuedEnvelope[], limit: number): void {
    if (page.length >= limit || page.length > MAX_TAIL_ENVELOPES) return;
    this.drop(key);
    const last = page.length > 0 ? Number((page[page.length - 1] as QueuedEnvelope).cursor) : after;
    this.tails.set(key, { from: after, last, items: page });
    for (const e of page) this.bytes += e.content.byteLength;
    this.trim();
  }

  inserted(envelopes: Envelope[], positions: number[]): void {
    if (this.tails.size === 0) return;
    for (const [i, e] of envelopes.entries()) {
      const key = deviceKey(e.destinationAccountId, e.destinationDeviceId);
      const tail = this.tails.get(key);
      const position = positions[i] as number;
      // A position up to `last` was already in the read that started the tail.
      if (!tail || position <= tail.last) continue;
      if (tail.items.length >= MAX_TAIL_ENVELOPES) {
        this.drop(key);
        continue;
      }
      tail.items.push({ ...e, cursor: String(position) });
      tail.last = position;
      this.bytes += e.content.byteLength;
    }
    this.trim();
  }

  deleted(key: string, guid: string): void {
    const tail = this.tails.get(key);
    if (!tail) return;
    const i = tail.items.findIndex((e) => e.guid === guid);
    if (i < 0) return;
    this.bytes -= (tail.items[i] as QueuedEnvelope).content.byteLength;
    tail.items.splice(i, 1);
  }

  clear(): void {
    this.tails.clear();
    this.bytes = 0;
  }

  private drop(key: string): void {
    const tail = this.tails.get(key);
    if (!tail) return;
    for (const e of tail.items) this.bytes -= e.content.byteLength;
    this.tails.delete(key);
  }

  private trim(): void {
    for (const key of this.tails.keys()) {
      if (this.tails.size <= MAX_TAILS && this.bytes <= MAX_TAIL_BYTES) return;
      this.drop(key);
    }
  }
}

/**
 * Main-thread side of the group-commit writer. Writes submitted during one turn of the event loop
 * go to the writer thread in one message; the promise of each settles once the transaction that
 * holds it has committed (synchronous = FULL: the WAL is on disk). The event loop never waits for
 * an fsync of these writes, so the server keeps parsing, delivering and answering meanwhile.
 */
class GroupCommitWriter {
  /** Told, before the writes it concerns settle, what was committed; see QueueTails. */
  tails: QueueTails | undefined;
  /** Called (before settling) when a connection other than the writer's committed since its last transaction. */
  onOtherCommit: (() => void) | undefined;
  private worker: Worker | undefined;
  private port: MessagePort | undefined;
  private readonly closed = new Int32Array(new SharedArrayBuffer(4));
  private nextId = 1;
  /** Highest id settled so far: writes settle in id order (the order they were submitted). */
  private settledId = 0;
  /** Writes not settled yet, in id order: `waiting[i]` has id `firstWaiting + i`. */
  private waiting: (Waiting | undefined)[] = [];
  private waitingStart = 0;
  private firstWaiting = 1;
  private queued: WriteOp[] = [];
  private queuedContents: Uint8Array[] = [];
  private queuedBytes = 0;
  private scheduled = false;
  private queuedInserts = 0;
  /** Deletes alone wait up to DELETE_DELAY_MS, to share a commit with sends. */
  private deleteTimer: NodeJS.Timeout | undefined;
  /** A batch is with the writer thread. */
  private busy = false;
  private stopped = false;
  /** Per device, the id of its newest delete not yet settled. */
  private readonly newestDelete = new Map<string, number>();
  /** Promises handed out by `settled`, by the id they wait for. */
  private readonly barriers = new Map<number, { promise: Promise<void>; resolve: () => void }>();

  constructor(
    private readonly path: string,
    private readonly options: { busyTimeoutMs: number; synchronous: 'FULL' | 'NORMAL' },
  ) {}

  insert(envelopes: Envelope[], receipt: SendReceipt | undefined): Promise<boolean> {
    if (this.stopped) return Promise.reject(new Error('the storage is closed'));
    for (const e of envelopes) {
      this.queuedContents.push(e.content);
      this.queuedBytes += e.content.byteLength;
    }
    return this.submit(encodeInsert(this.nextId, envelopes, receipt), envelopes, undefined, undefined);
  }

  delete(accountId: string, deviceId: number, guid: string): Promise<boolean> {
    if (this.stopped) return Promise.reject(new Error('the storage is closed'));
    const device = deviceKey(accountId, deviceId);
    return this.submit([this.nextId, accountId, deviceId, guid], undefined, device, guid);
  }

  /** `op[0]` is `this.nextId`. */
  private submit(
    op: WriteOp,
    envelopes: Envelope[] | undefined,
    device: string | undefined,
    guid: string | undefined,
  ): Promise<boolean> {
    const id = this.nextId++;
    if (device) this.newestDelete.set(device, id);
    const w: Waiting = { resolve: noop, reject: noop, envelopes, device, guid };
    const promise = new Promise<boolean>((resolve, reject) => {
      w.resolve = resolve;
      w.reject = reject;
    });
    this.waiting.push(w);
    this.queued.push(op);
    if (envelopes) {
      this.queuedInserts++;
      this.flushSoon();
    } else if (!this.scheduled && !this.deleteTimer) {
      this.deleteTimer = setTimeout(this.flush, DELETE_DELAY_MS);
    }
    return promise;
  }

  /** At the end of this turn of the event loop (unless a batch is with the writer already). */
  private flushSoon(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.flush);
  }

  /**
   * Settles once every write submitted so far (or, given a device, every delete from its queue
   * submitted so far) is committed or failed; undefined when there is none.
   */
  settled(accountId?: string, deviceId?: number): Promise<void> | undefined {
    const id =
      accountId === undefined ? this.nextId - 1 : this.newestDelete.get(deviceKey(accountId, deviceId as number));
    if (id === undefined || id <= this.settledId) return undefined;
    // Someone waits for it: a delete still held back goes now.
    if (id >= this.nextId - this.queued.length) this.flushSoon();
    let barrier = this.barriers.get(id);
    if (!barrier) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => {
        resolve = r;
      });
      barrier = { promise, resolve };
      this.barriers.set(id, barrier);
    }
    return barrier.promise;
  }

  /**
   * At most one batch is with the writer thread at a time: what is submitted meanwhile waits here
   * and goes as the next batch the moment the current one is committed. One message (and one
   * thread wake-up) each way per commit, however many writes.
   */
  private readonly flush = (): void => {
    this.scheduled = false;
    if (this.deleteTimer) {
      clearTimeout(this.deleteTimer);
      this.deleteTimer = undefined;
    }
    if (this.queued.length === 0 || this.busy) return;
    const port = this.start();
    port.ref();
    this.post(port);
  };

  /** Hands the queued writes to the writer thread, their contents in one buffer. */
  private post(port: MessagePort): void {
    const contents = new Uint8Array(this.queuedBytes);
    let offset = 0;
    for (const c of this.queuedContents) {
      contents.set(c, offset);
      offset += c.byteLength;
    }
    // Transferring beats copying only for larger buffers (it has a fixed cost of its own).
    port.postMessage([this.queued, contents], contents.byteLength >= 16 * 1024 ? [contents.buffer] : []);
    this.busy = true;
    this.queued = [];
    this.queuedInserts = 0;
    this.queuedContents = [];
    this.queuedBytes = 0;
  }

  private start(): MessagePort {
    if (this.port) return this.port;
    const { port1, port2 } = new MessageChannel();
    const worker = new Worker(WRITER_SOURCE, {
      eval: true,
      workerData: {
        port: port2,
        closed: this.closed,
        driver: createRequire(import.meta.url).resolve('better-sqlite3'),
        path: this.path,
        busyTimeoutMs: this.options.busyTimeoutMs,
        synchronous: this.options.synchronous,
        sql: {
          insertReceipt: INSERT_RECEIPT_SQL,
          insertEnvelope: INSERT_ENVELOPE_SQL,
          deleteEnvelope: DELETE_ENVELOPE_SQL,
        },
      },
      transferList: [port2],
    });
    worker.unref();
    port1.on('message', (outcomes: unknown[]) => {
      this.busy = false;
      this.settleAll(outcomes);
      // Sends waited for this commit: they go now, and held-back deletes with them. Deletes alone
      // keep waiting for their timer (or for sends to ride along with).
      if (this.queuedInserts > 0 || (this.queued.length > 0 && !this.deleteTimer)) this.post(port1);
      else if (this.pending === 0) port1.unref();
    });
    const fail = (error: Error) => {
      // Nothing of the writes still waiting is known to be stored: each of them fails.
      if (this.worker !== worker) return;
      this.worker = undefined;
      this.port = undefined;
      this.busy = false;
      port1.close();
      // Writes not handed over yet fail with them: none of them may be stored after its failure.
      this.queued = [];
      this.queuedInserts = 0;
      this.queuedContents = [];
      this.queuedBytes = 0;
      this.failAll(error);
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the SQLite writer thread exited (${code})`)));
    this.worker = worker;
    this.port = port1;
    return port1;
  }

  private settleAll(outcomes: unknown[]): void {
    if (outcomes[0] === 1) this.onOtherCommit?.();
    for (let i = 1; i < outcomes.length; i += 2) this.settle(outcomes[i] as number, outcomes[i + 1]);
  }

  private settle(id: number, result: unknown): void {
    const index = this.waitingStart + id - this.firstWaiting;
    const w = this.waiting[index];
    if (!w) return;
    this.waiting[index] = undefined;
    // Outcomes arrive in id order: drop the settled front, now and then in one go.
    while (this.waitingStart < this.waiting.length && this.waiting[this.waitingStart] === undefined) {
      this.waitingStart++;
      this.firstWaiting++;
    }
    if (this.waitingStart > 1024 && this.waitingStart * 2 > this.waiting.length) {
      this.waiting = this.waiting.slice(this.waitingStart);
      this.waitingStart = 0;
    }
    if (id > this.settledId) this.settledId = id;
    if (w.device && this.newestDelete.get(w.device) === id) this.newestDelete.delete(w.device);
    if (Array.isArray(result)) {
      if (w.envelopes) this.tails?.inserted(w.envelopes, result as number[]);
      w.resolve(true);
    } else if (typeof result === 'boolean') {
      if (result && w.device && w.guid) this.tails?.deleted(w.device, w.guid);
      w.resolve(result);
    } else {
      w.reject(Object.assign(new Error((result as Described).message), result));
    }
    const barrier = this.barriers.get(id);
    if (barrier) {
      this.barriers.delete(id);
      barrier.resolve();
    }
  }

  /** Writes submitted and not settled yet. */
  private get pending(): number {
    return this.nextId - this.firstWaiting;
  }

  private failAll(error: Error): void {
    const described = { name: error.name, message: error.message };
    for (let id = this.firstWaiting; id < this.nextId; id++) this.settle(id, described);
    for (const barrier of this.barriers.values()) barrier.resolve();
    this.barriers.clear();
    this.newestDelete.clear();
    this.settledId = this.nextId - 1;
  }

  /** Commits what is queued, waits for the writer thread to close its connection, settles every write. */
  close(): void {
    this.stopped = true;
    if (this.deleteTimer) clearTimeout(this.deleteTimer);
    this.deleteTimer = undefined;
    if (this.queued.length > 0) this.start();
    const port = this.port;
    const worker = this.worker;
    if (port && worker) {
      if (this.queued.length > 0) this.post(port);
      port.postMessage('close');
      Atomics.wait(this.closed, 0, 0, this.options.busyTimeoutMs + 10_000);
      for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) this.settleAll(m.message);
      this.worker = undefined;
      this.port = undefined;
      port.close();
      void worker.terminate();
    }
    this.failAll(new Error('the storage is closed'));
  }
}

/**
 * The embedded storage: one SQLite file in WAL mode, synchronous = FULL, foreign keys on. Every
 * write that touches more than one row runs in one IMMEDIATE transaction (the write lock is taken
 * up front, so a second process writing the same file waits on busy_timeout instead of failing
 * with SQLITE_BUSY on a lock upgrade). better-sqlite3 is synchronous: the methods do their work
 * before they return and hand back settled promises.
 */
export class SqliteStorage implements Storage {
  readonly db: Database.Database;
  private readonly q: ReturnType<typeof prepareStatements>;
  private readonly tx;
  /** Envelope inserts and deletes (the hot path) go through group commit; undefined for ':memory:'. */
  private readonly writer: GroupCommitWriter | undefined;
  private readonly tails = new QueueTails();
  /**
   * Devices by account, as listDevices reads them: every send checks the destination's devices
   * and every socket request re-checks its own device, and with the writer thread committing all
   * the time those reads would otherwise start from a cold page cache. Valid while this
   * connection wrote nothing (its total_changes() is unchanged; any write here may change devices)
   * and no other connection did (the writer thread reports that; another process writing devices
   * is seen at the writer's next transaction).
   */
  private readonly devices = new Map<string, Device[]>();
  private devicesChanges = -1;
  private readonly totalChanges: Database.Statement<[], number>;

  private constructor(db: Database.Database, writer: GroupCommitWriter | undefined) {
    this.db = db;
    this.writer = writer;
    this.totalChanges = db.prepare<[], number>('SELECT total_changes()').pluck();
    if (writer) {
      writer.tails = this.tails;
      writer.onOtherCommit = () => {
        this.tails.clear();
        this.devices.clear();
      };
    }
    this.q = prepareStatements(db);
    this.tx = {
      createAccount: this.immediate(this.createAccountWrite),
      linkDevice: this.immediate(this.linkDeviceWrite),
      removeDevice: this.immediate(this.removeDeviceWrite),
      storeKeys: this.immediate(this.storeKeysWrite),
      takeKeys: this.immediate(this.takeKeysWrite),
      insertEnvelopes: this.immediate(this.insertEnvelopesWrite),
      deleteExpired: this.immediate(this.deleteExpiredWrite),
      deleteExpiredAttachmentMeta: this.immediate((now: number) =>
        this.q.deleteExpiredAttachments.all(now).map((r) => r.id),
      ),
    };
  }

  static open(path: string, options: SqliteStorageOptions = {}): SqliteStorage {
    const busyTimeoutMs = options.busyTimeoutMs ?? 10_000;
    const synchronous = options.synchronous ?? 'FULL';
    const db = new Database(path, { timeout: busyTimeoutMs });
    try {
      db.pragma(`busy_timeout = ${busyTimeoutMs}`);
      db.pragma('journal_mode = WAL');
      db.pragma(`synchronous = ${synchronous}`);
      db.pragma('foreign_keys = ON');
      migrate(db);
      const inMemory = path === '' || path === ':memory:' || path.startsWith('file::memory:');
      return new SqliteStorage(db, inMemory ? undefined : new GroupCommitWriter(path, { busyTimeoutMs, synchronous }));
    } catch (error) {
      db.close();
      throw error;
    }
  }

  /** Commits the envelope writes still queued, then closes both connections. */
  close(): void {
    this.writer?.close();
    if (this.db.open) this.db.close();
  }

  // ---- verification sessions ----

  async insertVerificationSession(v: VerificationSession): Promise<void> {
    this.q.insertSession.run(
      v.id,
      v.number,
      v.codeHash,
      v.createdAt,
      v.expiresAt,
      v.failedAttempts,
      v.verified ? 1 : 0,
      v.consumed ? 1 : 0,
    );
  }

  async getVerificationSession(id: string): Promise<VerificationSession | null> {
    const row = this.q.getSession.get(id);
    return row ? toSession(row) : null;
  }

  async updateVerificationSession(v: VerificationSession): Promise<void> {
    this.q.updateSession.run(
      v.number,
      v.codeHash,
      v.createdAt,
      v.expiresAt,
      v.failedAttempts,
      v.verified ? 1 : 0,
      v.consumed ? 1 : 0,
      v.id,
    );
  }

  // ---- rate limits ----

  async hit(key: string, windowMs: number, now: number): Promise<{ count: number; resetAt: number }> {
    const row = this.q.hit.get({ key, now, windowMs }) as { count: number; reset_at: number };
    return { count: row.count, resetAt: row.reset_at };
  }

  // ---- accounts and devices ----

  private createAccountWrite(
    account: Account,
    device: Device,
    keys: Required<Pick<KeyUpload, 'signedPreKey' | 'pqLastResortPreKey'>> & KeyUpload,
    sessionId: string,
  ): { replacedAccountId?: string } {
    const session = this.q.getSession.get(sessionId);
    if (!session) throw new ApiError(404, 'verification_session_not_found', 'no such verification session');
    if (session.consumed === 1) {
      throw new ApiError(409, 'verification_session_used', 'the verification session was already used');
    }
    if (session.verified !== 1) {
      throw new ApiError(403, 'number_not_verified', 'the number has not been verified');
    }
    if (session.number !== account.number) {
      throw badRequest('number_mismatch', 'the verification session is for another number');
    }
    if (device.accountId !== account.id) {
      throw badRequest('device_account_mismatch', 'the device belongs to another account');
    }

    const existing = this.q.getAccountByNumber.get(account.number);
    if (existing) {
      this.q.deleteQueuesOfAccount.run(existing.id);
      this.tails.clear();
      this.q.deleteReceiptsOfAccount.run(existing.id);
      this.q.deleteAccount.run(existing.id); // cascades to devices and their keys
    }
    this.q.insertAccount.run(account.id, account.number, account.identityKey, account.name ?? null, account.createdAt);
    this.q.insertDevice.run(
      account.id,
      device.deviceId,
      device.registrationId,
      device.passwordHash,
      device.passwordSalt,
      device.createdAt,
      device.pushSubscription ?? null,
      device.name ?? null,
    );
    this.putKeys(account.id, device.deviceId, keys);
    this.q.consumeSession.run(sessionId);
    return existing ? { replacedAccountId: existing.id } : {};
  }

  async createAccount(
    account: Account,
    device: Device,
    keys: Required<Pick<KeyUpload, 'signedPreKey' | 'pqLastResortPreKey'>> & KeyUpload,
    consumeVerificationSessionId: string,
  ): Promise<{ replacedAccountId?: string }> {
    return this.tx.createAccount(account, device, keys, consumeVerificationSessionId);
  }

  async getAccount(id: string): Promise<Account | null> {
    const row = this.q.getAccount.get(id);
    return row ? toAccount(row) : null;
  }

  async getAccountByNumber(number: string): Promise<Account | null> {
    const row = this.q.getAccountByNumber.get(number);
    return row ? toAccount(row) : null;
  }

  async getDevice(accountId: string, deviceId: number): Promise<Device | null> {
    if (this.writer) return this.cachedDevices(accountId).find((d) => d.deviceId === deviceId) ?? null;
    const row = this.q.getDevice.get(accountId, deviceId);
    return row ? toDevice(row) : null;
  }

  async listDevices(accountId: string): Promise<Device[]> {
    if (this.writer) return this.cachedDevices(accountId).slice();
    return this.q.listDevices.all(accountId).map(toDevice);
  }

  private cachedDevices(accountId: string): Device[] {
    const changes = this.totalChanges.get() as number;
    if (changes !== this.devicesChanges) {
      this.devices.clear();
      this.devicesChanges = changes;
    }
    let list = this.devices.get(accountId);
    if (list) return list;
    list = this.q.listDevices.all(accountId).map((r) => Object.freeze(toDevice(r)));
    if (this.devices.size >= MAX_CACHED_ACCOUNTS) this.devices.delete(this.devices.keys().next().value as string);
    this.devices.set(accountId, list);
    return list;
  }

  async setPushSubscription(accountId: string, deviceId: number, subscription: string | null): Promise<void> {
    this.q.setPush.run(subscription, accountId, deviceId);
  }

  // ---- linked devices ----

  async insertLinkCode(code: LinkCode): Promise<void> {
    const inserted = this.q.insertLinkCode.run({
      codeHash: code.codeHash,
      accountId: code.accountId,
      createdAt: code.createdAt,
      expiresAt: code.expiresAt,
    });
    if (inserted.changes === 0) throw new ApiError(404, 'account_not_found', 'no such account');
  }

  async getLinkCode(codeHash: Uint8Array): Promise<LinkCode | null> {
    const row = this.q.getLinkCode.get(codeHash);
    return row ? toLinkCode(row) : null;
  }

  /** Drops what a removed device may have left under (account, device id): its queue and receipts. */
  private dropLeftovers(accountId: string, deviceId: number): void {
    this.q.deleteQueueOfDevice.run(accountId, deviceId);
    this.tails.clear();
    this.q.deleteReceiptsOfDevice.run(accountId, deviceId);
  }

  private linkDeviceWrite(
    codeHash: Uint8Array,
    device: Omit<Device, 'deviceId'>,
    keys: Required<Pick<KeyUpload, 'signedPreKey' | 'pqLastResortPreKey'>> & KeyUpload,
    now: number,
    maxDevices: number,
  ): Device {
    const code = this.q.getLinkCode.get(codeHash);
    if (!code || code.expires_at <= now || code.account_id !== device.accountId) {
      throw new ApiError(403, 'link_code_invalid', 'the link code is unknown, expired or already used');
    }
    const taken = new Set(this.q.deviceIds.all(device.accountId).map((r) => r.device_id));
    let deviceId = 2;
    while (taken.has(deviceId)) deviceId++;
    if (taken.size >= maxDevices || deviceId > maxDevices) {
      throw new ApiError(409, 'too_many_devices', `an account has at most ${maxDevices} devices`);
    }
    this.q.deleteLinkCode.run(codeHash);
    this.dropLeftovers(device.accountId, deviceId);
    const linked: Device = { ...device, deviceId };
    this.q.insertDevice.run(
      linked.accountId,
      linked.deviceId,
      linked.registrationId,
      linked.passwordHash,
      linked.passwordSalt,
      linked.createdAt,
      linked.pushSubscription ?? null,
      linked.name ?? null,
    );
    this.putKeys(linked.accountId, linked.deviceId, keys);
    return linked;
  }

  async linkDevice(
    codeHash: Uint8Array,
    device: Omit<Device, 'deviceId'>,
    keys: Required<Pick<KeyUpload, 'signedPreKey' | 'pqLastResortPreKey'>> & KeyUpload,
    now: number,
    maxDevices: number,
  ): Promise<Device> {
    // Envelopes still on their way to the writer thread land first, so that a queue a removed
    // device left under the new device's id is dropped here completely.
    await this.writer?.settled();
    return this.tx.linkDevice(codeHash, device, keys, now, maxDevices);
  }

  private removeDeviceWrite(accountId: string, deviceId: number): boolean {
    if (this.q.deleteDevice.run(accountId, deviceId).changes === 0) return false; // cascades to its keys
    this.dropLeftovers(accountId, deviceId);
    return true;
  }

  async removeDevice(accountId: string, deviceId: number): Promise<boolean> {
    // As in linkDevice: sends already accepted for the device are committed, then dropped with it.
    await this.writer?.settled();
    return this.tx.removeDevice(accountId, deviceId);
  }

  async putProvisioningMessage(m: ProvisioningMessage): Promise<void> {
    const stored = this.q.putProvisioning.run({
      address: m.address,
      accountId: m.accountId,
      body: m.body,
      expiresAt: m.expiresAt,
    });
    if (stored.changes === 0) throw new ApiError(404, 'account_not_found', 'no such account');
  }

  async takeProvisioningMessage(address: string, now: number): Promise<Uint8Array | null> {
    const row = this.q.takeProvisioning.get(address);
    return row && row.expires_at > now ? bytes(row.body) : null;
  }

  // ---- keys ----

  private putKeys(accountId: string, deviceId: number, upload: KeyUpload): void {
    if (upload.signedPreKey) {
      const k = upload.signedPreKey;
      this.q.upsertSignedKey.run(accountId, deviceId, k.keyId, k.publicKey, k.signature);
    }
    if (upload.pqLastResortPreKey) {
      const k = upload.pqLastResortPreKey;
      this.q.upsertLastResortKey.run(accountId, deviceId, k.keyId, k.publicKey, k.signature);
    }
    for (const k of upload.preKeys ?? []) this.q.putEcKey.run(accountId, deviceId, k.keyId, k.publicKey);
    for (const k of upload.pqPreKeys ?? []) {
      this.q.putKyberKey.run(accountId, deviceId, k.keyId, k.publicKey, k.signature);
    }
  }

  private storeKeysWrite(accountId: string, deviceId: number, upload: KeyUpload): void {
    if (!this.q.deviceExists.get(accountId, deviceId)) {
      throw new ApiError(404, 'device_not_found', 'no such device');
    }
    this.putKeys(accountId, deviceId, upload);
  }

  /** Rejects with ApiError 404 when the device does not exist (e.g. its account was just replaced). */
  async storeKeys(accountId: string, deviceId: number, upload: KeyUpload): Promise<void> {
    this.tx.storeKeys(accountId, deviceId, upload);
  }

  async countKeys(accountId: string, deviceId: number): Promise<{ preKeys: number; pqPreKeys: number }> {
    const preKeys = (this.q.countEcKeys.get(accountId, deviceId) as { n: number }).n;
    const pqPreKeys = (this.q.countKyberKeys.get(accountId, deviceId) as { n: number }).n;
    return { preKeys, pqPreKeys };
  }

  private takeKeysWrite(accountId: string, deviceId: number): TakenKeys | null {
    const signed = this.q.getSignedKey.get(accountId, deviceId);
    if (!signed) return null;
    let pqPreKey: KyberPreKey;
    let pqLastResort = false;
    const kyber = this.q.takeKyberKey.get(accountId, deviceId);
    if (kyber) {
      pqPreKey = toKyberKey(kyber);
    } else {
      const lastResort = this.q.getLastResortKey.get(accountId, deviceId);
      if (!lastResort) return null; // nothing was removed yet
      pqPreKey = toKyberKey(lastResort);
      pqLastResort = true;
    }
    const ec = this.q.takeEcKey.get(accountId, deviceId);
    const preKey: ECPreKey | undefined = ec ? { keyId: ec.key_id, publicKey: bytes(ec.public_key) } : undefined;
    return { signedPreKey: toSignedKey(signed), ...(preKey ? { preKey } : {}), pqPreKey, pqLastResort };
  }

  async takeKeys(accountId: string, deviceId: number): Promise<TakenKeys | null> {
    return this.tx.takeKeys(accountId, deviceId);
  }

  // ---- messages ----

  private insertEnvelopesWrite(envelopes: Envelope[], receipt?: SendReceipt): boolean {
    if (receipt) {
      const r = receipt;
      const inserted = this.q.insertReceipt.run(r.sourceAccountId, r.sourceDeviceId, r.messageId, r.expiresAt);
      if (inserted.changes === 0) return false;
    }
    for (const e of envelopes) {
      this.q.insertEnvelope.run(
        e.destinationAccountId,
        e.destinationDeviceId,
        e.guid,
        e.type,
        e.sourceAccountId,
        e.sourceDeviceId,
        e.timestamp,
        e.serverTimestamp,
        e.content,
        e.expiresAt,
      );
    }
    return true;
  }

  /**
   * A receipt that is still stored counts as seen, also after its expiresAt, until `deleteExpired`
   * removes it.
   */
  async insertEnvelopes(envelopes: Envelope[], receipt?: SendReceipt): Promise<boolean> {
    if (!this.writer) return this.tx.insertEnvelopes(envelopes, receipt);
    return this.writer.insert(envelopes, receipt);
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
    // A read from the start of the queue (a new socket, GET /v1/messages) does not hand out again
    // what was acknowledged before it: it waits for the deletes of acks that are still committing.
    // A read after a cursor (a socket's own delivery) never needs to: those are behind its cursor.
    if (afterCursor === undefined) await this.writer?.settled(accountId, deviceId);
    const count = Math.max(0, Math.floor(limit));
    // A socket's own delivery reads after its cursor, usually just what was committed a moment
    // ago: the tail in memory has it, without a read of pages the writer thread just changed.
    const key = deviceKey(accountId, deviceId);
    if (this.writer && afterCursor !== undefined) {
      const cached = this.tails.read(key, after, count, now);
      if (cached) return cached;
    }
    const page = this.q.fetchQueue.all(accountId, deviceId, after, now, count).map(toEnvelope);
    if (this.writer && afterCursor !== undefined) this.tails.learn(key, after, page, count);
    return page;
  }

  /** Group-committed like inserts: resolves once the delete is committed. */
  async deleteEnvelope(accountId: string, deviceId: number, guid: string): Promise<boolean> {
    if (!this.writer) return this.q.deleteEnvelope.run(accountId, deviceId, guid).changes > 0;
    return this.writer.delete(accountId, deviceId, guid);
  }

  async countQueue(accountId: string, deviceId: number, now: number): Promise<number> {
    await this.writer?.settled(accountId, deviceId);
    return (this.q.countQueue.get(accountId, deviceId, now) as { n: number }).n;
  }

  private deleteExpiredWrite(now: number): number {
    const envelopes = this.q.deleteExpiredEnvelopes.run(now).changes;
    this.tails.clear();
    this.q.deleteExpiredReceipts.run(now);
    this.q.deleteExpiredRateLimits.run(now);
    this.q.deleteExpiredLinkCodes.run(now);
    this.q.deleteExpiredProvisioning.run(now);
    this.q.deleteOldSessions.run(now - VERIFICATION_SESSION_RETENTION_MS);
    return envelopes;
  }

  /**
   * Also drops rate-limit windows that have ended (they would start over on the next hit anyway),
   * expired link codes and expired provisioning messages, and verification sessions a day after
   * their code expired (VERIFICATION_SESSION_RETENTION_MS).
   */
  async deleteExpired(now: number): Promise<number> {
    return this.tx.deleteExpired(now);
  }

  /** Unexpired envelopes in all queues (the queue-depth gauge of /metrics). */
  async countAllEnvelopes(now: number): Promise<number> {
    await this.writer?.settled();
    return (this.q.countAllEnvelopes.get(now) as { n: number }).n;
  }

  // ---- attachment metadata (for FileAttachmentStore) ----

  putAttachmentMeta(meta: AttachmentMeta): void {
    this.q.insertAttachment.run(meta.id, meta.size, meta.createdAt, meta.expiresAt);
  }

  getAttachmentMeta(id: string): AttachmentMeta | null {
    const row = this.q.getAttachment.get(id);
    return row ? toAttachment(row) : null;
  }

  /** Deletes the metadata of every attachment with `expiresAt <= now` and returns their ids. */
  deleteExpiredAttachmentMeta(now: number): string[] {
    return this.tx.deleteExpiredAttachmentMeta(now);
  }

  // ---- helpers ----

  /**
   * Wraps a write in a transaction that always begins IMMEDIATE: it takes the write lock up front,
   * so a second process waits on busy_timeout instead of failing on a lock upgrade. A nested call
   * (from inside another transaction) becomes a savepoint.
   */
  private immediate<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
    const tx = this.db.transaction(fn.bind(this));
    return (...args: A) => tx.immediate(...args);
  }
}
