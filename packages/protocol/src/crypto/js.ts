import { cbc } from '@noble/ciphers/aes.js';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import { sha3_256, shake256 } from '@noble/hashes/sha3.js';
import { randomBytes } from '@noble/hashes/utils.js';
import { type CryptoProvider, LowOrderPointError, isAllZero } from './provider.ts';

/** Pure TypeScript on the audited @noble/* libraries: React Native, and anywhere else as a fallback. */
export const jsCrypto: CryptoProvider = {
  name: 'js',

  randomBytes(length) {
    return randomBytes(length);
  },

  x25519PrivateKey(privateKey) {
    const scalar = privateKey.slice();
    return {
      async publicKey() {
        return x25519.getPublicKey(scalar);
      },
      async agree(publicKey) {
        let shared: Uint8Array;
        try {
          shared = x25519.getSharedSecret(scalar, publicKey);
        } catch {
          // noble refuses an all-zero result itself; report it the same way as the other providers.
          throw new LowOrderPointError();
        }
        if (isAllZero(shared)) throw new LowOrderPointError();
        return shared;
      },
    };
  },

  async sha512(data) {
    return sha512(data);
  },

  async sha3_256(data) {
    return sha3_256(data);
  },

  async shake256(data, length) {
    return shake256(data, { dkLen: length });
  },

  async hmacSha256(key, data) {
    return hmac(sha256, key, data);
  },

  async hkdfSha256(ikm, salt, info, length) {
    return hkdf(sha256, ikm, salt, info, length);
  },

  async aes256CbcEncrypt(key, iv, plaintext) {
    return cbc(key, iv).encrypt(plaintext);
  },

  async aes256CbcDecrypt(key, iv, ciphertext) {
    return cbc(key, iv).decrypt(ciphertext);
  },

  async ed25519Verify(publicKey, message, signature) {
    try {
      // zip215: false gives RFC 8032 strictness, the same answers as OpenSSL and WebCrypto.
      return ed25519.verify(signature, message, publicKey, { zip215: false });
    } catch {
      return false;
    }
  },

  async ed25519PublicKey(seed) {
    return ed25519.getPublicKey(seed);
  },

  async ed25519Sign(seed, message) {
    return ed25519.sign(message, seed);
  },
};
