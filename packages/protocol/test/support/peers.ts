/**
 * Two kinds of participant for interop tests: a Hush device on @hush/protocol with in-memory stores,
 * and a libsignal-client 0.103 device with in-memory stores. Both publish bundles and encrypt /
 * decrypt through their library's public API only.
 */
import { randomUUID } from 'node:crypto';
import * as Signal from '@signalapp/libsignal-client';
import type { CryptoProvider } from '../../src/crypto/provider.ts';
import {
  CiphertextMessageType,
  IdentityKeyPair,
  KEMPublicKey,
  KyberPreKeyRecord,
  PreKeyRecord,
  ProtocolAddress,
  PublicKey,
  SignedPreKeyRecord,
  generateRegistrationId,
  inMemoryStores,
  processPreKeyBundle,
  signalDecrypt,
  signalDecryptPreKey,
  signalEncrypt,
} from '../../src/index.ts';
import type { PreKeyBundle } from '../../src/session/session-builder.ts';

export interface WireMessage {
  type: number;
  body: Uint8Array;
}

export interface Peer {
  readonly name: string;
  readonly deviceId: number;
  bundle(options?: { oneTimePreKey?: boolean }): Promise<PreKeyBundle>;
  startSession(peer: Peer, options?: { oneTimePreKey?: boolean }): Promise<void>;
  encrypt(to: Peer, plaintext: Uint8Array): Promise<WireMessage>;
  decrypt(from: Peer, message: WireMessage): Promise<Uint8Array>;
}

let nextKeyId = 1;

export class HushPeer implements Peer {
  readonly name = randomUUID();
  readonly deviceId = 1;
  private constructor(
    readonly crypto: CryptoProvider,
    readonly identity: IdentityKeyPair,
    readonly stores: ReturnType<typeof inMemoryStores>,
  ) {}

  static async create(crypto: CryptoProvider): Promise<HushPeer> {
    const identity = await IdentityKeyPair.generate(crypto);
    return new HushPeer(crypto, identity, inMemoryStores(identity, generateRegistrationId(crypto)));
  }

  get address(): ProtocolAddress {
    return new ProtocolAddress(this.name, this.deviceId);
  }

  async bundle({ oneTimePreKey = true } = {}): Promise<PreKeyBundle> {
    const c = this.crypto;
    const signed = await SignedPreKeyRecord.generate(c, this.identity, nextKeyId++);
    const kyber = await KyberPreKeyRecord.generate(c, this.identity, nextKeyId++);
    await this.stores.signedPreKeys.saveSignedPreKey(signed.id, signed);
    await this.stores.kyberPreKeys.saveKyberPreKey(kyber.id, kyber);
    const bundle: PreKeyBundle = {
      registrationId: await this.stores.identity.getLocalRegistrationId(),
      deviceId: this.deviceId,
      signedPreKeyId: signed.id,
      signedPreKey: signed.keyPair.publicKey,
      signedPreKeySignature: signed.signature,
      identityKey: this.identity.publicKey,
      kyberPreKeyId: kyber.id,
      kyberPreKey: kyber.keyPair.publicKey,
      kyberPreKeySignature: kyber.signature,
    };
    if (oneTimePreKey) {
      const preKey = await PreKeyRecord.generate(c, nextKeyId++);
      await this.stores.preKeys.savePreKey(preKey.id, preKey);
      bundle.preKeyId = preKey.id;
      bundle.preKey = preKey.keyPair.publicKey;
    }
    return bundle;
  }

  async startSession(peer: Peer, options: { oneTimePreKey?: boolean } = {}): Promise<void> {
    const bundle = await peer.bundle(options);
    await processPreKeyBundle(this.crypto, bundle, new ProtocolAddress(peer.name, peer.deviceId), this.stores);
  }

  async encrypt(to: Peer, plaintext: Uint8Array): Promise<WireMessage> {
    const m = await signalEncrypt(this.crypto, plaintext, new ProtocolAddress(to.name, to.deviceId), this.stores);
    return { type: m.type, body: m.serialized };
  }

  async decrypt(from: Peer, message: WireMessage): Promise<Uint8Array> {
    const address = new ProtocolAddress(from.name, from.deviceId);
    return message.type === CiphertextMessageType.PreKey
      ? signalDecryptPreKey(this.crypto, message.body, address, this.stores)
      : signalDecrypt(this.crypto, message.body, address, this.stores);
  }
}

