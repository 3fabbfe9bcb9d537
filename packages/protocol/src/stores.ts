import type { ProtocolAddress } from './address.ts';
import type { PublicKey } from './curve.ts';
import { InvalidKeyIdError } from './errors.ts';
import type { IdentityKeyPair } from './identity-key.ts';
import { KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord } from './prekeys.ts';
import { SenderKeyRecord } from './sender-keys/sender-key-record.ts';
import { SessionRecord } from './session/session-record.ts';

/*
 * Storage traits, as in libsignal's API: the protocol reads and writes records only through these.
 * Each in-memory implementation below keeps serialized bytes, as a persistent store would, so
 * every record type round-trips through its serialization on every use.
 */

export enum Direction {
  Sending = 0,
  Receiving = 1,
}

export enum IdentityChange {
  NewOrUnchanged = 0,
  ReplacedExisting = 1,
}

export interface IdentityKeyStore {
  getIdentityKeyPair(): Promise<IdentityKeyPair>;
  getLocalRegistrationId(): Promise<number>;
  saveIdentity(address: ProtocolAddress, identityKey: PublicKey): Promise<IdentityChange>;
  isTrustedIdentity(address: ProtocolAddress, identityKey: PublicKey, direction: Direction): Promise<boolean>;
  getIdentity(address: ProtocolAddress): Promise<PublicKey | null>;
}

export interface PreKeyStore {
  savePreKey(id: number, record: PreKeyRecord): Promise<void>;
  /** Throws InvalidKeyIdError when the id is unknown. */
  getPreKey(id: number): Promise<PreKeyRecord>;
  removePreKey(id: number): Promise<void>;
}

export interface SignedPreKeyStore {
  saveSignedPreKey(id: number, record: SignedPreKeyRecord): Promise<void>;
  /** Throws InvalidKeyIdError when the id is unknown. */
  getSignedPreKey(id: number): Promise<SignedPreKeyRecord>;
}

export interface KyberPreKeyStore {
  saveKyberPreKey(id: number, record: KyberPreKeyRecord): Promise<void>;
  /** Throws InvalidKeyIdError when the id is unknown. */
  getKyberPreKey(id: number): Promise<KyberPreKeyRecord>;
  /** Called after a PreKey message using this Kyber prekey decrypted; one-time keys are deleted here. */
  markKyberPreKeyUsed(id: number, signedPreKeyId: number, baseKey: PublicKey): Promise<void>;
}

export interface SessionStore {
  saveSession(address: ProtocolAddress, record: SessionRecord): Promise<void>;
  getSession(address: ProtocolAddress): Promise<SessionRecord | null>;
}

export interface SenderKeyStore {
  saveSenderKey(sender: ProtocolAddress, distributionId: string, record: SenderKeyRecord): Promise<void>;
  getSenderKey(sender: ProtocolAddress, distributionId: string): Promise<SenderKeyRecord | null>;
}

/** Everything a 1:1 session needs, in one object for convenience. */
export interface ProtocolStores {
  identity: IdentityKeyStore;
  preKeys: PreKeyStore;
  signedPreKeys: SignedPreKeyStore;
  kyberPreKeys: KyberPreKeyStore;
  sessions: SessionStore;
}

export class InMemoryIdentityKeyStore implements IdentityKeyStore {
  private readonly identities = new Map<string, PublicKey>();

  constructor(
    private readonly identityKeyPair: IdentityKeyPair,
    private readonly registrationId: number,
  ) {}

  async getIdentityKeyPair() {
    return this.identityKeyPair;
  }

  async getLocalRegistrationId() {
    return this.registrationId;
  }

  async saveIdentity(address: ProtocolAddress, identityKey: PublicKey) {
    const key = address.toString();
    const existing = this.identities.get(key);
    this.identities.set(key, identityKey);
    return existing && !existing.equals(identityKey) ? IdentityChange.ReplacedExisting : IdentityChange.NewOrUnchanged;
  }

  /** Trust on first use; afterwards only the saved key is trusted, in both directions. */
  async isTrustedIdentity(address: ProtocolAddress, identityKey: PublicKey, _direction: Direction) {
    const existing = this.identities.get(address.toString());
    return !existing || existing.equals(identityKey);
  }

