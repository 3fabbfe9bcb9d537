import Database from 'better-sqlite3';
import { ApiError, badRequest } from '../../core/errors.ts';
import type {
  Account,
  AttachmentMeta,
  Device,
  ECPreKey,
  Envelope,
  KeyUpload,
  KyberPreKey,
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
         (account_id, device_id, registration_id, password_hash, password_salt, created_at, push_subscription)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ),
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

    insertReceipt: s(
      `INSERT INTO send_receipts (source_account_id, source_device_id, message_id, expires_at) VALUES (?, ?, ?, ?)
       ON CONFLICT DO NOTHING`,
    ),
    insertEnvelope: s(
      `INSERT INTO envelopes
         (account_id, device_id, guid, type, source_account_id, source_device_id, timestamp, server_timestamp,
          content, expires_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    fetchQueue: s<EnvelopeRow>(
      `SELECT * FROM envelopes
        WHERE account_id = ? AND device_id = ? AND position > ? AND expires_at > ?
        ORDER BY position LIMIT ?`,
    ),
    deleteEnvelope: s('DELETE FROM envelopes WHERE account_id = ? AND device_id = ? AND guid = ?'),
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

  private constructor(db: Database.Database) {
    this.db = db;
    this.q = prepareStatements(db);
    this.tx = {
      createAccount: this.immediate(this.createAccountWrite),
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
    const db = new Database(path, { timeout: busyTimeoutMs });
    try {
      db.pragma(`busy_timeout = ${busyTimeoutMs}`);
      db.pragma('journal_mode = WAL');
      db.pragma(`synchronous = ${options.synchronous ?? 'FULL'}`);
      db.pragma('foreign_keys = ON');
      migrate(db);
      return new SqliteStorage(db);
    } catch (error) {
      db.close();
      throw error;
    }
  }

  close(): void {
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
      throw new ApiError(409, 'verification_session_consumed', 'the verification session was already used');
    }
    if (session.verified !== 1) {
      throw new ApiError(403, 'verification_session_not_verified', 'the number has not been verified');
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
    const row = this.q.getDevice.get(accountId, deviceId);
    return row ? toDevice(row) : null;
  }

  async listDevices(accountId: string): Promise<Device[]> {
    return this.q.listDevices.all(accountId).map(toDevice);
  }

  async setPushSubscription(accountId: string, deviceId: number, subscription: string | null): Promise<void> {
    this.q.setPush.run(subscription, accountId, deviceId);
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
    return this.tx.insertEnvelopes(envelopes, receipt);
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
    return this.q.fetchQueue.all(accountId, deviceId, after, now, Math.max(0, Math.floor(limit))).map(toEnvelope);
  }

  async deleteEnvelope(accountId: string, deviceId: number, guid: string): Promise<boolean> {
    return this.q.deleteEnvelope.run(accountId, deviceId, guid).changes > 0;
  }

  async countQueue(accountId: string, deviceId: number, now: number): Promise<number> {
    return (this.q.countQueue.get(accountId, deviceId, now) as { n: number }).n;
  }

  private deleteExpiredWrite(now: number): number {
    const envelopes = this.q.deleteExpiredEnvelopes.run(now).changes;
    this.q.deleteExpiredReceipts.run(now);
    this.q.deleteExpiredRateLimits.run(now);
    return envelopes;
  }

  /** Also drops rate-limit windows that have ended (they would start over on the next hit anyway). */
  async deleteExpired(now: number): Promise<number> {
    return this.tx.deleteExpired(now);
  }

  /** Unexpired envelopes in all queues (the queue-depth gauge of /metrics). */
  async countAllEnvelopes(now: number): Promise<number> {
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
