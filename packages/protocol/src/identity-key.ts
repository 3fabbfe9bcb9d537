import type { CryptoProvider } from './crypto/provider.ts';
import { KeyPair, PrivateKey, PublicKey } from './curve.ts';
import { InvalidKeyError } from './errors.ts';
import { BinaryWriter, readProto } from './proto.ts';

/** The long-term identity of an installation; serialized as libsignal's IdentityKeyPairStructure. */
export class IdentityKeyPair extends KeyPair {
  static override async generate(crypto: CryptoProvider): Promise<IdentityKeyPair> {
    const pair = await KeyPair.generate(crypto);
    return new IdentityKeyPair(pair.publicKey, pair.privateKey);
  }

  serialize(): Uint8Array {
    return new BinaryWriter()
      .tag(1, 2)
      .bytes(this.publicKey.serialize())
      .tag(2, 2)
      .bytes(this.privateKey.serialize())
      .finish();
  }

  static deserialize(serialized: Uint8Array): IdentityKeyPair {
    let publicKey: PublicKey | undefined;
    let privateKey: PrivateKey | undefined;
    readProto(serialized, 'IdentityKeyPair', (field) => {
      if (field.no === 1) publicKey = PublicKey.deserialize(field.bytes());
      else if (field.no === 2) privateKey = PrivateKey.deserialize(field.bytes());
    });
    if (!publicKey || !privateKey) throw new InvalidKeyError('IdentityKeyPair: missing public or private key');
    return new IdentityKeyPair(publicKey, privateKey);
  }

  /** XEdDSA signature by the identity key, e.g. over a signed prekey's serialized public key. */
  sign(crypto: CryptoProvider, message: Uint8Array): Promise<Uint8Array> {
    return this.privateKey.sign(crypto, message);
  }
}

/** A 14-bit registration id, as libsignal masks it (0x3FFF), never zero. */
export function generateRegistrationId(crypto: CryptoProvider): number {
  const [hi, lo] = crypto.randomBytes(2) as unknown as [number, number];
  return ((hi << 8) | lo) & 0x3fff || 1;
}
