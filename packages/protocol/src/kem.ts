import { ml_kem1024 } from '@noble/post-quantum/ml-kem.js';
import { concatBytes, constantTimeEqual } from './bytes.ts';
import type { CryptoProvider } from './crypto/provider.ts';
import { InvalidKeyError, InvalidMessageError } from './errors.ts';

/**
 * Kyber1024 as libsignal 0.103 uses it (type byte 0x08): pre-standard round-3 CRYSTALS-Kyber.
 * Keys, ciphertexts and the IND-CPA core equal ML-KEM-1024's, so we run @noble's ML-KEM-1024
 * and apply Kyber's two differences around it: the encapsulation coins are hashed first
 * (m' = SHA3-256(m)), and the shared secret is K = SHAKE256(K̄ ‖ SHA3-256(ct), 32).
 */
export const KYBER1024_KEY_TYPE = 0x08;
const PUBLIC_KEY_LENGTH = 1568;
const SECRET_KEY_LENGTH = 3168;
const CIPHERTEXT_LENGTH = 1568;

function withType(raw: Uint8Array): Uint8Array {
  return concatBytes(new Uint8Array([KYBER1024_KEY_TYPE]), raw);
}

function withoutType(serialized: Uint8Array, length: number, what: string): Uint8Array {
  if (serialized[0] !== KYBER1024_KEY_TYPE) {
    throw new InvalidKeyError(`bad KEM key type <0x${(serialized[0] ?? 0).toString(16).padStart(2, '0')}>`);
  }
  if (serialized.length !== length + 1) {
    throw new InvalidKeyError(`${what} must be ${length + 1} bytes, got ${serialized.length}`);
  }
  return serialized.slice(1);
}

// Through the provider: on node:crypto, native SHA-3 over the 1568-byte ciphertext is ten times
// faster than @noble's.
async function kyberSharedSecret(
  crypto: CryptoProvider,
  preKey: Uint8Array,
  rawCiphertext: Uint8Array,
): Promise<Uint8Array> {
  return crypto.shake256(concatBytes(preKey, await crypto.sha3_256(rawCiphertext)), 32);
}

export class KEMPublicKey {
  private constructor(private readonly raw: Uint8Array) {}

  static deserialize(serialized: Uint8Array): KEMPublicKey {
    return new KEMPublicKey(withoutType(serialized, PUBLIC_KEY_LENGTH, 'Kyber1024 public key'));
  }

  serialize(): Uint8Array {
    return withType(this.raw);
  }

  equals(other: KEMPublicKey): boolean {
    return constantTimeEqual(this.raw, other.raw);
  }

  /** Returns the serialized ciphertext (0x08 ‖ 1568 bytes) and the 32-byte shared secret. */
  async encapsulate(crypto: CryptoProvider): Promise<{ ciphertext: Uint8Array; sharedSecret: Uint8Array }> {
    const coins = await crypto.sha3_256(crypto.randomBytes(32));
    let result: { cipherText: Uint8Array; sharedSecret: Uint8Array };
    try {
      result = ml_kem1024.encapsulate(this.raw, coins);
    } catch (error) {
      throw new InvalidKeyError(`Kyber1024 public key rejected: ${(error as Error).message}`);
    }
    return {
      ciphertext: withType(result.cipherText),
      sharedSecret: await kyberSharedSecret(crypto, result.sharedSecret, result.cipherText),
    };
  }
}

export class KEMSecretKey {
  private constructor(private readonly raw: Uint8Array) {}

  static deserialize(serialized: Uint8Array): KEMSecretKey {
    return new KEMSecretKey(withoutType(serialized, SECRET_KEY_LENGTH, 'Kyber1024 secret key'));
  }

  serialize(): Uint8Array {
    return withType(this.raw);
  }

  async decapsulate(crypto: CryptoProvider, serializedCiphertext: Uint8Array): Promise<Uint8Array> {
    if (serializedCiphertext[0] !== KYBER1024_KEY_TYPE || serializedCiphertext.length !== CIPHERTEXT_LENGTH + 1) {
      throw new InvalidMessageError('invalid Kyber1024 ciphertext');
    }
    const rawCiphertext = serializedCiphertext.subarray(1);
    return kyberSharedSecret(crypto, ml_kem1024.decapsulate(rawCiphertext, this.raw), rawCiphertext);
  }
}

export class KEMKeyPair {
  constructor(
    readonly publicKey: KEMPublicKey,
    readonly secretKey: KEMSecretKey,
  ) {}

  static generate(crypto: CryptoProvider): KEMKeyPair {
    const { publicKey, secretKey } = ml_kem1024.keygen(crypto.randomBytes(64));
    return new KEMKeyPair(KEMPublicKey.deserialize(withType(publicKey)), KEMSecretKey.deserialize(withType(secretKey)));
  }
}
