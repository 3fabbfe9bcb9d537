/**
 * The ports of the service core: everything the domain needs from the outside world. The
 * standalone server implements them with SQLite, files and a dev SMS sender; the AWS deployment
 * with DynamoDB, S3, SNS. Both run the same core and the same storage contract tests.
 *
 * Every method that writes is atomic and durable when its promise resolves.
 */

/** A phone-number verification in progress. The code itself is never stored, only its keyed hash. */
export interface VerificationSession {
  id: string;
  /** E.164, e.g. "+14155550123". */
  number: string;
  codeHash: Uint8Array;
  createdAt: number;
  /** When the current code stops being accepted (10 minutes after it was sent). */
  expiresAt: number;
  /** Wrong codes submitted so far (at most 5 are allowed). */
  failedAttempts: number;
  verified: boolean;
  /** Set once an account was created from this session, so it cannot be used twice. */
  consumed: boolean;
}

export interface Account {
  id: string;
  number: string;
  /** The 33-byte Curve25519 identity public key (0x05 ‖ 32 bytes). */
  identityKey: Uint8Array;
  name?: string;
  createdAt: number;
}

export interface Device {
  accountId: string;
  deviceId: number;
  registrationId: number;
  /** Salted SHA-256 of the device's random high-entropy password (see core/credentials.ts). */
  passwordHash: Uint8Array;
  passwordSalt: Uint8Array;
  createdAt: number;
  /** A Web Push subscription (JSON) for wake-ups when the device has no live socket. */
  pushSubscription?: string;
  /** The device's name, encrypted by the client (opaque to the server); linked devices only. */
  name?: Uint8Array;
}

/** A one-time code with which a new device joins an account (see core/devices.ts). */
export interface LinkCode {
  /** SHA-256 of the code; the code itself is never stored. */
  codeHash: Uint8Array;
  accountId: string;
  createdAt: number;
  /** The code is refused from this time on (10 minutes after it was made). */
  expiresAt: number;
}

/** A provisioning message from an account's primary device to a new device, parked at a random address. */
export interface ProvisioningMessage {
  /** Chosen by the new device: base64url, 22 to 64 characters. */
  address: string;
  /** The account whose primary device left it (dropped with the account). */
  accountId: string;
  /** Encrypted by the primary device to the new device's ephemeral key; opaque to the server. */
  body: Uint8Array;
  expiresAt: number;
}

export interface ECPreKey {
  keyId: number;
  /** 33 bytes, 0x05 ‖ 32. */
  publicKey: Uint8Array;
}

export interface SignedECPreKey extends ECPreKey {
  signature: Uint8Array;
}

export interface KyberPreKey {
  keyId: number;
  /** 1569 bytes, 0x08 ‖ 1568. */
  publicKey: Uint8Array;
  signature: Uint8Array;
}

/** What a device uploads; every part is optional except at registration. */
export interface KeyUpload {
  preKeys?: ECPreKey[];
  pqPreKeys?: KyberPreKey[];
  signedPreKey?: SignedECPreKey;
  pqLastResortPreKey?: KyberPreKey;
}

/** The keys of one device taken for one bundle: one-time keys are removed as they are taken. */
export interface TakenKeys {
  signedPreKey: SignedECPreKey;
  preKey?: ECPreKey;
  pqPreKey: KyberPreKey;
  /** True when the one-time Kyber keys ran out and the last-resort key was handed out. */
  pqLastResort: boolean;
}

export interface Envelope {
  guid: string;
  /** The ciphertext type (libsignal CiphertextMessageType: 2 Whisper, 3 PreKey, 7 SenderKey, ...). */
  type: number;
  sourceAccountId: string;
  sourceDeviceId: number;
  destinationAccountId: string;
  destinationDeviceId: number;
  /** The sender's timestamp (ms). */
  timestamp: number;
  /** When the server stored it (ms). */
  serverTimestamp: number;
  /** The opaque ciphertext. */
  content: Uint8Array;
  /** Undelivered envelopes are dropped after this time (30 days after storing). */
  expiresAt: number;
}

/** A queued envelope with its position in the device's FIFO queue. */
export interface QueuedEnvelope extends Envelope {
  /** Opaque to the core; only handed back to `fetchQueue` to page through a queue. */
  cursor: string;
}

/** A client-chosen message id seen before: a retried send returns the first answer. */
export interface SendReceipt {
  sourceAccountId: string;
  sourceDeviceId: number;
  messageId: string;
  expiresAt: number;
}

export interface VerificationStore {
  insertVerificationSession(session: VerificationSession): Promise<void>;
  getVerificationSession(id: string): Promise<VerificationSession | null>;
  updateVerificationSession(session: VerificationSession): Promise<void>;
}

export interface RateLimitStore {
  /**
   * Counts one hit on `key` in a fixed window of `windowMs` that starts at the first hit, and
   * returns the count including this hit and when the window ends. Atomic under concurrency.
   */
  hit(key: string, windowMs: number, now: number): Promise<{ count: number; resetAt: number }>;
}

export interface AccountStore {
  /**
   * Creates the account with its first device and keys. If an account already holds `number`, it
   * is replaced in the same transaction: all its devices (linked ones too), their keys, queued
   * envelopes and send receipts, its link codes and provisioning messages are dropped (so its
   * credentials stop working). Returns the replaced account's id, if any.
   */
  createAccount(
    account: Account,
    device: Device,
    keys: Required<Pick<KeyUpload, 'signedPreKey' | 'pqLastResortPreKey'>> & KeyUpload,
    consumeVerificationSessionId: string,
  ): Promise<{ replacedAccountId?: string }>;
  getAccount(id: string): Promise<Account | null>;
  getAccountByNumber(number: string): Promise<Account | null>;
  getDevice(accountId: string, deviceId: number): Promise<Device | null>;
  listDevices(accountId: string): Promise<Device[]>;
  setPushSubscription(accountId: string, deviceId: number, subscription: string | null): Promise<void>;
}

