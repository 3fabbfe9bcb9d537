import { x25519 as nobleX25519 } from '@noble/curves/ed25519.js';
import { sha3_256, shake256 } from '@noble/hashes/sha3.js';
import { type CryptoProvider, LowOrderPointError, isAllZero } from './provider.ts';

// RFC 8410 PKCS#8 wrappers for raw X25519 and Ed25519 private keys (they differ only in the
// algorithm OID's last byte): WebCrypto imports private keys only as PKCS#8 or JWK.
const X25519_PKCS8_PREFIX = new Uint8Array([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
]);
const ED25519_PKCS8_PREFIX = new Uint8Array([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
]);

const subtle = (): SubtleCrypto => globalThis.crypto.subtle;

/**
 * WebCrypto takes `BufferSource`, which (in TypeScript's DOM types) excludes views over a
 * SharedArrayBuffer, and browsers reject those at run time too. Pass ordinary views through and
 * copy anything else.
 */
function source(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return bytes.buffer instanceof ArrayBuffer ? (bytes as Uint8Array<ArrayBuffer>) : new Uint8Array(bytes);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function base64UrlDecode(text: string): Uint8Array {
  const base64 = text.replace(/-/g, '+').replace(/_/g, '/');
  const binary = atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

// Some browsers still lack X25519 in WebCrypto (it arrived in Chromium 133, Safari 17, Firefox
// 130). Probe once and fall back to @noble for X25519 alone where it is missing.
let x25519Supported: Promise<boolean> | undefined;
function hasWebCryptoX25519(): Promise<boolean> {
  x25519Supported ??= subtle()
    .generateKey({ name: 'X25519' }, false, ['deriveBits'])
    .then(
      () => true,
      () => false,
    );
  return x25519Supported;
}

/** Extractable, so that the public key can be exported from it. */
function importX25519Private(privateKey: Uint8Array): Promise<CryptoKey> {
  return subtle().importKey('pkcs8', source(concat(X25519_PKCS8_PREFIX, privateKey)), { name: 'X25519' }, true, [
    'deriveBits',
  ]);
}

function importEd25519Private(seed: Uint8Array, extractable: boolean): Promise<CryptoKey> {
  return subtle().importKey('pkcs8', source(concat(ED25519_PKCS8_PREFIX, seed)), { name: 'Ed25519' }, extractable, [
    'sign',
  ]);
}

/** WebCrypto: the web app's provider. Everything runs in the browser's native crypto. */
export const webCrypto: CryptoProvider = {
  name: 'web',

  randomBytes(length) {
    return globalThis.crypto.getRandomValues(new Uint8Array(length));
  },

  x25519PrivateKey(privateKey) {
    const scalar = privateKey.slice();
    // Imported on first use; undefined where WebCrypto lacks X25519.
    let imported: Promise<CryptoKey | undefined> | undefined;
    const nativeKey = () => {
      imported ??= hasWebCryptoX25519().then((supported) => (supported ? importX25519Private(scalar) : undefined));
      return imported;
    };
    return {
      async publicKey() {
        const key = await nativeKey();
        if (!key) return nobleX25519.getPublicKey(scalar);
        const jwk = await subtle().exportKey('jwk', key);
        if (!jwk.x) throw new Error('WebCrypto did not export the X25519 public key');
        return base64UrlDecode(jwk.x);
      },
      async agree(publicKey) {
        const key = await nativeKey();
        let shared: Uint8Array;
        if (key) {
          const peer = await subtle().importKey('raw', source(publicKey), { name: 'X25519' }, true, []);
          try {
            shared = new Uint8Array(await subtle().deriveBits({ name: 'X25519', public: peer }, key, 256));
          } catch {
            // WebCrypto rejects an all-zero result with an OperationError.
            throw new LowOrderPointError();
          }
        } else {
          try {
            shared = nobleX25519.getSharedSecret(scalar, publicKey);
          } catch {
            throw new LowOrderPointError();
          }
        }
        if (isAllZero(shared)) throw new LowOrderPointError();
        return shared;
      },
    };
  },

  async sha512(data) {
    return new Uint8Array(await subtle().digest('SHA-512', source(data)));
  },

  // WebCrypto has no SHA-3.
  async sha3_256(data) {
    return sha3_256(data);
  },

  async shake256(data, length) {
    return shake256(data, { dkLen: length });
  },

  async hmacSha256(key, data) {
    const hmacKey = await subtle().importKey('raw', source(key), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    return new Uint8Array(await subtle().sign('HMAC', hmacKey, source(data)));
  },

  async hkdfSha256(ikm, salt, info, length) {
    const key = await subtle().importKey('raw', source(ikm), 'HKDF', false, ['deriveBits']);
    return new Uint8Array(
      await subtle().deriveBits(
        { name: 'HKDF', hash: 'SHA-256', salt: source(salt), info: source(info) },
        key,
        length * 8,
      ),
    );
  },

  async aes256CbcEncrypt(key, iv, plaintext) {
    const aesKey = await subtle().importKey('raw', source(key), 'AES-CBC', false, ['encrypt']);
    return new Uint8Array(await subtle().encrypt({ name: 'AES-CBC', iv: source(iv) }, aesKey, source(plaintext)));
  },

  async aes256CbcDecrypt(key, iv, ciphertext) {
    const aesKey = await subtle().importKey('raw', source(key), 'AES-CBC', false, ['decrypt']);
    return new Uint8Array(await subtle().decrypt({ name: 'AES-CBC', iv: source(iv) }, aesKey, source(ciphertext)));
  },

  async ed25519Verify(publicKey, message, signature) {
    if (publicKey.length !== 32 || signature.length !== 64) return false;
    try {
      const key = await subtle().importKey('raw', source(publicKey), { name: 'Ed25519' }, false, ['verify']);
      return await subtle().verify('Ed25519', key, source(signature), source(message));
    } catch {
      return false;
    }
  },

  async ed25519PublicKey(seed) {
    const jwk = await subtle().exportKey('jwk', await importEd25519Private(seed, true));
    if (!jwk.x) throw new Error('WebCrypto did not export the Ed25519 public key');
    return base64UrlDecode(jwk.x);
  },

  async ed25519Sign(seed, message) {
    return new Uint8Array(await subtle().sign('Ed25519', await importEd25519Private(seed, false), source(message)));
  },
};
