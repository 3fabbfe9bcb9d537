import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  hkdfSync,
  randomBytes,
  verify,
} from 'node:crypto';
import { type CryptoProvider, LowOrderPointError, isAllZero } from './provider.ts';

// DER wrappers that turn raw 32-byte keys into the KeyObjects node:crypto wants (RFC 8410).
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

function x25519PrivateKeyObject(privateKey: Uint8Array) {
  return createPrivateKey({
    key: Buffer.concat([X25519_PKCS8_PREFIX, privateKey]),
    format: 'der',
    type: 'pkcs8',
  });
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

  async x25519PublicKey(privateKey) {
    const spki = createPublicKey(x25519PrivateKeyObject(privateKey)).export({ format: 'der', type: 'spki' });
    return bytes(spki.subarray(X25519_SPKI_PREFIX.length));
  },

  async x25519(privateKey, publicKey) {
    const keys = {
      privateKey: x25519PrivateKeyObject(privateKey),
      publicKey: createPublicKey({
        key: Buffer.concat([X25519_SPKI_PREFIX, publicKey]),
        format: 'der',
        type: 'spki',
      }),
    };
    let shared: Buffer;
    try {
      shared = diffieHellman(keys);
    } catch {
      // OpenSSL 3 refuses an all-zero X25519 result itself ("failed during derivation"); with both
      // keys already imported, that is the only way this call fails. Report it like the others.
      throw new LowOrderPointError();
    }
    if (isAllZero(shared)) throw new LowOrderPointError();
    return bytes(shared);
  },

  async sha512(data) {
    return bytes(createHash('sha512').update(data).digest());
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
      const key = createPublicKey({
        key: Buffer.concat([ED25519_SPKI_PREFIX, publicKey]),
        format: 'der',
        type: 'spki',
      });
      return verify(null, message, key, signature);
    } catch {
      // OpenSSL refuses to decode some non-canonical points: that is a failed verification.
      return false;
    }
  },
};