// ---- libsignal-client with in-memory stores (serialized records, like Hush's) ----

class SignalIdentityStore extends Signal.IdentityKeyStore {
  private readonly known = new Map<string, Signal.PublicKey>();
  constructor(
    private readonly privateKey: Signal.PrivateKey,
    private readonly registrationId: number,
  ) {
    super();
  }
  async getIdentityKey() {
    return this.privateKey;
  }
  async getLocalRegistrationId() {
    return this.registrationId;
  }
  async saveIdentity(name: Signal.ProtocolAddress, key: Signal.PublicKey) {
    const existing = this.known.get(name.toString());
    this.known.set(name.toString(), key);
    return existing && !existing.equals(key)
      ? Signal.IdentityChange.ReplacedExisting
      : Signal.IdentityChange.NewOrUnchanged;
  }
  async isTrustedIdentity(name: Signal.ProtocolAddress, key: Signal.PublicKey) {
    const existing = this.known.get(name.toString());
    return !existing || existing.equals(key);
  }
  async getIdentity(name: Signal.ProtocolAddress) {
    return this.known.get(name.toString()) ?? null;
  }
}

class SignalSessionStore extends Signal.SessionStore {
  private readonly sessions = new Map<string, Uint8Array<ArrayBuffer>>();
  async saveSession(name: Signal.ProtocolAddress, record: Signal.SessionRecord) {
    this.sessions.set(name.toString(), record.serialize());
  }
  async getSession(name: Signal.ProtocolAddress) {
    const bytes = this.sessions.get(name.toString());
    return bytes ? Signal.SessionRecord.deserialize(bytes) : null;
  }
  async getExistingSessions(addresses: Signal.ProtocolAddress[]) {
    const found: Signal.SessionRecord[] = [];
    for (const a of addresses) {
      const s = await this.getSession(a);
      if (s) found.push(s);
    }
    return found;
  }
}

class SignalPreKeyStore extends Signal.PreKeyStore {
  private readonly keys = new Map<number, Uint8Array<ArrayBuffer>>();
  async savePreKey(id: number, record: Signal.PreKeyRecord) {
    this.keys.set(id, record.serialize());
  }
  async getPreKey(id: number) {
    const bytes = this.keys.get(id);
    if (!bytes) throw new Error(`no prekey ${id}`);
    return Signal.PreKeyRecord.deserialize(bytes);
  }
  async removePreKey(id: number) {
    this.keys.delete(id);
  }
}

class SignalSignedPreKeyStore extends Signal.SignedPreKeyStore {
  private readonly keys = new Map<number, Uint8Array<ArrayBuffer>>();
  async saveSignedPreKey(id: number, record: Signal.SignedPreKeyRecord) {
    this.keys.set(id, record.serialize());
  }
  async getSignedPreKey(id: number) {
    const bytes = this.keys.get(id);
    if (!bytes) throw new Error(`no signed prekey ${id}`);
    return Signal.SignedPreKeyRecord.deserialize(bytes);
  }
}

class SignalKyberPreKeyStore extends Signal.KyberPreKeyStore {
  private readonly keys = new Map<number, Uint8Array<ArrayBuffer>>();
  async saveKyberPreKey(id: number, record: Signal.KyberPreKeyRecord) {
    this.keys.set(id, record.serialize());
  }
  async getKyberPreKey(id: number) {
    const bytes = this.keys.get(id);
    if (!bytes) throw new Error(`no kyber prekey ${id}`);
    return Signal.KyberPreKeyRecord.deserialize(bytes);
  }
  async markKyberPreKeyUsed(id: number) {
    this.keys.delete(id);
  }
}

const buf = (bytes: Uint8Array) => Uint8Array.from(bytes) as Uint8Array<ArrayBuffer>;

export class LibsignalPeer implements Peer {
  readonly name = randomUUID();
  readonly deviceId = 1;
  readonly identity = Signal.IdentityKeyPair.generate();
  readonly registrationId = Math.floor(Math.random() * 16380) + 1;
  readonly identityStore = new SignalIdentityStore(this.identity.privateKey, this.registrationId);
  readonly sessionStore = new SignalSessionStore();
  readonly preKeyStore = new SignalPreKeyStore();
  readonly signedPreKeyStore = new SignalSignedPreKeyStore();
  readonly kyberPreKeyStore = new SignalKyberPreKeyStore();

