import { invert, mod } from '@noble/curves/abstract/modular.js';
import { ed25519 } from '@noble/curves/ed25519.js';
import { bytesToNumberLE, numberToBytesLE } from '@noble/curves/utils.js';
import { concatBytes, constantTimeEqual } from './bytes.ts';
import { type CryptoProvider, LowOrderPointError, type X25519PrivateKey } from './crypto/provider.ts';
import { InvalidKeyError, InvalidSignatureError } from './errors.ts';

/** libsignal's type byte for Curve25519 ("DJB") keys. */
export const DJB_KEY_TYPE = 0x05;
const P = 2n ** 255n - 19n;
const L = ed25519.Point.CURVE().n;
/**
 * 5L − 1 as an X25519 scalar, for the subgroup test in `PublicKey.isCanonical`: a multiple of 8
 * between 2²⁵⁴ and 2²⁵⁵, so X25519's clamping leaves it unchanged, and −1 modulo L. Exported for
 * the tests; read-only.
 */
export const TORSION_CHECK_SCALAR = numberToBytesLE(5n * L - 1n, 32);

/** A Curve25519 public key, serialized as 0x05 ‖ 32-byte u-coordinate (33 bytes). */
export class PublicKey {
  /** The 32-byte u-coordinate (a view into `serialized`). */
  readonly publicKeyBytes: Uint8Array;

  // The serialized form is kept because every MAC, record and message needs it.
  private constructor(private readonly serialized: Uint8Array) {
    this.publicKeyBytes = serialized.subarray(1);
  }

  /** Parses the 33-byte form. Trailing bytes are tolerated, as libsignal does. */
  static deserialize(serialized: Uint8Array): PublicKey {
    if (serialized.length < 33) throw new InvalidKeyError(`EC public key too short: ${serialized.length} bytes`);
    if (serialized[0] !== DJB_KEY_TYPE) throw new InvalidKeyError(`bad key type <0x${serialized[0]?.toString(16)}>`);
    return new PublicKey(serialized.slice(0, 33));
  }

  static fromPublicKeyBytes(raw: Uint8Array): PublicKey {
    if (raw.length !== 32) throw new InvalidKeyError(`X25519 public key must be 32 bytes, got ${raw.length}`);
    return new PublicKey(concatBytes(new Uint8Array([DJB_KEY_TYPE]), raw));
  }

  /** The 33-byte form, 0x05 ‖ u. Shared, not copied: treat it as read-only. */
  serialize(): Uint8Array {
    return this.serialized;
  }

  equals(other: PublicKey): boolean {
    return constantTimeEqual(this.publicKeyBytes, other.publicKeyBytes);
  }

  /**
   * libsignal's canonical-key check for an incoming base key: high bit clear, u below p, and the
   * point in the prime-order subgroup (torsion-free). Rejects keys an attacker could use to
   * learn bits of our private keys or to make two encodings of one key.
   *
   * The subgroup test is one X25519 by k = 5L − 1, native where the provider is (a multiplication
   * by L in JS costs ten times more). Write the point as P = Q + T, with Q in the subgroup of order
   * L and T in the 8-torsion. As 8 divides k, [k]P = [k]Q = −Q, which has Q's u-coordinate; so
   * X25519(k, u) = u exactly when Q = ±P, that is when T is the identity (Q = −P would need
   * T = −2Q, which only the identity satisfies). Small-order points give an all-zero result, which
   * X25519 refuses. A point on the twist has order 1, 2 or 4 (all-zero again) or a multiple of the
   * twist's large prime factor L′, and would need L′ to divide k − 1 or k + 1; it divides neither
   * (checked in the tests, as is agreement with @noble/curves' `isTorsionFree`).
   */
  async isCanonical(crypto: CryptoProvider): Promise<boolean> {
    const bytes = this.publicKeyBytes;
    if (((bytes[31] as number) & 0x80) !== 0) return false;
    if (bytesToNumberLE(bytes) >= P) return false;
    try {
      return constantTimeEqual(await torsionCheckKey(crypto).agree(bytes), bytes);
    } catch (error) {
      if (error instanceof LowOrderPointError) return false;
      throw error;
    }
  }

