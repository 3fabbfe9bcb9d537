import {
  CiphertextMessageType,
  type CryptoProvider,
  DuplicatedMessageError,
  Fingerprint,
  IdentityChange,
  IdentityKeyPair,
  KEMPublicKey,
  ProtocolAddress,
  ProtocolError,
  PublicKey,
  SenderKeyDistributionMessage,
  type SessionRecord,
  UntrustedIdentityError,
  createSenderKeyDistributionMessage,
  generateRegistrationId,
  groupDecrypt,
  groupEncrypt,
  processPreKeyBundle,
  processSenderKeyDistributionMessage,
  signalDecrypt,
  signalDecryptPreKey,
  signalEncrypt,
} from '@hush/protocol';
import {
  type AccountRecord,
  initialKeys,
  loadAccount,
  maintainKeys,
  newDevicePassword,
  saveAccount,
} from './account.ts';
import { decryptAttachment, encryptAttachment, openBlob, sealBlob } from './content/attachment-crypto.ts';
import {
  type Content,
  type DataMessage,
  type ExpirationTimerUpdate,
  GroupUpdate_Action,
  ReceiptMessage_Type,
  TypingMessage_Action,
  decodeContent,
  deviceLinkedContent,
  encodeContent,
  expirationTimerContent,
  groupUpdateContent,
  reactionContent,
  receiptContent,
  retryRequestContent,
  senderKeyDistributionContent,
  syncReadContent,
  syncSentContent,
  textContent,
  typingContent,
} from './content/content.ts';
import {
  type Conversation,
  type StoredMessage,
  deleteExpiredMessages,
  getConversation,
  getMessage,
  listConversations,
  listMessages,
  messageId,
  putConversation,
  putMessage,
} from './messages-store.ts';
import {
  type LinkRequest,
  ProvisioningError,
  decodeProvisionMessage,
  encodeProvisionMessage,
  linkUri,
  newLinkRequest,
  openProvisioning,
  parseLinkUri,
  sealProvisioning,
} from './provisioning.ts';
import type { KeyValueStore } from './store/kv.ts';
import { type Contact, NS, getContact, protocolStores, putContact } from './store/protocol-stores.ts';
import { StagedStore, jsonValue, parseJson } from './store/staged.ts';
import { ApiError, type Envelope, HttpApi, type OutgoingMessage } from './transport/http-api.ts';
import { LiveConnection, type SocketFactory } from './transport/socket.ts';
import { fromBase64, toBase64 } from './util/base64.ts';

export interface Group {
  /** hex of the 16-byte group id. */
  id: string;
  name: string;
  /** Account ids, including ours while we are a member. */
  members: string[];
  revision: number;
  /** Our current sender-key distribution id for this group (a new one after every removal). */
  distributionId: string;
  active: boolean;
}

export type ClientEvent =
  | { type: 'message'; message: StoredMessage }
  | { type: 'message-updated'; message: StoredMessage }
  | { type: 'typing'; from: string; started: boolean; groupId?: string }
  | { type: 'identity-changed'; accountId: string }
  | { type: 'decryption-failed'; from: string; timestamp: number; reason: string }
  | { type: 'group-updated'; group: Group }
  | { type: 'expired'; ids: string[] }
  | { type: 'connection'; state: string; detail?: string }
  | { type: 'queue-empty' }
  | { type: 'device-linked'; deviceId: number };

export interface HushClientOptions {
  serverUrl: string;
  /**
   * The live socket's URL. Default: the server's `/v1/websocket` (ws:// or wss://). The AWS
   * deployment without one origin in front of both APIs gives its WebSocket API's own URL
   * (`wss://{api}.execute-api.{region}.amazonaws.com/{stage}`).
   */
  socketUrl?: string;
  store: KeyValueStore;
  crypto: CryptoProvider;
  /** Opens WebSockets (Node: the `ws` package with headers; browsers: the global WebSocket with a token). */
  openSocket?: SocketFactory;
  /** Browsers cannot set headers on a WebSocket: use single-use tokens instead. */
  socketAuth?: 'header' | 'token';
  now?: () => number;
}

/** The user is not registered on this device yet. */
export class NotRegisteredError extends Error {
  constructor() {
    super('this device is not registered: run `hush register` first');
    this.name = 'NotRegisteredError';
  }
}

/** An account id the client knows nothing about and the server does not know either. */
export class UnknownContactError extends Error {
  constructor(readonly who: string) {
    super(`unknown contact: ${who}`);
    this.name = 'UnknownContactError';
  }
}

const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
const unhex = (text: string) => Uint8Array.from(text.match(/../g) ?? [], (b) => Number.parseInt(b, 16));
const uuidBytes = (uuid: string) => unhex(uuid.replaceAll('-', ''));
const GROUP_PREFIX = 'group:';
const SAFETY_NUMBER_CHANGED = 'Their safety number changed. Verify it before sending: `hush safety-number`.';
const OUTBOX = 'outbox';
/** Per group and sender-key distribution id: the devices (`account.device.registrationId`) that have our key. */
const SENDER_KEY_SHARED = 'sender-key-shared';
/** How long a new device waits for the primary to scan its QR code (the link code lives as long). */
const LINK_TIMEOUT_MS = 10 * 60 * 1000;
const DEVICE_NAME_INFO = new TextEncoder().encode('Hush Device Name v1');

/** A device the account has, with its name decrypted (if it has one). */
export interface LinkedDevice {
  deviceId: number;
  name?: string;
  createdAt: number;
  /** This device. */
  current: boolean;
}

/** One device a message went to: its id and the registration id of the session used. */
interface DeliveredDevice {
  deviceId: number;
  registrationId: number;
}

/** A message waiting to be confirmed by the server: its padded content, kept encrypted at rest. */
interface OutboxEntry {
  conversationId: string;
  timestamp: number;
  content: string;
}

/** The body of a 409 (missing / extra devices) or 410 (re-registered devices) answer for one account. */
interface DeviceMismatch {
  accountId?: string;
  missingDevices?: number[];
  extraDevices?: number[];
  staleDevices?: number[];
}

function isDeviceMismatch(error: unknown): error is ApiError {
  return error instanceof ApiError && (error.status === 409 || error.status === 410);
}

/** Errors that retrying cannot fix. */
function isPermanent(error: unknown): boolean {
  if (error instanceof UntrustedIdentityError || error instanceof UnknownContactError) return true;
  return (
    error instanceof ApiError &&
    error.status >= 400 &&
    error.status < 500 &&
    error.status !== 408 &&
    error.status !== 429
  );
}
const MAX_SEND_ATTEMPTS = 4;

/** Serializes work on the device's protocol state: one message at a time, in order. */
class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task, task);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

/**
 * A Hush device: registration and keys (steps 2-3), sending (4-6), receiving (7-9) and the
 * encrypted local store (10). Every receive is one atomic unit: the ratchet update, the stored
 * message and the de-duplication mark are committed together before the envelope is acknowledged.
 */
export class HushClient {
  readonly api: HttpApi;
  private readonly mutex = new Mutex();
  private readonly listeners = new Set<(event: ClientEvent) => void>();
  private live: LiveConnection | undefined;
  private self: { account: AccountRecord; identity: IdentityKeyPair } | undefined;
  private readonly now: () => number;
  private readonly crypto: CryptoProvider;

  constructor(private readonly options: HushClientOptions) {
    this.api = new HttpApi(options.serverUrl);
    this.crypto = options.crypto;
    this.now = options.now ?? Date.now;
  }