  get address(): Signal.ProtocolAddress {
    return Signal.ProtocolAddress.new(this.name, this.deviceId);
  }

  async bundle({ oneTimePreKey = true } = {}): Promise<PreKeyBundle> {
    const signedKey = Signal.PrivateKey.generate();
    const signedId = nextKeyId++;
    const signedSig = this.identity.privateKey.sign(signedKey.getPublicKey().serialize());
    await this.signedPreKeyStore.saveSignedPreKey(
      signedId,
      Signal.SignedPreKeyRecord.new(signedId, Date.now(), signedKey.getPublicKey(), signedKey, signedSig),
    );
    const kyberKey = Signal.KEMKeyPair.generate();
    const kyberId = nextKeyId++;
    const kyberSig = this.identity.privateKey.sign(kyberKey.getPublicKey().serialize());
    await this.kyberPreKeyStore.saveKyberPreKey(
      kyberId,
      Signal.KyberPreKeyRecord.new(kyberId, Date.now(), kyberKey, kyberSig),
    );
    const bundle: PreKeyBundle = {
      registrationId: this.registrationId,
      deviceId: this.deviceId,
      signedPreKeyId: signedId,
      signedPreKey: PublicKey.deserialize(signedKey.getPublicKey().serialize()),
      signedPreKeySignature: signedSig,
      identityKey: PublicKey.deserialize(this.identity.publicKey.serialize()),
      kyberPreKeyId: kyberId,
      kyberPreKey: KEMPublicKey.deserialize(kyberKey.getPublicKey().serialize()),
      kyberPreKeySignature: kyberSig,
    };
    if (oneTimePreKey) {
      const preKey = Signal.PrivateKey.generate();
      const id = nextKeyId++;
      await this.preKeyStore.savePreKey(id, Signal.PreKeyRecord.new(id, preKey.getPublicKey(), preKey));
      bundle.preKeyId = id;
      bundle.preKey = PublicKey.deserialize(preKey.getPublicKey().serialize());
    }
    return bundle;
  }

  async startSession(peer: Peer, options: { oneTimePreKey?: boolean } = {}): Promise<void> {
    const b = await peer.bundle(options);
    const bundle = Signal.PreKeyBundle.new(
      b.registrationId,
      b.deviceId,
      b.preKeyId ?? null,
      b.preKey ? Signal.PublicKey.deserialize(buf(b.preKey.serialize())) : null,
      b.signedPreKeyId,
      Signal.PublicKey.deserialize(buf(b.signedPreKey.serialize())),
      buf(b.signedPreKeySignature),
      Signal.PublicKey.deserialize(buf(b.identityKey.serialize())),
      b.kyberPreKeyId,
      Signal.KEMPublicKey.deserialize(buf(b.kyberPreKey.serialize())),
      buf(b.kyberPreKeySignature),
    );
    await Signal.processPreKeyBundle(
      bundle,
      Signal.ProtocolAddress.new(peer.name, peer.deviceId),
      this.address,
      this.sessionStore,
      this.identityStore,
    );
  }

  async encrypt(to: Peer, plaintext: Uint8Array): Promise<WireMessage> {
    const m = await Signal.signalEncrypt(
      buf(plaintext),
      Signal.ProtocolAddress.new(to.name, to.deviceId),
      this.address,
      this.sessionStore,
      this.identityStore,
    );
    return { type: m.type(), body: m.serialize() };
  }

  async decrypt(from: Peer, message: WireMessage): Promise<Uint8Array> {
    const address = Signal.ProtocolAddress.new(from.name, from.deviceId);
    if (message.type === CiphertextMessageType.PreKey) {
      return Signal.signalDecryptPreKey(
        Signal.PreKeySignalMessage.deserialize(buf(message.body)),
        address,
        this.address,
        this.sessionStore,
        this.identityStore,
        this.preKeyStore,
        this.signedPreKeyStore,
        this.kyberPreKeyStore,
      );
    }
    return Signal.signalDecrypt(
      Signal.SignalMessage.deserialize(buf(message.body)),
      address,
      this.address,
      this.sessionStore,
      this.identityStore,
    );
  }
}
