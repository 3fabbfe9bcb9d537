import {
  type KeyObject,
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  hkdfSync,
  randomBytes,
  sign,
  verify,
} from 'node:crypto';
import { type CryptoProvider, LowOrderPointError, isAllZero } from './provider.ts';

// Raw keys enter node:crypto as JWKs: OpenSSL 3 decodes DER/PKCS#8 about ten times slower, and
// key import dominated session setup. For a private OKP key Node reads only `d` (it derives the
// public half itself) but requires `x` to be a string, so an empty one is passed; the Wycheproof and
// interop suites catch any Node release that changes this.
function base64Url(raw: Uint8Array): string {
  return Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64url');
}

function privateKeyObject(curve: 'X25519' | 'Ed25519', privateKey: Uint8Array) {
  return createPrivateKey({ key: { kty: 'OKP', crv: curve, d: base64Url(privateKey), x: '' }, format: 'jwk' });
}

function x25519PublicKeyObject(publicKey: Uint8Array) {
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: base64Url(publicKey) }, format: 'jwk' });
}

// Ed25519 verification keys by their encoding. An import costs about a tenth of a verification,
// and the same keys verify again and again (a sender-key chain's signing key signs every message;
// an identity key signs both prekeys of a bundle). Public data; the oldest entry goes first.
const VERIFY_KEY_CACHE_SIZE = 256;
const verifyKeys = new Map<string, KeyObject>();

function ed25519VerifyKey(publicKey: Uint8Array): KeyObject {
  const x = base64Url(publicKey);
  let key = verifyKeys.get(x);
  if (!key) {
    key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
    if (verifyKeys.size >= VERIFY_KEY_CACHE_SIZE) verifyKeys.delete(verifyKeys.keys().next().value as string);
    verifyKeys.set(x, key);
  }
  return key;
}

/** The public key of a private OKP KeyObject: it holds it already, so exporting costs no multiplication. */
function publicHalf(privateKey: KeyObject): Uint8Array {
  return bytes(Buffer.from(privateKey.export({ format: 'jwk' }).x as string, 'base64url'));
}

function bytes(buffer: Buffer | ArrayBuffer): Uint8Array {
  return buffer instanceof ArrayBuffer
    ? new Uint8Array(buffer)
    : new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** node:crypto (OpenSSL): the fast path for servers, the CLI and tests. */
export const nodeCrypto: CryptoProvider = {
  name: 'node',

  randomBytes(length) {
    return bytes(randomBytes(length));
  },

  x25519PrivateKey(privateKey) {
    const key = privateKeyObject('X25519', privateKey);
    return {
      async publicKey() {
        return publicHalf(key);
      },
      async agree(publicKey) {
        const peer = x25519PublicKeyObject(publicKey);
        let shared: Buffer;
        try {
          shared = diffieHellman({ privateKey: key, publicKey: peer });
        } catch {
          // OpenSSL 3 refuses an all-zero X25519 result itself ("failed during derivation"); with
          // both keys already imported, that is the only way this call fails. Report it like the others.
          throw new LowOrderPointError();
        }
        if (isAllZero(shared)) throw new LowOrderPointError();
        return bytes(shared);
      },
    };
  },

  async sha512(data) {
    return bytes(createHash('sha512').update(data).digest());
  },

  async sha3_256(data) {
    return bytes(createHash('sha3-256').update(data).digest());
  },

  async shake256(data, length) {
    return bytes(createHash('shake256', { outputLength: length }).update(data).digest());
  },

  async hmacSha256(key, data) {
    return bytes(createHmac('sha256', key).update(data).digest());
  },

  async hkdfSha256(ikm, salt, info, length) {
    return bytes(hkdfSync('sha256', ikm, salt, info, length));
  },

  async aes256CbcEncrypt(key, iv, plaintext) {
    const cipher = createCipheriv('aes-256-cbc', key, iv);
    return bytes(Buffer.concat([cipher.update(plaintext), cipher.final()]));
  },

  async aes256CbcDecrypt(key, iv, ciphertext) {
    const decipher = createDecipheriv('aes-256-cbc', key, iv);
    return bytes(Buffer.concat([decipher.update(ciphertext), decipher.final()]));
  },

  async ed25519Verify(publicKey, message, signature) {
    if (publicKey.length !== 32 || signature.length !== 64) return false;
    try {
      return verify(null, message, ed25519VerifyKey(publicKey), signature);
    } catch {
      // OpenSSL refuses to decode some non-canonical points: that is a failed verification.
      return false;
    }
  },

  async ed25519PublicKey(seed) {
    return publicHalf(privateKeyObject('Ed25519', seed));
  },

  async ed25519Sign(seed, message) {
    return bytes(sign(null, message, privateKeyObject('Ed25519', seed)));
  },
};
