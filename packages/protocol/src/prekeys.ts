import type { CryptoProvider } from './crypto/provider.ts';
import { KeyPair, PrivateKey, PublicKey } from './curve.ts';
import { InvalidMessageError } from './errors.ts';
import type { IdentityKeyPair } from './identity-key.ts';
import { KEMKeyPair, KEMPublicKey, KEMSecretKey } from './kem.ts';
import { BinaryWriter, readProto } from './proto.ts';

/*
 * Prekey records as the device keeps them (private parts included). Each serializes as a small
 * protobuf; field numbers follow libsignal's storage.proto so the shapes are familiar.
 */

/** A one-time Curve25519 prekey. */
export class PreKeyRecord {
  constructor(
    readonly id: number,
    readonly keyPair: KeyPair,
  ) {}

  static async generate(crypto: CryptoProvider, id: number): Promise<PreKeyRecord> {
    return new PreKeyRecord(id, await KeyPair.generate(crypto));
  }

  serialize(): Uint8Array {
    return new BinaryWriter()
      .tag(1, 0)
      .uint32(this.id)
      .tag(2, 2)
      .bytes(this.keyPair.publicKey.serialize())
      .tag(3, 2)
      .bytes(this.keyPair.privateKey.serialize())
      .finish();
  }

  static deserialize(serialized: Uint8Array): PreKeyRecord {
    const f = readKeyRecord(serialized, 'PreKeyRecord');
    return new PreKeyRecord(
      f.id,
      new KeyPair(PublicKey.deserialize(f.publicKey), PrivateKey.deserialize(f.privateKey)),
    );
  }
}

/** The medium-term Curve25519 prekey, signed by the identity key over its 33-byte serialization. */
export class SignedPreKeyRecord {
  constructor(
    readonly id: number,
    readonly timestamp: number,
    readonly keyPair: KeyPair,
    readonly signature: Uint8Array,
  ) {}

  static async generate(
    crypto: CryptoProvider,
    identity: IdentityKeyPair,
    id: number,
    timestamp = Date.now(),
  ): Promise<SignedPreKeyRecord> {
    const keyPair = await KeyPair.generate(crypto);
    const signature = await identity.sign(crypto, keyPair.publicKey.serialize());
    return new SignedPreKeyRecord(id, timestamp, keyPair, signature);
  }

  serialize(): Uint8Array {
    return writeSignedRecord(
      this.id,
      this.keyPair.publicKey.serialize(),
      this.keyPair.privateKey.serialize(),
      this.signature,
      this.timestamp,
    );
  }

  static deserialize(serialized: Uint8Array): SignedPreKeyRecord {
    const f = readKeyRecord(serialized, 'SignedPreKeyRecord');
    return new SignedPreKeyRecord(
      f.id,
      f.timestamp,
      new KeyPair(PublicKey.deserialize(f.publicKey), PrivateKey.deserialize(f.privateKey)),
      f.signature,
    );
  }
}

/** A Kyber1024 prekey (one-time or last-resort), signed by the identity key over its 1569 bytes. */
export class KyberPreKeyRecord {
  constructor(
    readonly id: number,
    readonly timestamp: number,
    readonly keyPair: KEMKeyPair,
    readonly signature: Uint8Array,
  ) {}

  static async generate(
    crypto: CryptoProvider,
    identity: IdentityKeyPair,
    id: number,
    timestamp = Date.now(),
  ): Promise<KyberPreKeyRecord> {
    const keyPair = KEMKeyPair.generate(crypto);
    const signature = await identity.sign(crypto, keyPair.publicKey.serialize());
    return new KyberPreKeyRecord(id, timestamp, keyPair, signature);
  }

  serialize(): Uint8Array {
    return writeSignedRecord(
      this.id,
      this.keyPair.publicKey.serialize(),
      this.keyPair.secretKey.serialize(),
      this.signature,
      this.timestamp,
    );
  }

  static deserialize(serialized: Uint8Array): KyberPreKeyRecord {
    const f = readKeyRecord(serialized, 'KyberPreKeyRecord');
    return new KyberPreKeyRecord(
      f.id,
      f.timestamp,
      new KEMKeyPair(KEMPublicKey.deserialize(f.publicKey), KEMSecretKey.deserialize(f.privateKey)),
      f.signature,
    );
  }
}

function writeSignedRecord(
  id: number,
  publicKey: Uint8Array,
  privateKey: Uint8Array,
  signature: Uint8Array,
  timestamp: number,
): Uint8Array {
  return new BinaryWriter()
    .tag(1, 0)
    .uint32(id)
    .tag(2, 2)
    .bytes(publicKey)
    .tag(3, 2)
    .bytes(privateKey)
    .tag(4, 2)
    .bytes(signature)
    .tag(5, 1)
    .fixed64(timestamp)
    .finish();
}

function readKeyRecord(serialized: Uint8Array, what: string) {
  let id: number | undefined;
  let publicKey: Uint8Array | undefined;
  let privateKey: Uint8Array | undefined;
  let signature: Uint8Array = new Uint8Array(0);
  let timestamp = 0;
  readProto(serialized, what, (field) => {
    switch (field.no) {
      case 1:
        id = field.uint32();
        break;
      case 2:
        publicKey = field.bytes();
        break;
      case 3:
        privateKey = field.bytes();
        break;
      case 4:
        signature = field.bytes();
        break;
      case 5:
        timestamp = Number(field.fixed64());
        break;
    }
  });
  if (id === undefined || !publicKey || !privateKey) throw new InvalidMessageError(`${what}: missing fields`);
  return { id, publicKey, privateKey, signature, timestamp };
}