  /**
   * Verifies an XEdDSA signature the way libsignal does: the Edwards sign bit travels in bit 7 of
   * the signature's last byte, and s is taken mod L once its top three bits are clear.
   */
  async verifySignature(crypto: CryptoProvider, message: Uint8Array, signature: Uint8Array): Promise<boolean> {
    if (signature.length !== 64) return false;
    const signBit = (signature[63] as number) & 0x80;
    const s = signature.slice(32, 64);
    s[31] = (s[31] as number) & 0x7f;
    if (((s[31] as number) & 0xe0) !== 0) return false;
    const y = edwardsYOf(this.publicKeyBytes);
    if (y === undefined) return false;
    const edwardsKey = y.slice();
    edwardsKey[31] = (edwardsKey[31] as number) | signBit;
    // [s]B depends only on s mod L; reducing lets a strict RFC 8032 verifier accept what libsignal does.
    const reducedS = numberToBytesLE(mod(bytesToNumberLE(s), L), 32);
    return crypto.ed25519Verify(edwardsKey, message, concatBytes(signature.subarray(0, 32), reducedS));
  }
}

/** TORSION_CHECK_SCALAR prepared per provider: a public constant, so keeping its imported form is harmless. */
const torsionCheckKeys = new WeakMap<CryptoProvider, X25519PrivateKey>();

function torsionCheckKey(crypto: CryptoProvider): X25519PrivateKey {
  let key = torsionCheckKeys.get(crypto);
  if (!key) {
    key = crypto.x25519PrivateKey(TORSION_CHECK_SCALAR);
    torsionCheckKeys.set(crypto, key);
  }
  return key;
}

/**
 * Encoded Edwards y-coordinates (sign bit clear) of recently verified keys, by their u-coordinate.
 * The conversion costs a field inversion, about a quarter of verifying a sender-key message, and
 * the same keys verify again and again (a sender-key chain's signing key signs all its messages;
 * an identity key signs both prekeys of a bundle) while the PublicKey objects are new each time,
 * because records are parsed on every use. Public data only; the oldest entry goes first.
 */
const EDWARDS_Y_CACHE_SIZE = 512;
const edwardsYCache = new Map<string, Uint8Array>();

/** The Edwards y (encoded, sign bit clear) for a Montgomery u, libsignal-style: u's top bit ignored. */
function edwardsYOf(u: Uint8Array): Uint8Array | undefined {
  const cacheKey = String.fromCharCode(...u);
  const cached = edwardsYCache.get(cacheKey);
  if (cached) return cached;
  const y = montgomeryToEdwardsY(mod(bytesToNumberLE(u) & ((1n << 255n) - 1n), P));
  if (y === undefined) return undefined;
  const encoded = numberToBytesLE(y, 32);
  if (edwardsYCache.size >= EDWARDS_Y_CACHE_SIZE) edwardsYCache.delete(edwardsYCache.keys().next().value as string);
  edwardsYCache.set(cacheKey, encoded);
  return encoded;
}

/** y = (u − 1) / (u + 1), the birational map from Curve25519 to edwards25519. */
function montgomeryToEdwardsY(u: bigint): bigint | undefined {
  const denominator = mod(u + 1n, P);
  if (denominator === 0n) return undefined;
  return mod((u - 1n) * invert(denominator, P), P);
}

/** A Curve25519 private key: 32 raw bytes (libsignal clamps when it uses them; so do we). */
export class PrivateKey {
  private edwardsPublic?: { scalar: bigint; encoded: Uint8Array };
  // The provider's form of this key, made on first use and kept with the object: an import costs
  // about as much as an agreement, and one key often serves several (a base key in three PQXDH
  // agreements, a new ratchet key in getPublicKey and then its root step).
  private prepared?: { crypto: CryptoProvider; key: X25519PrivateKey };

  private constructor(readonly privateKeyBytes: Uint8Array) {}

  static deserialize(serialized: Uint8Array): PrivateKey {
    if (serialized.length !== 32)
      throw new InvalidKeyError(`EC private key must be 32 bytes, got ${serialized.length}`);
    return new PrivateKey(serialized.slice());
  }

  static generate(crypto: CryptoProvider): PrivateKey {
    return new PrivateKey(crypto.randomBytes(32));
  }

  serialize(): Uint8Array {
    return this.privateKeyBytes.slice();
  }

  async getPublicKey(crypto: CryptoProvider): Promise<PublicKey> {
    return PublicKey.fromPublicKeyBytes(await this.x25519Key(crypto).publicKey());
  }

  /** X25519 with a peer key; throws InvalidKeyError for a low-order peer key. */
  async agree(crypto: CryptoProvider, theirs: PublicKey): Promise<Uint8Array> {
    try {
      return await this.x25519Key(crypto).agree(theirs.publicKeyBytes);
    } catch (error) {
      throw new InvalidKeyError(`key agreement failed: ${(error as Error).message}`);
    }
  }

  private x25519Key(crypto: CryptoProvider): X25519PrivateKey {
    if (this.prepared?.crypto !== crypto) {
      this.prepared = { crypto, key: crypto.x25519PrivateKey(this.privateKeyBytes) };
    }
    return this.prepared.key;
  }

