import {
  Direction,
  IdentityChange,
  type IdentityKeyPair,
  type IdentityKeyStore,
  InvalidKeyIdError,
  KyberPreKeyRecord,
  type KyberPreKeyStore,
  PreKeyRecord,
  type PreKeyStore,
  type ProtocolAddress,
  PublicKey,
  SenderKeyRecord,
  type SenderKeyStore,
  SessionRecord,
  type SessionStore,
  SignedPreKeyRecord,
  type SignedPreKeyStore,
} from '@hush/protocol';
import { fromBase64, toBase64 } from '../util/base64.ts';
import { type StagedStore, jsonValue, parseJson } from './staged.ts';

/*
 * @hush/protocol's store interfaces on the client's encrypted key-value store, inside one unit of
 * work. Key ids are zero-padded so listing returns them in numeric order.
 */
export const NS = {
  sessions: 'sessions',
  preKeys: 'prekeys',
  signedPreKeys: 'signed-prekeys',
  kyberPreKeys: 'kyber-prekeys',
  lastResortKyber: 'kyber-last-resort',
  senderKeys: 'sender-keys',
  contacts: 'contacts',
} as const;

export const keyId = (id: number) => id.toString().padStart(10, '0');

/** What the client knows about another account, and whether the user trusts its identity key. */
export interface Contact {
  accountId: string;
  number?: string;
  name?: string;
  /** base64 of the 33-byte identity key in use. */
  identityKey?: string;
  /**
   * 'unverified': first seen, trusted on first use. 'verified': the user compared safety numbers.
   * 'changed': the key changed; incoming messages still decrypt, but nothing is sent until the user
   * accepts the new key (never used silently).
   */
  trust: 'unverified' | 'verified' | 'changed';
  /** base64 of the key before the change, while trust is 'changed'. */
  previousIdentityKey?: string;
}

export async function getContact(unit: StagedStore, accountId: string): Promise<Contact | undefined> {
  return parseJson<Contact>(await unit.get(NS.contacts, accountId));
}

export function putContact(unit: StagedStore, contact: Contact): void {
  unit.put(NS.contacts, contact.accountId, jsonValue(contact));
}

class KvIdentityStore implements IdentityKeyStore {
  constructor(
    private readonly unit: StagedStore,
    private readonly identity: IdentityKeyPair,
    private readonly registrationId: number,
  ) {}

  async getIdentityKeyPair() {
    return this.identity;
  }

  async getLocalRegistrationId() {
    return this.registrationId;
  }

  /** Identity keys are per account: all devices of one account share it. */
  async saveIdentity(address: ProtocolAddress, identityKey: PublicKey) {
    const key = toBase64(identityKey.serialize());
    const contact = await getContact(this.unit, address.name);
    if (!contact?.identityKey) {
      putContact(this.unit, { ...(contact ?? { accountId: address.name }), identityKey: key, trust: 'unverified' });
      return IdentityChange.NewOrUnchanged;
    }
    if (contact.identityKey === key) return IdentityChange.NewOrUnchanged;
    putContact(this.unit, { ...contact, identityKey: key, trust: 'changed', previousIdentityKey: contact.identityKey });
    return IdentityChange.ReplacedExisting;
  }

  /** Receiving from a changed key is allowed (and recorded by saveIdentity); sending needs the user's consent. */
  async isTrustedIdentity(address: ProtocolAddress, identityKey: PublicKey, direction: Direction) {
    const contact = await getContact(this.unit, address.name);
    if (!contact?.identityKey) return true;
    if (direction === Direction.Receiving) return true;
    return contact.trust !== 'changed' && contact.identityKey === toBase64(identityKey.serialize());
  }

  async getIdentity(address: ProtocolAddress) {
    const contact = await getContact(this.unit, address.name);
    return contact?.identityKey ? PublicKey.deserialize(fromBase64(contact.identityKey)) : null;
  }
}

class KvSessionStore implements SessionStore {
  constructor(private readonly unit: StagedStore) {}

  async saveSession(address: ProtocolAddress, record: SessionRecord) {
    this.unit.put(NS.sessions, address.toString(), record.serialize());
  }

  async getSession(address: ProtocolAddress) {
    const bytes = await this.unit.get(NS.sessions, address.toString());
    return bytes ? SessionRecord.deserialize(bytes) : null;
  }
}

class KvPreKeyStore implements PreKeyStore {
  constructor(private readonly unit: StagedStore) {}

  async savePreKey(id: number, record: PreKeyRecord) {
    this.unit.put(NS.preKeys, keyId(id), record.serialize());
  }

  async getPreKey(id: number) {
    const bytes = await this.unit.get(NS.preKeys, keyId(id));
    if (!bytes) throw new InvalidKeyIdError('pre-key', id);
    return PreKeyRecord.deserialize(bytes);
  }

  /** Used one-time private keys are deleted (forward secrecy for the session setup). */
  async removePreKey(id: number) {
    this.unit.delete(NS.preKeys, keyId(id));
  }
}

class KvSignedPreKeyStore implements SignedPreKeyStore {
  constructor(private readonly unit: StagedStore) {}

  async saveSignedPreKey(id: number, record: SignedPreKeyRecord) {
    this.unit.put(NS.signedPreKeys, keyId(id), record.serialize());
  }

  async getSignedPreKey(id: number) {
    const bytes = await this.unit.get(NS.signedPreKeys, keyId(id));
    if (!bytes) throw new InvalidKeyIdError('signed pre-key', id);
    return SignedPreKeyRecord.deserialize(bytes);
  }
}

class KvKyberPreKeyStore implements KyberPreKeyStore {
  constructor(private readonly unit: StagedStore) {}

  async saveKyberPreKey(id: number, record: KyberPreKeyRecord, lastResort = false) {
    this.unit.put(NS.kyberPreKeys, keyId(id), record.serialize());
    if (lastResort) this.unit.put(NS.lastResortKyber, keyId(id), new Uint8Array([1]));
  }

  async getKyberPreKey(id: number) {
    const bytes = await this.unit.get(NS.kyberPreKeys, keyId(id));
    if (!bytes) throw new InvalidKeyIdError('kyber pre-key', id);
    return KyberPreKeyRecord.deserialize(bytes);
  }

  async markKyberPreKeyUsed(id: number) {
    if (await this.unit.get(NS.lastResortKyber, keyId(id))) return;
    this.unit.delete(NS.kyberPreKeys, keyId(id));
  }
}

class KvSenderKeyStore implements SenderKeyStore {
  constructor(private readonly unit: StagedStore) {}

  async saveSenderKey(sender: ProtocolAddress, distributionId: string, record: SenderKeyRecord) {
    this.unit.put(NS.senderKeys, `${sender.toString()}::${distributionId}`, record.serialize());
  }

  async getSenderKey(sender: ProtocolAddress, distributionId: string) {
    const bytes = await this.unit.get(NS.senderKeys, `${sender.toString()}::${distributionId}`);
    return bytes ? SenderKeyRecord.deserialize(bytes) : null;
  }
}

/** The protocol's stores for one unit of work. */
export function protocolStores(unit: StagedStore, identity: IdentityKeyPair, registrationId: number) {
  return {
    identity: new KvIdentityStore(unit, identity, registrationId),
    sessions: new KvSessionStore(unit),
    preKeys: new KvPreKeyStore(unit),
    signedPreKeys: new KvSignedPreKeyStore(unit),
    kyberPreKeys: new KvKyberPreKeyStore(unit),
    senderKeys: new KvSenderKeyStore(unit),
  };
}

export type ClientProtocolStores = ReturnType<typeof protocolStores>;
