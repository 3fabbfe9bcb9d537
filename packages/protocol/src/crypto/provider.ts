/**
 * The primitives the protocol needs, behind one small async interface so that the same protocol
 * code runs on node:crypto (servers, CLI), WebCrypto (browsers) and @noble/* (React Native).
 *
 * Everything is async because WebCrypto is; implementations backed by synchronous primitives just
 * return resolved promises. Byte arrays passed in are never retained or mutated.
 */
export interface CryptoProvider {
  /** A short name for logs and benchmark tables: "node", "web", "js". */
  readonly name: string;

  randomBytes(length: number): Uint8Array;

  /**
   * A 32-byte X25519 private scalar (clamped when used), prepared for one or more uses. node:crypto
   * and WebCrypto must import a raw key before using it, and an import costs about as much as an
   * agreement (it derives the public key), so a key that serves several agreements is imported
   * once. The bytes are read or copied at once: later changes to the array do not affect the key.
   */
  x25519PrivateKey(privateKey: Uint8Array): X25519PrivateKey;

  sha512(data: Uint8Array): Promise<Uint8Array>;
  /** SHA3-256 (FIPS 202): Kyber hashes its coins and its ciphertext with it. */
  sha3_256(data: Uint8Array): Promise<Uint8Array>;
  /** SHAKE256 (FIPS 202) with `length` bytes of output: Kyber's shared-secret KDF. */
  shake256(data: Uint8Array, length: number): Promise<Uint8Array>;
  hmacSha256(key: Uint8Array, data: Uint8Array): Promise<Uint8Array>;
  /** HKDF-SHA256 (RFC 5869). An empty salt means the RFC's default: 32 zero bytes. */
  hkdfSha256(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Promise<Uint8Array>;

  /** AES-256-CBC with PKCS#7 padding. */
  aes256CbcEncrypt(key: Uint8Array, iv: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array>;
  /** AES-256-CBC with PKCS#7 padding; throws on a bad length or bad padding. */
  aes256CbcDecrypt(key: Uint8Array, iv: Uint8Array, ciphertext: Uint8Array): Promise<Uint8Array>;

  /**
   * Plain RFC 8032 Ed25519 verification of a 32-byte encoded Edwards point. XEdDSA verification
   * converts the Montgomery key and the signature first (see `PublicKey.verifySignature` in
   * curve.ts), then calls this.
   */
  ed25519Verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): Promise<boolean>;
  /** The RFC 8032 Ed25519 public key (32-byte encoded point) of a 32-byte private key (seed). */
  ed25519PublicKey(seed: Uint8Array): Promise<Uint8Array>;
  /**
   * A plain, deterministic RFC 8032 Ed25519 signature with a 32-byte seed. `SeededSigningKey`
   * (curve.ts) turns it into libsignal's XEdDSA by storing the public key's sign bit in it.
   */
  ed25519Sign(seed: Uint8Array, message: Uint8Array): Promise<Uint8Array>;
}

/** An X25519 private key in a provider's own form (see `CryptoProvider.x25519PrivateKey`). */
export interface X25519PrivateKey {
  /** The public key: a 32-byte u-coordinate. */
  publicKey(): Promise<Uint8Array>;
  /** Raw X25519 with a peer's 32-byte public key. Throws if the result is all zeros (a low-order peer key), as libsignal does. */
  agree(publicKey: Uint8Array): Promise<Uint8Array>;
}

/** Thrown by a provider's X25519 when the shared secret is all zeros. */
export class LowOrderPointError extends Error {
  constructor() {
    super('X25519 produced an all-zero shared secret (low-order public key)');
    this.name = 'LowOrderPointError';
  }
}

export function isAllZero(bytes: Uint8Array): boolean {
  let acc = 0;
  for (const b of bytes) acc |= b;
  return acc === 0;
}