  /**
   * XEdDSA signature, libsignal's variant: the Edwards key is not negated; its sign bit is stored
   * in bit 7 of the last signature byte. Nonce as in libsignal (hash of a domain prefix, the key,
   * the message and 64 random bytes).
   */
  async sign(crypto: CryptoProvider, message: Uint8Array): Promise<Uint8Array> {
    const clamped = clamp(this.privateKeyBytes);
    if (!this.edwardsPublic) {
      const scalar = mod(bytesToNumberLE(clamped), L);
      this.edwardsPublic = { scalar, encoded: ed25519.Point.BASE.multiply(scalar).toBytes() };
    }
    const { scalar: a, encoded: A } = this.edwardsPublic;
    const noncePrefix = new Uint8Array(32).fill(0xff);
    noncePrefix[0] = 0xfe;
    const nonceHash = await crypto.sha512(concatBytes(noncePrefix, clamped, message, crypto.randomBytes(64)));
    const r = mod(bytesToNumberLE(nonceHash), L);
    if (r === 0n) throw new InvalidSignatureError('XEdDSA nonce was zero');
    const R = ed25519.Point.BASE.multiply(r).toBytes();
    const h = mod(bytesToNumberLE(await crypto.sha512(concatBytes(R, A, message))), L);
    const s = numberToBytesLE(mod(r + h * a, L), 32);
    s[31] = (s[31] as number) | ((A[31] as number) & 0x80);
    return concatBytes(R, s);
  }
}

/**
 * A Curve25519 key pair made only for signing (a sender-key chain's), held as an RFC 8032 Ed25519
 * seed so that each platform can sign natively instead of in JS. Its private scalar is Ed25519's,
 * a = clamp(SHA-512(seed)[0..32]); as an X25519 scalar it gives the Montgomery form of the Ed25519
 * public key A = aB. libsignal's XEdDSA verifier rebuilds A from that u-coordinate and the sign
 * bit carried in bit 7 of the signature's last byte, then checks an ordinary Ed25519 equation; so
 * an RFC 8032 signature by the seed verifies once A's sign bit is put there (s < L < 2²⁵³ leaves
 * the bit free). Only the nonce differs from `PrivateKey.sign`, and verifiers cannot see nonces.
 *
 * Serialized as seed ‖ A (64 bytes, NaCl's layout), so signing needs no extra multiplication to
 * learn A's sign bit.
 */
export class SeededSigningKey {
  private constructor(
    private readonly seed: Uint8Array,
    private readonly edwardsPublicKey: Uint8Array,
  ) {}

  /** A new key pair: the public key is what goes into distribution messages. */
  static async generate(crypto: CryptoProvider): Promise<{ publicKey: PublicKey; privateKey: SeededSigningKey }> {
    const seed = crypto.randomBytes(32);
    const [edwardsPublicKey, expanded] = await Promise.all([crypto.ed25519PublicKey(seed), crypto.sha512(seed)]);
    const montgomery = await crypto.x25519PrivateKey(clamp(expanded.subarray(0, 32))).publicKey();
    return {
      publicKey: PublicKey.fromPublicKeyBytes(montgomery),
      privateKey: new SeededSigningKey(seed, edwardsPublicKey),
    };
  }

  static deserialize(serialized: Uint8Array): SeededSigningKey {
    if (serialized.length !== 64) {
      throw new InvalidKeyError(`seeded signing key must be 64 bytes, got ${serialized.length}`);
    }
    return new SeededSigningKey(serialized.slice(0, 32), serialized.slice(32));
  }

  serialize(): Uint8Array {
    return concatBytes(this.seed, this.edwardsPublicKey);
  }

  /** An XEdDSA signature in libsignal's sign-bit variant (see the class comment). */
  async sign(crypto: CryptoProvider, message: Uint8Array): Promise<Uint8Array> {
    const signature = await crypto.ed25519Sign(this.seed, message);
    signature[63] = (signature[63] as number) | ((this.edwardsPublicKey[31] as number) & 0x80);
    return signature;
  }
}

/** Either kind of private key that makes XEdDSA signatures. */
export type SigningPrivateKey = PrivateKey | SeededSigningKey;

function clamp(privateKey: Uint8Array): Uint8Array {
  const k = privateKey.slice();
  k[0] = (k[0] as number) & 248;
  k[31] = ((k[31] as number) & 127) | 64;
  return k;
}

export class KeyPair {
  constructor(
    readonly publicKey: PublicKey,
    readonly privateKey: PrivateKey,
  ) {}

  static async generate(crypto: CryptoProvider): Promise<KeyPair> {
    const privateKey = PrivateKey.generate(crypto);
    return new KeyPair(await privateKey.getPublicKey(crypto), privateKey);
  }
}