  async getIdentity(address: ProtocolAddress) {
    return this.identities.get(address.toString()) ?? null;
  }
}

/** A map of serialized records by numeric id, throwing InvalidKeyIdError for unknown ids. */
class SerializedRecordMap<T> {
  private readonly records = new Map<number, Uint8Array>();

  constructor(
    private readonly kind: InvalidKeyIdError['kind'],
    private readonly deserialize: (bytes: Uint8Array) => T,
  ) {}

  set(id: number, serialized: Uint8Array): void {
    this.records.set(id, serialized);
  }

  get(id: number): T {
    const bytes = this.records.get(id);
    if (!bytes) throw new InvalidKeyIdError(this.kind, id);
    return this.deserialize(bytes);
  }

  delete(id: number): void {
    this.records.delete(id);
  }
}

export class InMemoryPreKeyStore implements PreKeyStore {
  private readonly records = new SerializedRecordMap('pre-key', PreKeyRecord.deserialize);

  async savePreKey(id: number, record: PreKeyRecord) {
    this.records.set(id, record.serialize());
  }

  async getPreKey(id: number) {
    return this.records.get(id);
  }

  async removePreKey(id: number) {
    this.records.delete(id);
  }
}

export class InMemorySignedPreKeyStore implements SignedPreKeyStore {
  private readonly records = new SerializedRecordMap('signed pre-key', SignedPreKeyRecord.deserialize);

  async saveSignedPreKey(id: number, record: SignedPreKeyRecord) {
    this.records.set(id, record.serialize());
  }

  async getSignedPreKey(id: number) {
    return this.records.get(id);
  }
}

/**
 * Kyber prekeys saved with `lastResort = true` survive use (they are shared by many sessions);
 * one-time Kyber prekeys are deleted when marked used.
 */
export class InMemoryKyberPreKeyStore implements KyberPreKeyStore {
  private readonly records = new SerializedRecordMap('kyber pre-key', KyberPreKeyRecord.deserialize);
  private readonly lastResortIds = new Set<number>();

  async saveKyberPreKey(id: number, record: KyberPreKeyRecord, lastResort = false) {
    this.records.set(id, record.serialize());
    if (lastResort) this.lastResortIds.add(id);
    else this.lastResortIds.delete(id);
  }

  async getKyberPreKey(id: number) {
    return this.records.get(id);
  }

  async markKyberPreKeyUsed(id: number, _signedPreKeyId: number, _baseKey: PublicKey) {
    if (!this.lastResortIds.has(id)) this.records.delete(id);
  }
}

export class InMemorySessionStore implements SessionStore {
  private readonly sessions = new Map<string, Uint8Array>();

  async saveSession(address: ProtocolAddress, record: SessionRecord) {
    this.sessions.set(address.toString(), record.serialize());
  }

  async getSession(address: ProtocolAddress) {
    const bytes = this.sessions.get(address.toString());
    return bytes ? SessionRecord.deserialize(bytes) : null;
  }
}

export class InMemorySenderKeyStore implements SenderKeyStore {
  private readonly records = new Map<string, Uint8Array>();

  async saveSenderKey(sender: ProtocolAddress, distributionId: string, record: SenderKeyRecord) {
    this.records.set(`${sender.toString()}::${distributionId}`, record.serialize());
  }

  async getSenderKey(sender: ProtocolAddress, distributionId: string) {
    const bytes = this.records.get(`${sender.toString()}::${distributionId}`);
    return bytes ? SenderKeyRecord.deserialize(bytes) : null;
  }
}

/** A complete set of in-memory stores for one installation. */
export function inMemoryStores(identity: IdentityKeyPair, registrationId: number) {
  return {
    identity: new InMemoryIdentityKeyStore(identity, registrationId),
    preKeys: new InMemoryPreKeyStore(),
    signedPreKeys: new InMemorySignedPreKeyStore(),
    kyberPreKeys: new InMemoryKyberPreKeyStore(),
    sessions: new InMemorySessionStore(),
    senderKeys: new InMemorySenderKeyStore(),
  };
}