export interface DeviceStore {
  /**
   * Stores a link code. Rejects with ApiError 404 when the account does not exist (e.g. its number
   * was just re-registered).
   */
  insertLinkCode(code: LinkCode): Promise<void>;
  /** The link code with this hash, or null. An expired code may still be returned until `deleteExpired`. */
  getLinkCode(codeHash: Uint8Array): Promise<LinkCode | null>;
  /**
   * Links a new device in one transaction: consumes the link code (it must exist, belong to
   * `device.accountId` and have `expiresAt > now`), gives the device the lowest free id from 2 to
   * `maxDevices`, and stores it with its keys. Any queue or send receipts left under that id by a
   * removed device are dropped. Rejects with ApiError 403 `link_code_invalid` (unknown, used,
   * expired or another account's code) or 409 `too_many_devices` (the account has `maxDevices`
   * devices); a rejected call changes nothing, so the code stays usable. Of concurrent calls with
   * one code, exactly one succeeds. Returns the stored device.
   */
  linkDevice(
    codeHash: Uint8Array,
    device: Omit<Device, 'deviceId'>,
    keys: Required<Pick<KeyUpload, 'signedPreKey' | 'pqLastResortPreKey'>> & KeyUpload,
    now: number,
    maxDevices: number,
  ): Promise<Device>;
  /**
   * Removes a device with its keys, its queue and its send receipts in one transaction, so its
   * credentials stop working at once. False (and nothing changes) when there is no such device.
   */
  removeDevice(accountId: string, deviceId: number): Promise<boolean>;
  /**
   * Stores a provisioning message, replacing any other at the same address. Rejects with ApiError
   * 404 when the account does not exist.
   */
  putProvisioningMessage(message: ProvisioningMessage): Promise<void>;
  /**
   * Removes and returns the body of the message at `address`: null when there is none or it has
   * expired (`expiresAt <= now`). Of concurrent calls, at most one gets the body.
   */
  takeProvisioningMessage(address: string, now: number): Promise<Uint8Array | null>;
}

export interface KeyStore {
  /** Stores an upload atomically; one-time keys are added (an existing id is replaced). */
  storeKeys(accountId: string, deviceId: number, upload: KeyUpload): Promise<void>;
  countKeys(accountId: string, deviceId: number): Promise<{ preKeys: number; pqPreKeys: number }>;
  /**
   * Takes one bundle's keys for a device: removes and returns one one-time EC prekey (if any) and
   * one one-time Kyber prekey, or returns the last-resort Kyber key when none is left. Never hands
   * the same one-time key out twice, also under concurrent calls. Null if the device has no keys.
   */
  takeKeys(accountId: string, deviceId: number): Promise<TakenKeys | null>;
}

export interface MessageStore {
  /**
   * Stores all envelopes in one transaction, durable on return. With a receipt, the insert happens
   * only if that (source, message id) was not seen before; returns false for such a duplicate.
   */
  insertEnvelopes(envelopes: Envelope[], receipt?: SendReceipt): Promise<boolean>;
  /** A device's unexpired envelopes in FIFO order, after `afterCursor` when given. */
  fetchQueue(
    accountId: string,
    deviceId: number,
    limit: number,
    now: number,
    afterCursor?: string,
  ): Promise<QueuedEnvelope[]>;
  /** Deletes one envelope from this device's queue only; false if it was not there. */
  deleteEnvelope(accountId: string, deviceId: number, guid: string): Promise<boolean>;
  countQueue(accountId: string, deviceId: number, now: number): Promise<number>;
  /**
   * Drops expired envelopes and send receipts, and (being one storage) expired link codes and
   * provisioning messages, ended rate-limit windows, and verification sessions, whatever their
   * state, once `expiresAt + VERIFICATION_SESSION_RETENTION_MS <= now` (core/limits.ts: a day
   * after their code expired); returns how many envelopes went.
   */
  deleteExpired(now: number): Promise<number>;
}

export interface AttachmentMeta {
  id: string;
  size: number;
  createdAt: number;
  expiresAt: number;
}

/** Encrypted attachment blobs (files on disk standalone, S3 on AWS). */
export interface AttachmentStore {
  /**
   * Streams `body` into a new blob; rejects with PayloadTooLargeError past `maxBytes` and stores
   * nothing in that case.
   */
  put(id: string, body: ReadableStream<Uint8Array>, maxBytes: number, expiresAt: number): Promise<AttachmentMeta>;
  get(id: string, now: number): Promise<{ meta: AttachmentMeta; body: ReadableStream<Uint8Array> } | null>;
  deleteExpired(now: number): Promise<number>;
}

export type Storage = VerificationStore & RateLimitStore & AccountStore & DeviceStore & KeyStore & MessageStore;

/** Sends verification codes. */
export interface SmsSender {
  sendVerificationCode(number: string, code: string): Promise<void>;
}

/** Wakes a device that has no live socket. The payload carries no content, only "you have mail". */
export interface PushSender {
  wake(device: { accountId: string; deviceId: number; pushSubscription?: string }): Promise<void>;
}

export interface Clock {
  now(): number;
}

/** Live delivery: the in-process socket registry standalone, API Gateway connections on AWS. */
export interface DeliveryNotifier {
  /** Tells the device's live connection that its queue grew. False when it has none. */
  notify(accountId: string, deviceId: number): Promise<boolean>;
  /**
   * Closes the device's live connections (it was removed). Standalone: WebSocket close code 4403,
   * after the answers to requests the socket is being served.
   */
  disconnect(accountId: string, deviceId: number): Promise<void>;
}