  on(listener: (event: ClientEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(event: ClientEvent): void {
    for (const listener of this.listeners) listener(event);
  }

  /** Loads the registered account from the store, if any. */
  async load(): Promise<AccountRecord | undefined> {
    this.self = await loadAccount(new StagedStore(this.options.store));
    if (this.self) {
      this.api.setCredentials(this.self.account);
    }
    return this.self?.account;
  }

  get account(): AccountRecord {
    if (!this.self) throw new NotRegisteredError();
    return this.self.account;
  }

  get identity(): IdentityKeyPair {
    if (!this.self) throw new NotRegisteredError();
    return this.self.identity;
  }

  private get address(): ProtocolAddress {
    return new ProtocolAddress(this.account.accountId, this.account.deviceId);
  }

  /** Runs `work` in one unit of work under the device mutex and commits it. */
  private unitOfWork<T>(
    work: (unit: StagedStore, stores: ReturnType<typeof protocolStores>) => Promise<T>,
  ): Promise<T> {
    return this.mutex.run(async () => {
      const unit = new StagedStore(this.options.store);
      const result = await work(unit, protocolStores(unit, this.identity, this.account.registrationId));
      await unit.commit();
      return result;
    });
  }

  // ---------------------------------------------------------------- registration (steps 2-3)

  /** Step 2, first half: the server sends an SMS code to `number`. Returns the session id. */
  async requestCode(number: string): Promise<{ sessionId: string; number: string }> {
    const session = await this.api.startVerification(number);
    return { sessionId: session.id, number: session.number };
  }

  /**
   * Step 2, second half, and step 3: submits the code, generates the identity and all prekeys on
   * this device, registers, and stores everything encrypted. `onProgress` reports the slow part.
   */
  async register(sessionId: string, code: string, onProgress?: (step: string) => void): Promise<AccountRecord> {
    const verified = await this.api.submitCode(sessionId, code);
    onProgress?.('number verified; generating identity and 200 prekeys on this device');
    const identity = await IdentityKeyPair.generate(this.crypto);
    const registrationId = generateRegistrationId(this.crypto);
    const password = newDevicePassword(this.crypto);
    const unit = new StagedStore(this.options.store);
    const stores = protocolStores(unit, identity, registrationId);
    const now = this.now();
    const { upload, counters } = await initialKeys(this.crypto, identity, stores, now);
    onProgress?.('uploading public keys');
    const registered = await this.api.register({
      verificationSessionId: sessionId,
      password,
      identityKey: identity.publicKey.serialize(),
      registrationId,
      keys: upload,
    });
    const account: AccountRecord = {
      serverUrl: this.options.serverUrl,
      number: verified.number,
      accountId: registered.accountId,
      deviceId: registered.deviceId,
      password,
      registrationId,
      ...counters,
    };
    unit.put('account', 'identity', identity.serialize());
    saveAccount(unit, account);
    await unit.commit();
    this.self = { account, identity };
    this.api.setCredentials(account);
    return account;
  }

  /**
   * Keeps one-time keys stocked on the server, rotates the signed and last-resort keys, and
   * catches up with the account's device list (devices linked or removed elsewhere).
   */
  async maintainKeys() {
    const uploaded = await this.unitOfWork(async (unit, stores) => {
      const result = await maintainKeys(this.crypto, this.api, unit, stores, this.identity, this.account, this.now());
      saveAccount(unit, result.account);
      (this.self as { account: AccountRecord }).account = result.account;
      return result.uploaded;
    });
    await this.syncDevices();
    return uploaded;
  }

  // ---------------------------------------------------------------- linked devices

  /**
   * On a new device: hands `onLinkUri` the link to show as a QR code, waits until the account's
   * primary device scans it (`linkDevice` there), then joins the account with keys generated here.
   * The account's identity key pair arrives encrypted to this attempt's ephemeral key; every other
   * key is this device's own.
   */
  async linkAsNewDevice(options: {
    onLinkUri: (uri: string) => void;
    /** This device's name as the account's devices list shows it (encrypted; the server cannot read it). */
    name?: string;
    onProgress?: (step: string) => void;
    pollIntervalMs?: number;
    timeoutMs?: number;
    signal?: AbortSignal;
  }): Promise<AccountRecord> {
    if (this.self) throw new Error('this device is already registered');
    const { request, privateKey } = await newLinkRequest(this.crypto);
    options.onLinkUri(linkUri(request));
    const sealed = await this.waitForProvisioning(request, options);
    const provision = decodeProvisionMessage(await openProvisioning(this.crypto, privateKey, sealed));
    options.onProgress?.('scanned by the primary device; generating this device’s keys');
    const identity = provision.identity;
    const registrationId = generateRegistrationId(this.crypto);
    const password = newDevicePassword(this.crypto);
    const unit = new StagedStore(this.options.store);
    const stores = protocolStores(unit, identity, registrationId);
    const { upload, counters } = await initialKeys(this.crypto, identity, stores, this.now());
    options.onProgress?.('joining the account');
    const name = options.name ? await this.sealDeviceName(identity, options.name) : undefined;
    const linked = await this.api.linkDevice({
      code: provision.linkCode,
      password,
      registrationId,
      ...(name ? { name } : {}),
      keys: upload,
    });
    const account: AccountRecord = {
      serverUrl: this.options.serverUrl,
      number: linked.number,
      accountId: linked.accountId,
      deviceId: linked.deviceId,
      password,
      registrationId,
      ...counters,
    };
    unit.put('account', 'identity', identity.serialize());
    saveAccount(unit, account);
    for (const c of provision.contacts) {
      putContact(unit, {
        accountId: c.accountId,
        ...(c.name ? { name: c.name } : {}),
        ...(c.number ? { number: c.number } : {}),
        ...(c.identityKey.length > 0 ? { identityKey: toBase64(c.identityKey) } : {}),
        trust: c.verified ? 'verified' : 'unverified',
      });
    }
    for (const g of provision.groups) {
      const group: Group = {
        id: hex(g.id),
        name: g.name,
        members: [...g.members],
        revision: g.revision,
        distributionId: crypto.randomUUID(),
        active: true,
      };
      unit.put('groups', group.id, jsonValue(group));
    }
    await unit.commit();
    this.self = { account, identity };
    this.api.setCredentials(account);
    // Hello to the account's other devices: they set up their sessions with this one from it.
    await this.syncDevices();
    await this.syncToOwnDevices(deviceLinkedContent(), this.now(), `linked:${account.deviceId}:${registrationId}`);
    return account;
  }

  private async waitForProvisioning(
    request: LinkRequest,
    options: { pollIntervalMs?: number; timeoutMs?: number; signal?: AbortSignal },
  ): Promise<Uint8Array> {
    const deadline = this.now() + (options.timeoutMs ?? LINK_TIMEOUT_MS);
    for (;;) {
      options.signal?.throwIfAborted();
      const sealed = await this.api.takeProvisioningMessage(request.address);
      if (sealed) return sealed;
      if (this.now() >= deadline) throw new ProvisioningError('the link was not scanned in time; start again');
      await new Promise((resolve) => setTimeout(resolve, options.pollIntervalMs ?? 1000));
    }
  }

  /**
   * On the primary device: links the new device whose QR code (`hush://link?…`) was scanned. It
   * receives the account's identity key pair, contacts (with the identity keys trusted here) and
   * groups, encrypted to its ephemeral key; the server relays them without being able to read them.
   */
  async linkDevice(uri: string): Promise<void> {
    const request = parseLinkUri(uri);
    const { code } = await this.api.linkCode();
    const contacts = await this.contacts();
    const groups = (await this.groups()).filter((g) => g.active);
    const message = encodeProvisionMessage({
      identityKeyPair: this.identity.serialize(),
      accountId: this.account.accountId,
      number: this.account.number,
      linkCode: code,
      contacts: contacts.map((c) => ({
        accountId: c.accountId,
        name: c.name ?? '',
        number: c.number ?? '',
        // A change the user has not accepted stays unaccepted on the new device: it gets the key the
        // user trusted, and sees the change when the contact's new key shows up.
        identityKey: fromBase64((c.trust === 'changed' ? c.previousIdentityKey : c.identityKey) ?? ''),
        verified: c.trust === 'verified',
      })),
      groups: groups.map((g) => ({ id: unhex(g.id), name: g.name, members: g.members, revision: g.revision })),
    });
    await this.api.putProvisioningMessage(
      request.address,
      await sealProvisioning(this.crypto, request.publicKey, message),
    );
  }

  /** The account's devices, with their names decrypted. */
  async devices(): Promise<LinkedDevice[]> {
    const { devices } = await this.api.devices();
    return Promise.all(
      devices.map(async (d) => ({
        deviceId: d.deviceId,
        createdAt: d.createdAt,
        current: d.deviceId === this.account.deviceId,
        ...(d.name ? { name: await this.openDeviceName(d.name) } : {}),
      })),
    );
  }

  /** Unlinks a device (the primary: any other device; a linked device: itself). */
  async removeDevice(deviceId: number): Promise<void> {
    await this.api.removeDevice(deviceId);
    await this.unitOfWork(async (unit) => {
      unit.delete(NS.sessions, new ProtocolAddress(this.account.accountId, deviceId).toString());
    });
  }

  /** Brings our sessions with our own other devices in line with the server's list of them. */
  async syncDevices(): Promise<void> {
    const { devices } = await this.api.devices();
    const self = this.account.accountId;
    const listed = new Map(
      devices.filter((d) => d.deviceId !== this.account.deviceId).map((d) => [d.deviceId, d.registrationId]),
    );
    await this.unitOfWork(async (unit, stores) => {
      const known = await this.sessionRegistrations(unit, stores, self);
      for (const k of known)
        if (listed.get(k.deviceId) !== k.registrationId)
          unit.delete(NS.sessions, new ProtocolAddress(self, k.deviceId).toString());
      for (const [deviceId, registrationId] of listed)
        if (!known.some((k) => k.deviceId === deviceId && k.registrationId === registrationId))
          await this.establish(stores, self, deviceId);
    });
  }

  /** Device names are encrypted under a key only the account's devices can derive (from the identity key). */
  private async deviceNameKey(identity: IdentityKeyPair): Promise<Uint8Array> {
    return this.crypto.hkdfSha256(identity.privateKey.serialize(), new Uint8Array(0), DEVICE_NAME_INFO, 64);
  }

  private async sealDeviceName(identity: IdentityKeyPair, name: string): Promise<Uint8Array> {
    return sealBlob(this.crypto, await this.deviceNameKey(identity), new TextEncoder().encode(name));
  }

  private async openDeviceName(sealed: Uint8Array): Promise<string> {
    try {
      return new TextDecoder().decode(await openBlob(this.crypto, await this.deviceNameKey(this.identity), sealed));
    } catch {
      return '(name unreadable)';
    }
  }

  // ---------------------------------------------------------------- contacts and trust

  async contact(accountId: string): Promise<Contact | undefined> {
    return getContact(new StagedStore(this.options.store), accountId);
  }

  /** Every account this device knows: saved names and numbers, and everyone it has exchanged keys with. */
  async contacts(): Promise<Contact[]> {
    return (await this.options.store.list(NS.contacts))
      .map(([, value]) => parseJson<Contact>(value) as Contact)
      .filter((c) => c.accountId !== this.self?.account.accountId);
  }

  /** Records a name or number for an account id (e.g. from the user's address book). */
  async saveContact(accountId: string, details: { name?: string; number?: string }): Promise<void> {
    await this.unitOfWork(async (unit) => {
      const contact = (await getContact(unit, accountId)) ?? { accountId, trust: 'unverified' as const };
      putContact(unit, { ...contact, ...details });
    });
  }

  /** The 60-digit safety number and the QR payload (base64) for a contact. */
  async safetyNumber(accountId: string): Promise<{ digits: string; qr: string; trust: Contact['trust'] }> {
    const contact = await this.contact(accountId);
    if (!contact?.identityKey) throw new UnknownContactError(accountId);
    const fingerprint = await Fingerprint.create(this.crypto, {
      version: 2,
      localIdentifier: uuidBytes(this.account.accountId),
      localKey: this.identity.publicKey,
      remoteIdentifier: uuidBytes(accountId),
      remoteKey: PublicKey.deserialize(fromBase64(contact.identityKey)),
    });
    return {
      digits: fingerprint.displayableString(),
      qr: toBase64(fingerprint.scannable.serialize()),
      trust: contact.trust,
    };
  }

  /**
   * The user accepts a contact's current identity key (after a change), optionally because the
   * scanned QR payload matched. Sending resumes only after this.
   */
  async acceptIdentity(accountId: string, scannedQr?: string): Promise<boolean> {
    let verified = false;
    if (scannedQr) {
      const contact = await this.contact(accountId);
      if (!contact?.identityKey) throw new UnknownContactError(accountId);
      const fingerprint = await Fingerprint.create(this.crypto, {
        version: 2,
        localIdentifier: uuidBytes(this.account.accountId),
        localKey: this.identity.publicKey,
        remoteIdentifier: uuidBytes(accountId),
        remoteKey: PublicKey.deserialize(fromBase64(contact.identityKey)),
      });
      verified = fingerprint.scannable.compare(fromBase64(scannedQr));
      if (!verified) return false;
    }
    await this.unitOfWork(async (unit) => {
      const contact = await getContact(unit, accountId);
      if (!contact) throw new UnknownContactError(accountId);
      const { previousIdentityKey: _, ...rest } = contact;
      putContact(unit, { ...rest, trust: verified ? 'verified' : 'unverified' });
    });
    return true;
  }

  // ---------------------------------------------------------------- sending (steps 4-6)

  /** Device ids we hold sessions with, from the session namespace (`accountId.deviceId`). */
  private async sessionDevices(unit: StagedStore, accountId: string): Promise<number[]> {
    return (await unit.list(NS.sessions, `${accountId}.`)).map(([key]) => Number(key.slice(accountId.length + 1)));
  }

  /** Step 4: fetches bundles and sets up sessions (PQXDH) with the given devices of an account. */
  private async establish(
    stores: ReturnType<typeof protocolStores>,
    accountId: string,
    deviceId: number | '*',
  ): Promise<void> {
    let bundles: Awaited<ReturnType<HttpApi['bundles']>>;
    try {
      bundles = await this.api.bundles(accountId, deviceId);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) throw new UnknownContactError(accountId);
      throw error;
    }
    const identityKey = PublicKey.deserialize(bundles.identityKey);
    const known = await stores.identity.getIdentity(new ProtocolAddress(accountId, 1));
    if (known && !known.equals(identityKey)) {
      // The server hands out a new identity key. It is never used silently: it is recorded as
      // changed (so the user can compare and accept it) and said so, then the send fails. This is
      // committed at once (we hold the device mutex); the caller's unit is dropped by the throw.
      const side = new StagedStore(this.options.store);
      const sideStores = protocolStores(side, this.identity, this.account.registrationId);
      const change = await sideStores.identity.saveIdentity(new ProtocolAddress(accountId, 1), identityKey);
      if (change === IdentityChange.ReplacedExisting) {
        await this.systemMessage(side, accountId, this.now(), SAFETY_NUMBER_CHANGED);
        await side.commit();
        this.emit({ type: 'identity-changed', accountId });
      }
      throw new UntrustedIdentityError(accountId);
    }
    for (const d of bundles.devices) {
      // Our own account's bundles include this device: no session with ourselves.
      if (accountId === this.account.accountId && d.deviceId === this.account.deviceId) continue;
      await processPreKeyBundle(
        this.crypto,
        {
          registrationId: d.registrationId,
          deviceId: d.deviceId,
          identityKey,
          signedPreKeyId: d.signedPreKey.keyId,
          signedPreKey: PublicKey.deserialize(d.signedPreKey.publicKey),
          signedPreKeySignature: d.signedPreKey.signature,
          kyberPreKeyId: d.pqPreKey.keyId,
          kyberPreKey: KEMPublicKey.deserialize(d.pqPreKey.publicKey),
          kyberPreKeySignature: d.pqPreKey.signature,
          ...(d.preKey ? { preKeyId: d.preKey.keyId, preKey: PublicKey.deserialize(d.preKey.publicKey) } : {}),
        },
        new ProtocolAddress(accountId, d.deviceId),
        stores,
      );
    }
  }

  /** Sends over the live socket when it is open (no HTTP round trip), else over HTTP. */
  private async transmit(accountId: string, messages: OutgoingMessage[], timestamp: number, id: string): Promise<void> {
    if (this.live?.isOpen) {
      try {
        const response = await this.live.request('PUT', `/v1/messages/${accountId}`, {
          messages: messages.map((m) => ({ ...m, content: toBase64(m.content) })),
          timestamp,
          id,
        });
        if (response.status === 200) return;
        const {
          code = 'http_error',
          message = `HTTP ${response.status}`,
          ...details
        } = (response.body as { error?: Record<string, unknown> })?.error ?? {};
        throw new ApiError(response.status, String(code), String(message), details);
      } catch (error) {
        if (error instanceof ApiError) throw error;
        // The socket dropped mid-request: fall back to HTTP with the same id (no duplicate).
      }
    }
    await this.api.sendMessages(accountId, messages, timestamp, id);
  }

  /**
   * Steps 5-6: encrypts `content` once per device of `accountId` and sends it; on 409/410 refreshes
   * the device list and sessions and tries again. `id` makes retries idempotent at the server.
   */
  private async sendContent(
    accountId: string,
    content: Content,
    timestamp: number,
    id: string,
  ): Promise<DeliveredDevice[]> {
    const plaintext = encodeContent(content);
    for (let attempt = 1; ; attempt++) {
      const messages = await this.unitOfWork(async (unit, stores) => {
        // Never all of our own account's bundles: that would spend this device's own one-time keys.
        const own = accountId === this.account.accountId;
        if (!own && (await this.sessionDevices(unit, accountId)).length === 0)
          await this.establish(stores, accountId, '*');
        const out: OutgoingMessage[] = [];
        for (const deviceId of await this.sessionDevices(unit, accountId)) {
          const address = new ProtocolAddress(accountId, deviceId);
          const encrypted = await signalEncrypt(this.crypto, plaintext, address, stores);
          const record = (await stores.sessions.getSession(address)) as SessionRecord;
          out.push({
            deviceId,
            registrationId: record.currentState()?.remoteRegistrationId ?? 0,
            type: encrypted.type,
            content: encrypted.serialized,
          });
        }
        return out;
      });
      // Only our own account can have no other device; nothing to send then.
      if (messages.length === 0) return [];
      try {
        await this.transmit(accountId, messages, timestamp, id);
        return messages.map(({ deviceId, registrationId }) => ({ deviceId, registrationId }));
      } catch (error) {
        if (!isDeviceMismatch(error) || attempt >= MAX_SEND_ATTEMPTS) throw error;
        await this.unitOfWork((unit, stores) =>
          this.refreshDevices(unit, stores, accountId, error.details as DeviceMismatch),
        );
      }
    }
  }

  /** After a 409/410: drops sessions with removed or re-registered devices, sets up new ones. */
  private async refreshDevices(
    unit: StagedStore,
    stores: ReturnType<typeof protocolStores>,
    accountId: string,
    d: DeviceMismatch,
  ): Promise<void> {
    for (const deviceId of [...(d.extraDevices ?? []), ...(d.staleDevices ?? [])]) {
      unit.delete(NS.sessions, new ProtocolAddress(accountId, deviceId).toString());
    }
    for (const deviceId of [...(d.missingDevices ?? []), ...(d.staleDevices ?? [])])
      await this.establish(stores, accountId, deviceId);
  }

  /** The devices of `accountId` we hold sessions with, and the registration ids those sessions name. */
  private async sessionRegistrations(
    unit: StagedStore,
    stores: ReturnType<typeof protocolStores>,
    accountId: string,
  ): Promise<DeliveredDevice[]> {
    const devices: DeliveredDevice[] = [];
    for (const deviceId of await this.sessionDevices(unit, accountId)) {
      const record = await stores.sessions.getSession(new ProtocolAddress(accountId, deviceId));
      devices.push({ deviceId, registrationId: record?.currentState()?.remoteRegistrationId ?? 0 });
    }
    return devices;
  }

  /**
   * Copies what this device did to the account's other (linked) devices, so all of them show the
   * same conversations. Nothing to do while this is the account's only device. Own devices are
   * learnt from `syncDevices`, a new device's hello, and 409 answers; never by fetching the
   * account's own bundles wholesale (that would spend this device's one-time keys).
   */
  private async syncToOwnDevices(content: Content, timestamp: number, id: string): Promise<void> {
    const self = this.account.accountId;
    if ((await this.sessionDevices(new StagedStore(this.options.store), self)).length === 0) return;
    await this.sendContent(self, content, timestamp, id);
  }

  private async conversationTimer(conversationId: string): Promise<number> {
    return (await getConversation(new StagedStore(this.options.store), conversationId))?.expireTimer ?? 0;
  }

  /**
   * Stores an outgoing message (status 'sending') together with its outbox entry, sends it, and
   * records the outcome. A transient failure (server down, 5xx, 429) leaves it in the outbox for
   * `flushOutbox`; a permanent one (unknown contact, untrusted identity, other 4xx) marks it failed.
   */
  private async sendAndRecord(message: StoredMessage, content: Content): Promise<StoredMessage> {
    const entry: OutboxEntry = {
      conversationId: message.conversationId,
      timestamp: message.timestamp,
      content: toBase64(encodeContent(content)),
    };
    await this.unitOfWork(async (unit) => {
      await putMessage(unit, message);
      unit.put(OUTBOX, message.id, jsonValue(entry));
    });
    try {
      await this.deliverOutgoing(message.id, entry.conversationId, content, entry.timestamp);
    } catch (error) {
      if (isPermanent(error)) await this.updateStatus(message.id, 'failed');
      throw error;
    }
    return this.updateStatus(message.id, 'sent');
  }

  private async deliverOutgoing(
    id: string,
    conversationId: string,
    content: Content,
    timestamp: number,
  ): Promise<void> {
    if (conversationId.startsWith(GROUP_PREFIX)) {
      await this.sendGroupContent(
        await this.requireGroup(conversationId.slice(GROUP_PREFIX.length)),
        content,
        timestamp,
        id,
      );
    } else {
      await this.sendContent(conversationId, content, timestamp, id);
      await this.syncToOwnDevices(syncSentContent(conversationId, content), timestamp, `${id}:sync`);
    }
  }

  /** Sends a text (and attachments) to an account or a group (`group:<id>`). */
  async sendText(
    conversationId: string,
    body: string,
    extra: { quote?: { id: number; author: string; text: string }; attachments?: StoredMessage['attachments'] } = {},
  ): Promise<StoredMessage> {
    const timestamp = this.now();
    const expireTimer = await this.conversationTimer(conversationId);
    const group = conversationId.startsWith(GROUP_PREFIX)
      ? await this.group(conversationId.slice(GROUP_PREFIX.length))
      : undefined;
    const content = textContent({
      timestamp,
      body,
      ...(extra.quote ? { quote: extra.quote } : {}),
      ...(extra.attachments
        ? {
            attachments: extra.attachments.map((a) => ({
              id: a.id,
              key: fromBase64(a.key),
              digest: fromBase64(a.digest),
              size: a.size,
              contentType: a.contentType,
              fileName: a.fileName,
            })),
          }
        : {}),
      ...(group ? { group: { id: unhex(group.id), revision: group.revision } } : {}),
      expireTimer,
    });
    const message: StoredMessage = {
      id: messageId(this.account.accountId, timestamp),
      conversationId,
      author: this.account.accountId,
      authorDevice: this.account.deviceId,
      timestamp,
      receivedAt: timestamp,
      direction: 'out',
      kind: 'text',
      body,
      ...(extra.quote ? { quote: extra.quote } : {}),
      ...(extra.attachments ? { attachments: extra.attachments } : {}),
      status: 'sending',
      ...(expireTimer ? { expiresAt: timestamp + expireTimer * 1000 } : {}),
    };
    return this.sendAndRecord(message, content);
  }

  /** Encrypts a file on this device, uploads the ciphertext, and sends the key and digest in a message. */
  async sendFile(
    conversationId: string,
    data: Uint8Array,
    fileName: string,
    contentType = 'application/octet-stream',
    caption = '',
  ) {
    const encrypted = await encryptAttachment(this.crypto, data);
    const uploaded = await this.api.uploadAttachment(encrypted.ciphertext);
    return this.sendText(conversationId, caption, {
      attachments: [
        {
          id: uploaded.id,
          key: toBase64(encrypted.key),
          digest: toBase64(encrypted.digest),
          size: encrypted.size,
          contentType,
          fileName,
        },
      ],
    });
  }

  /** Downloads an attachment and checks its digest and MAC before decrypting it. */
  async downloadAttachment(attachment: NonNullable<StoredMessage['attachments']>[number]): Promise<Uint8Array> {
    const ciphertext = await this.api.downloadAttachment(attachment.id);
    return decryptAttachment(
      this.crypto,
      ciphertext,
      fromBase64(attachment.key),
      fromBase64(attachment.digest),
      attachment.size,
    );
  }

  async react(conversationId: string, target: StoredMessage, emoji: string, remove = false): Promise<void> {
    const timestamp = this.now();
    const content = reactionContent({
      timestamp,
      emoji,
      targetAuthor: target.author,
      targetTimestamp: target.timestamp,
      remove,
    });
    await this.deliverControl(conversationId, content, timestamp);
  }

  async sendTyping(conversationId: string, started: boolean): Promise<void> {
    const timestamp = this.now();
    const group = conversationId.startsWith(GROUP_PREFIX)
      ? unhex(conversationId.slice(GROUP_PREFIX.length))
      : undefined;
    await this.deliverControl(
      conversationId,
      typingContent(started ? 'started' : 'stopped', timestamp, group),
      timestamp,
    );
  }

  /** Sets the disappearing-messages timer of a conversation (both sides). */
  async setExpireTimer(conversationId: string, seconds: number): Promise<void> {
    const timestamp = this.now();
    await this.unitOfWork(async (unit) => {
      const conversation = (await getConversation(unit, conversationId)) ?? {
        id: conversationId,
        kind: conversationId.startsWith(GROUP_PREFIX) ? ('group' as const) : ('direct' as const),
        lastMessageAt: timestamp,
        expireTimer: 0,
        unread: 0,
      };
      putConversation(unit, { ...conversation, expireTimer: seconds });
    });
    await this.deliverControl(conversationId, expirationTimerContent(timestamp, seconds), timestamp);
  }

  /** Marks a conversation read here and on our other devices; in a 1:1 conversation, sends read receipts. */
  async markRead(conversationId: string): Promise<void> {
    const unread = await this.unitOfWork(async (unit) => {
      const messages = await listMessages(unit, conversationId, 1000);
      const incoming = messages.filter((m) => m.direction === 'in' && m.kind === 'text' && m.status === 'received');
      for (const m of incoming) await putMessage(unit, { ...m, status: 'read' });
      const conversation = await getConversation(unit, conversationId);
      if (conversation) putConversation(unit, { ...conversation, unread: 0 });
      return incoming;
    });
    if (unread.length === 0) return;
    const timestamp = this.now();
    await this.syncToOwnDevices(
      syncReadContent(unread.map((m) => ({ author: m.author, timestamp: m.timestamp }))),
      timestamp,
      `read-sync:${conversationId}:${timestamp}`,
    );
    if (!conversationId.startsWith(GROUP_PREFIX)) {
      await this.sendContent(
        conversationId,
        receiptContent(
          'read',
          unread.map((m) => m.timestamp),
        ),
        timestamp,
        `read:${timestamp}`,
      );
    }
  }

  /** Content that is not a stored message of ours (reactions, typing, timers) to a person or a group. */
  private async deliverControl(conversationId: string, content: Content, timestamp: number): Promise<void> {
    if (conversationId.startsWith(GROUP_PREFIX)) {
      const group = await this.group(conversationId.slice(GROUP_PREFIX.length));
      if (!group) throw new UnknownContactError(conversationId);
      await this.sendGroupContent(group, content, timestamp);
    } else {
      await this.sendContent(conversationId, content, timestamp, `ctl:${timestamp}`);
      // Reactions and timer changes show on our other devices too; typing does not.
      if (content.body.case === 'dataMessage' || content.body.case === 'expirationTimerUpdate')
        await this.syncToOwnDevices(syncSentContent(conversationId, content), timestamp, `ctl:${timestamp}:sync`);
    }
  }

  // ---------------------------------------------------------------- outbox (survives restarts)

  /**
   * Re-sends messages that were stored but not confirmed sent before the client stopped (crash,
   * server down). The same message id is used, so the server stores each at most once, and the
   * exact stored content is sent again (attachments and quotes included).
   */
  async flushOutbox(): Promise<number> {
    let sent = 0;
    for (const [id, value] of await this.options.store.list(OUTBOX)) {
      const entry = parseJson<OutboxEntry>(value) as OutboxEntry;
      try {
        await this.deliverOutgoing(id, entry.conversationId, decodeContent(fromBase64(entry.content)), entry.timestamp);
      } catch (error) {
        if (!isPermanent(error)) throw error;
        await this.updateStatus(id, 'failed');
        continue;
      }
      await this.updateStatus(id, 'sent');
      sent++;
    }
    return sent;
  }

  private async updateStatus(id: string, status: StoredMessage['status']): Promise<StoredMessage> {
    const updated = await this.unitOfWork(async (unit) => {
      const message = await getMessage(unit, id);
      if (!message) return undefined;
      // Confirmed by the server (or given up): out of the outbox, even if a receipt came first.
      if (status === 'sent' || status === 'failed') unit.delete(OUTBOX, id);
      const rank = { failed: 0, sending: 1, sent: 2, delivered: 3, read: 4, received: 0 } as const;
      // Receipts can arrive out of order: never step back (read stays read).
      if (status !== 'failed' && rank[status] <= rank[message.status]) return message;
      const next = { ...message, status };
      await putMessage(unit, next);
      return next;
    });
    if (!updated) throw new Error(`no message ${id}`);
    this.emit({ type: 'message-updated', message: updated });
    return updated;
  }

  // ---------------------------------------------------------------- groups (Sender Keys)

  async group(id: string): Promise<Group | undefined> {
    return parseJson<Group>(await this.options.store.get('groups', id));
  }

  async groups(): Promise<Group[]> {
    return (await this.options.store.list('groups')).map(([, v]) => parseJson<Group>(v) as Group);
  }

  /** Creates a group; every member gets the membership and our sender key over pairwise sessions. */
  async createGroup(name: string, members: string[]): Promise<Group> {
    const group: Group = {
      id: hex(this.crypto.randomBytes(16)),
      name,
      members: [...new Set([this.account.accountId, ...members])],
      revision: 1,
      distributionId: crypto.randomUUID(),
      active: true,
    };
    await this.options.store.apply({ put: [['groups', group.id, jsonValue(group)]] });
    await this.announceGroup(group, 'create', group.members);
    return group;
  }

  async addMember(groupId: string, accountId: string): Promise<Group> {
    const group = await this.requireGroup(groupId);
    const next = { ...group, members: [...new Set([...group.members, accountId])], revision: group.revision + 1 };
    await this.options.store.apply({ put: [['groups', groupId, jsonValue(next)]] });
    await this.announceGroup(next, 'add', next.members);
    return next;
  }

  /** Removes a member and re-keys: the removed member cannot read what follows. */
  async removeMember(groupId: string, accountId: string): Promise<Group> {
    const group = await this.requireGroup(groupId);
    const next: Group = {
      ...group,
      members: group.members.filter((m) => m !== accountId),
      revision: group.revision + 1,
      distributionId: crypto.randomUUID(),
    };
    await this.options.store.apply({ put: [['groups', groupId, jsonValue(next)]] });
    await this.announceGroup(next, 'remove', [...next.members, accountId]);
    return next;
  }

  async leaveGroup(groupId: string): Promise<void> {
    const group = await this.requireGroup(groupId);
    const next: Group = {
      ...group,
      members: group.members.filter((m) => m !== this.account.accountId),
      revision: group.revision + 1,
      active: false,
    };
    await this.options.store.apply({ put: [['groups', groupId, jsonValue(next)]] });
    await this.announceGroup(next, 'leave', group.members, false);
  }

  private async requireGroup(groupId: string): Promise<Group> {
    const group = await this.group(groupId);
    if (!group?.active) throw new UnknownContactError(`${GROUP_PREFIX}${groupId}`);
    return group;
  }

  /** Sends a group update (with our current sender key for members) to `recipients` pairwise. */
  private async announceGroup(
    group: Group,
    action: 'create' | 'add' | 'remove' | 'leave',
    recipients: string[],
    withKey = true,
  ) {
    const timestamp = this.now();
    const skdm = withKey ? await this.ourSenderKey(group) : undefined;
    const self = this.account.accountId;
    const update = (withSenderKey: boolean) =>
      groupUpdateContent({
        timestamp,
        groupId: unhex(group.id),
        action,
        revision: group.revision,
        name: group.name,
        members: group.members,
        ...(skdm && withSenderKey ? { senderKeyDistribution: skdm } : {}),
      });
    for (const accountId of recipients) {
      if (accountId === self) continue;
      const stillMember = group.members.includes(accountId);
      const id = `group:${group.id}:${group.revision}:${accountId}`;
      const devices = await this.sendContent(accountId, update(stillMember), timestamp, id);
      if (skdm && stillMember) await this.markSenderKeyShared(group, accountId, devices);
    }
    // Our other devices keep the same membership.
    await this.syncToOwnDevices(update(skdm !== undefined), timestamp, `group:${group.id}:${group.revision}:${self}`);
  }

  /** Records that these devices of `accountId` hold our current sender key for the group. */
  private async markSenderKeyShared(group: Group, accountId: string, devices: DeliveredDevice[]): Promise<void> {
    await this.unitOfWork(async (unit) => {
      const key = `${group.id}:${group.distributionId}`;
      const shared = new Set(parseJson<string[]>(await unit.get(SENDER_KEY_SHARED, key)) ?? []);
      for (const d of devices) shared.add(`${accountId}.${d.deviceId}.${d.registrationId}`);
      unit.put(SENDER_KEY_SHARED, key, jsonValue([...shared]));
    });
  }

  /**
   * Before a group message: sends our sender key pairwise to every recipient device that does not
   * have it yet (a member's newly linked or re-registered device, one of our own devices), so that
   * no device is left unable to decrypt.
   */
  private async shareSenderKey(
    group: Group,
    recipients: { accountId: string; devices: DeliveredDevice[] }[],
  ): Promise<void> {
    const shared = new Set(
      parseJson<string[]>(await this.options.store.get(SENDER_KEY_SHARED, `${group.id}:${group.distributionId}`)) ?? [],
    );
    const lacking = recipients.filter((r) =>
      r.devices.some((d) => !shared.has(`${r.accountId}.${d.deviceId}.${d.registrationId}`)),
    );
    if (lacking.length === 0) return;
    const skdm = await this.ourSenderKey(group);
    const timestamp = this.now();
    for (const { accountId } of lacking) {
      const id = `skd:${group.id}:${group.distributionId}:${accountId}:${timestamp}`;
      const devices = await this.sendContent(
        accountId,
        senderKeyDistributionContent(unhex(group.id), skdm),
        timestamp,
        id,
      );
      await this.markSenderKeyShared(group, accountId, devices);
    }
  }

  private ourSenderKey(group: Group): Promise<Uint8Array> {
    return this.unitOfWork(async (_unit, stores) =>
      (
        await createSenderKeyDistributionMessage(this.crypto, this.address, group.distributionId, stores.senderKeys)
      ).serialize(),
    );
  }

  /**
   * One sender-key ciphertext for every device of every member and for our own other devices,
   * fanned out by the server (PUT /v1/messages/multi). On 409/410 the device lists are refreshed
   * and the message is encrypted again.
   */
  private async sendGroupContent(group: Group, content: Content, timestamp: number, id = `g:${group.id}:${timestamp}`) {
    const self = this.account.accountId;
    const others = group.members.filter((m) => m !== self);
    for (let attempt = 1; ; attempt++) {
      const recipients = await this.unitOfWork(async (unit, stores) => {
        const list: { accountId: string; devices: DeliveredDevice[] }[] = [];
        for (const accountId of others) {
          if ((await this.sessionDevices(unit, accountId)).length === 0) await this.establish(stores, accountId, '*');
          list.push({ accountId, devices: await this.sessionRegistrations(unit, stores, accountId) });
        }
        const own = await this.sessionRegistrations(unit, stores, self);
        if (own.length > 0) list.push({ accountId: self, devices: own });
        return list;
      });
      if (recipients.length === 0) return;
      await this.shareSenderKey(group, recipients);
      const ciphertext = await this.unitOfWork(async (_unit, stores) =>
        groupEncrypt(this.crypto, this.address, group.distributionId, stores.senderKeys, encodeContent(content)),
      );
      try {
        await this.api.sendMulti({
          type: CiphertextMessageType.SenderKey,
          content: ciphertext,
          recipients,
          timestamp,
          id,
        });
        return;
      } catch (error) {
        if (!isDeviceMismatch(error) || attempt >= MAX_SEND_ATTEMPTS) throw error;
        const accounts = (error.details as { accounts?: DeviceMismatch[] }).accounts ?? [];
        await this.unitOfWork(async (unit, stores) => {
          for (const mismatch of accounts)
            if (mismatch.accountId) await this.refreshDevices(unit, stores, mismatch.accountId, mismatch);
        });
      }
    }
  }

  // ---------------------------------------------------------------- receiving (steps 7-9)

  /** Connects the live socket (with reconnect) and processes envelopes as they arrive. */
  async connect(): Promise<void> {
    if (!this.options.openSocket) throw new Error('no WebSocket implementation given');
    const url = this.options.socketUrl ?? `${this.options.serverUrl.replace(/^http/, 'ws')}/v1/websocket`;
    this.live = new LiveConnection({
      url,
      open: this.options.openSocket,
      credentials: async () =>
        this.options.socketAuth === 'token'
          ? { token: (await this.api.socketToken()).token }
          : { headers: { authorization: this.api.authorization as string } },
      onEnvelope: (envelope) => this.receive(envelope),
      onQueueEmpty: () => this.emit({ type: 'queue-empty' }),
      onStateChange: (state, detail) => this.emit({ type: 'connection', state, ...(detail ? { detail } : {}) }),
    });
    await this.live.start();
  }

  disconnect(): void {
    this.live?.stop();
    this.live = undefined;
  }

  /** Waits until every envelope received on the socket so far is processed. */
  async idle(): Promise<void> {
    await this.live?.idle();
  }

  /** The HTTP fallback: fetches, processes and acknowledges the whole queue. Returns how many. */
  async fetchQueue(): Promise<number> {
    let count = 0;
    for (;;) {
      const { messages, more } = await this.api.fetchMessages();
      for (const envelope of messages) {
        await this.receive(envelope);
        await this.api.acknowledge(envelope.guid);
        count++;
      }
      if (!more || messages.length === 0) return count;
    }
  }

  /**
   * Steps 8-9 for one envelope: de-duplicate, decrypt, store, all in one unit; the caller acks
   * after this returns. A message that cannot be decrypted is recorded for the user and triggers
   * one retry request to its sender (session repair), never more.
   */
  async receive(envelope: Envelope): Promise<void> {
    const events: ClientEvent[] = [];
    const followUps: (() => Promise<void>)[] = [];
    await this.unitOfWork(async (unit, stores) => {
      if (await unit.get('processed', envelope.guid)) return;
      unit.put('processed', envelope.guid, jsonValue(this.now()));
      const from = new ProtocolAddress(envelope.sourceAccountId, envelope.sourceDeviceId);
      const trustBefore = (await getContact(unit, from.name))?.trust;
      let plaintext: Uint8Array;
      try {
        if (envelope.type === CiphertextMessageType.PreKey)
          plaintext = await signalDecryptPreKey(this.crypto, envelope.content, from, stores);
        else if (envelope.type === CiphertextMessageType.Whisper)
          plaintext = await signalDecrypt(this.crypto, envelope.content, from, stores);
        else if (envelope.type === CiphertextMessageType.SenderKey)
          plaintext = await groupDecrypt(this.crypto, from, stores.senderKeys, envelope.content);
        else throw new ProtocolError('INVALID_MESSAGE', `unknown envelope type ${envelope.type}`);
      } catch (error) {
        const reason = error instanceof ProtocolError ? error.code : (error as Error).message;
        if (error instanceof DuplicatedMessageError) return; // a copy we already have
        await this.systemMessage(
          unit,
          envelope.sourceAccountId,
          envelope.timestamp,
          `A message could not be decrypted (${reason}). Asked the sender to send it again.`,
        );
        events.push({
          type: 'decryption-failed',
          from: envelope.sourceAccountId,
          timestamp: envelope.timestamp,
          reason,
        });
        followUps.push(() => this.requestRetry(envelope));
        return;
      }
      let content: Content;
      try {
        content = decodeContent(plaintext);
      } catch (error) {
        await this.systemMessage(
          unit,
          envelope.sourceAccountId,
          envelope.timestamp,
          `A message arrived in a format this app cannot read (${(error as Error).message}).`,
        );
        return;
      }
      const contact = await getContact(unit, from.name);
      if (contact?.trust === 'changed' && trustBefore !== 'changed') {
        await this.systemMessage(unit, from.name, envelope.timestamp, SAFETY_NUMBER_CHANGED);
        events.push({ type: 'identity-changed', accountId: from.name });
      }
      await this.apply(unit, stores, envelope, content, events, followUps);
    });
    for (const event of events) this.emit(event);
    for (const followUp of followUps) await followUp().catch(() => undefined);
  }

  private async systemMessage(
    unit: StagedStore,
    conversationId: string,
    timestamp: number,
    body: string,
  ): Promise<void> {
    const message: StoredMessage = {
      id: messageId(`system-${conversationId}`, timestamp),
      conversationId,
      author: 'system',
      authorDevice: 0,
      timestamp,
      receivedAt: this.now(),
      direction: 'in',
      kind: 'system',
      body,
      status: 'received',
    };
    await putMessage(unit, message);
  }

  private async apply(
    unit: StagedStore,
    stores: ReturnType<typeof protocolStores>,
    envelope: Envelope,
    content: Content,
    events: ClientEvent[],
    followUps: (() => Promise<void>)[],
  ): Promise<void> {
    const author = envelope.sourceAccountId;
    const fromSelf = author === this.account.accountId;
    const body = content.body;
    switch (body.case) {
      case 'dataMessage': {
        const data = body.value;
        // Our own 1:1 messages reach our other devices only inside a sync message (which names the
        // recipient); our group messages come as the group's own message.
        if (fromSelf && !data.group) return;
        const conversationId = data.group ? `${GROUP_PREFIX}${hex(data.group.id)}` : author;
        const stored = await this.applyData(unit, data, envelope, conversationId, events);
        if (stored && !data.group) {
          followUps.push(async () => {
            await this.sendContent(
              author,
              receiptContent('delivery', [stored.timestamp]),
              this.now(),
              `delivered:${stored.id}`,
            );
          });
        }
        return;
      }
      case 'syncMessage': {
        // Only our own devices may tell us what "we" did.
        if (!fromSelf) return;
        const sync = body.value;
        if (sync.sent?.message) await this.applyData(unit, sync.sent.message, envelope, sync.sent.destination, events);
        if (sync.sent?.expirationTimerUpdate)
          await this.applyTimer(unit, sync.sent.expirationTimerUpdate, sync.sent.destination, envelope.timestamp);
        for (const read of sync.read) {
          const message = await getMessage(unit, messageId(read.author, Number(read.timestamp)));
          if (message?.direction !== 'in' || message.status !== 'received') continue;
          const next = { ...message, status: 'read' as const };
          await putMessage(unit, next);
          const conversation = await getConversation(unit, message.conversationId);
          if (conversation) putConversation(unit, { ...conversation, unread: Math.max(0, conversation.unread - 1) });
          events.push({ type: 'message-updated', message: next });
        }
        if (sync.deviceLinked) events.push({ type: 'device-linked', deviceId: envelope.sourceDeviceId });
        return;
      }
      case 'receiptMessage': {
        if (fromSelf) return;
        const status = body.value.type === ReceiptMessage_Type.READ ? 'read' : 'delivered';
        for (const timestamp of body.value.timestamps) {
          followUps.push(async () => {
            await this.updateStatus(messageId(this.account.accountId, Number(timestamp)), status).catch(
              () => undefined,
            );
          });
        }
        return;
      }
      case 'typingMessage':
        if (fromSelf) return;
        events.push({
          type: 'typing',
          from: author,
          started: body.value.action === TypingMessage_Action.STARTED,
          ...(body.value.groupId.length > 0 ? { groupId: hex(body.value.groupId) } : {}),
        });
        return;
      case 'expirationTimerUpdate': {
        const conversationId = body.value.group ? `${GROUP_PREFIX}${hex(body.value.group.id)}` : author;
        await this.applyTimer(unit, body.value, conversationId, envelope.timestamp);
        return;
      }
      case 'groupUpdate': {
        const update = body.value;
        const id = hex(update.groupId);
        const known = parseJson<Group>(await unit.get('groups', id));
        if (update.senderKeyDistribution.length > 0) {
          await processSenderKeyDistributionMessage(
            this.crypto,
            new ProtocolAddress(author, envelope.sourceDeviceId),
            SenderKeyDistributionMessage.deserialize(update.senderKeyDistribution),
            stores.senderKeys,
          );
        }
        // An update at or below the revision we have is old news (late or reordered): applying it
        // could bring back a removed member. Only its sender key, taken above, is kept.
        if (known && update.revision <= known.revision) return;
        const selfId = this.account.accountId;
        const member = update.members.includes(selfId);
        const group: Group = {
          id,
          name: update.name,
          members: [...update.members],
          revision: update.revision,
          distributionId: known?.distributionId ?? crypto.randomUUID(),
          active: member,
        };
        const removal = update.action === GroupUpdate_Action.REMOVE || update.action === GroupUpdate_Action.LEAVE;
        // After someone leaves or is removed, we re-key too: they hold our old sender key.
        if (removal && known && member) group.distributionId = crypto.randomUUID();
        unit.put('groups', id, jsonValue(group));
        const text =
          update.action === GroupUpdate_Action.CREATE
            ? `Group “${update.name}” created.`
            : update.action === GroupUpdate_Action.LEAVE
              ? 'A member left the group.'
              : member
                ? `Group updated: ${update.members.length} members.`
                : 'You were removed from the group.';
        await this.systemMessage(unit, `${GROUP_PREFIX}${id}`, envelope.timestamp, text);
        events.push({ type: 'group-updated', group });
        // Share our sender key with the members when the group is new to us or we re-keyed.
        if (member && (!known || removal || update.action === GroupUpdate_Action.ADD)) {
          followUps.push(() => this.distributeSenderKey(group));
        }
        return;
      }
      case 'senderKeyDistribution':
        await processSenderKeyDistributionMessage(
          this.crypto,
          new ProtocolAddress(author, envelope.sourceDeviceId),
          SenderKeyDistributionMessage.deserialize(body.value.distribution),
          stores.senderKeys,
        );
        return;
      case 'retryRequest': {
        const originalTimestamp = Number(body.value.originalTimestamp);
        const original = await getMessage(unit, messageId(this.account.accountId, originalTimestamp));
        const marker = `${author}:${originalTimestamp}`;
        if (!original || original.direction !== 'out' || (await unit.get('retried', marker))) return;
        unit.put('retried', marker, jsonValue(this.now()));
        // The request came over a fresh session the peer just set up (now our current one): the
        // re-send goes over it. Deleting the record would drop that session and the archived ones
        // that messages still in flight from the peer need.
        followUps.push(async () => {
          // The whole message again: a re-send without its attachments, quote or timer would lose
          // them, and its timer 0 would switch disappearing messages off on the other side.
          const content = textContent({
            timestamp: original.timestamp,
            body: original.body,
            ...(original.quote ? { quote: original.quote } : {}),
            ...(original.attachments
              ? {
                  attachments: original.attachments.map((a) => ({
                    ...a,
                    key: fromBase64(a.key),
                    digest: fromBase64(a.digest),
                  })),
                }
              : {}),
            expireTimer: original.expiresAt ? Math.round((original.expiresAt - original.timestamp) / 1000) : 0,
          });
          // One of our own devices asked: it gets the message the way it gets all we send.
          const resend = fromSelf ? syncSentContent(original.conversationId, content) : content;
          await this.sendContent(author, resend, original.timestamp, `${original.id}:retry`);
        });
        return;
      }
      default:
        return;
    }
  }

  /**
   * A data message (text, attachments, quote, reaction) into a conversation: from someone else, or
   * ours from another of our devices (stored as sent). Returns the message if it is new here.
   */
  private async applyData(
    unit: StagedStore,
    data: DataMessage,
    envelope: Envelope,
    conversationId: string,
    events: ClientEvent[],
  ): Promise<StoredMessage | undefined> {
    const author = envelope.sourceAccountId;
    if (data.reaction) {
      const target = await getMessage(
        unit,
        messageId(data.reaction.targetAuthor, Number(data.reaction.targetTimestamp)),
      );
      if (target) {
        const others = (target.reactions ?? []).filter((r) => r.author !== author);
        const next = {
          ...target,
          reactions: data.reaction.remove ? others : [...others, { author, emoji: data.reaction.emoji }],
        };
        await putMessage(unit, next);
        events.push({ type: 'message-updated', message: next });
      }
      return undefined;
    }
    const now = this.now();
    const sentAt = Number(data.timestamp);
    const ours = author === this.account.accountId;
    const message: StoredMessage = {
      id: messageId(author, sentAt),
      conversationId,
      author,
      authorDevice: envelope.sourceDeviceId,
      timestamp: sentAt,
      receivedAt: now,
      direction: ours ? 'out' : 'in',
      kind: 'text',
      body: data.body,
      ...(data.quote ? { quote: { id: Number(data.quote.id), author: data.quote.author, text: data.quote.text } } : {}),
      ...(data.attachments.length > 0
        ? {
            attachments: data.attachments.map((a) => ({
              id: a.id,
              key: toBase64(a.key),
              digest: toBase64(a.digest),
              size: Number(a.size),
              contentType: a.contentType,
              fileName: a.fileName,
            })),
          }
        : {}),
      status: ours ? 'sent' : 'received',
      // Our own messages disappear counted from sending, as on the device that sent them.
      ...(data.expireTimer ? { expiresAt: (ours ? sentAt : now) + data.expireTimer * 1000 } : {}),
    };
    if (await getMessage(unit, message.id)) return undefined; // the same message re-sent (e.g. after a repair)
    await putMessage(unit, message);
    const conversation = await getConversation(unit, conversationId);
    if (conversation && data.expireTimer !== conversation.expireTimer)
      putConversation(unit, { ...conversation, expireTimer: data.expireTimer });
    events.push({ type: 'message', message });
    return message;
  }

  /** A disappearing-messages timer change, from the other side or from another of our devices. */
  private async applyTimer(
    unit: StagedStore,
    update: ExpirationTimerUpdate,
    conversationId: string,
    timestamp: number,
  ): Promise<void> {
    const conversation = (await getConversation(unit, conversationId)) ?? {
      id: conversationId,
      kind: conversationId.startsWith(GROUP_PREFIX) ? ('group' as const) : ('direct' as const),
      lastMessageAt: timestamp,
      expireTimer: 0,
      unread: 0,
    };
    putConversation(unit, { ...conversation, expireTimer: update.expireTimer });
    await this.systemMessage(
      unit,
      conversationId,
      timestamp,
      update.expireTimer
        ? `Disappearing messages set to ${update.expireTimer} s.`
        : 'Disappearing messages turned off.',
    );
  }

  private async distributeSenderKey(group: Group): Promise<void> {
    const skdm = await this.ourSenderKey(group);
    const timestamp = this.now();
    for (const accountId of group.members) {
      if (accountId === this.account.accountId) continue;
      const devices = await this.sendContent(
        accountId,
        senderKeyDistributionContent(unhex(group.id), skdm),
        timestamp,
        `skd:${group.id}:${group.distributionId}:${accountId}`,
      );
      await this.markSenderKeyShared(group, accountId, devices);
    }
  }

  /** Session repair: ask the sender once to re-send, over a fresh session. */
  private async requestRetry(envelope: Envelope): Promise<void> {
    const marker = `${envelope.sourceAccountId}:${envelope.timestamp}`;
    const already = await this.options.store.get('retry-requested', marker);
    if (already || envelope.type === CiphertextMessageType.SenderKey) return;
    await this.unitOfWork(async (unit) => {
      unit.put('retry-requested', marker, jsonValue(this.now()));
    });
    // A fresh session carries the request, in case ours is the broken one (one we set up for an
    // earlier request, not answered yet, is fresh: reusing it keeps one new session per repair).
    // The old session is archived, not deleted: the failure may have been one damaged envelope,
    // and the messages still in flight on the old session must keep decrypting.
    await this.unitOfWork(async (_unit, stores) => {
      const address = new ProtocolAddress(envelope.sourceAccountId, envelope.sourceDeviceId);
      const current = (await stores.sessions.getSession(address))?.currentState();
      if (!current?.pendingPreKey) await this.establish(stores, envelope.sourceAccountId, envelope.sourceDeviceId);
    });
    const timestamp = this.now();
    await this.sendContent(
      envelope.sourceAccountId,
      retryRequestContent({
        originalTimestamp: envelope.timestamp,
        originalType: envelope.type,
        originalDeviceId: envelope.sourceDeviceId,
      }),
      timestamp,
      `retry:${marker}`,
    );
  }

  // ---------------------------------------------------------------- history and housekeeping

  async conversations(): Promise<Conversation[]> {
    return listConversations(new StagedStore(this.options.store));
  }

  async history(conversationId: string, limit = 100): Promise<StoredMessage[]> {
    return listMessages(new StagedStore(this.options.store), conversationId, limit);
  }

  /** Deletes messages whose disappearing timer ran out (on this side; the peer does the same). */
  async removeExpired(): Promise<string[]> {
    const ids = await this.unitOfWork((unit) => deleteExpiredMessages(unit, this.now()));
    if (ids.length > 0) this.emit({ type: 'expired', ids });
    return ids;
  }

  async close(): Promise<void> {
    this.disconnect();
    await this.options.store.close();
  }
}
