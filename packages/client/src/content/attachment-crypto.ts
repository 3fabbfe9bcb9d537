/**
 * Attachment encryption, in the layout of Signal's attachments (white paper / libsignal
 * `AttachmentCipher`):
 *
 *   key        = aesKey (32) || macKey (32)                       random per attachment
 *   ciphertext = iv (16) || AES-256-CBC-PKCS#7(aesKey, iv, padded plaintext) || HMAC-SHA256(macKey, iv || ct) (32)
 *   digest     = SHA-256(ciphertext)
 *
 * The encrypted blob is uploaded; `key`, `digest` and the plaintext `size` travel in the message
 * (`AttachmentPointer`). Before encryption the plaintext is padded with zeros up to a size bucket
 * (Signal's: powers of 1.05, at least 541 bytes), so the blob size reveals only the bucket; the
 * receiver cuts the plaintext back to `size`.
 *
 * The receiver checks the digest (is this the blob the sender meant?), then the MAC, both in
 * constant time, and only then decrypts.
 */

import type { CryptoProvider } from '@hush/protocol';
import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js';

export const ATTACHMENT_KEY_LENGTH = 64;
const AES_KEY_LENGTH = 32;
const IV_LENGTH = 16;
const MAC_LENGTH = 32;
const BLOCK = 16;
/** iv, one AES block (PKCS#7 always adds at least one), MAC. */
const MIN_CIPHERTEXT_LENGTH = IV_LENGTH + BLOCK + MAC_LENGTH;

export interface EncryptedAttachment {
  /** iv || AES-256-CBC ciphertext || HMAC-SHA256: the blob to upload. */
  ciphertext: Uint8Array;
  /** 64 bytes: AES key || MAC key. Goes in the message, never to the server. */
  key: Uint8Array;
  /** SHA-256 of `ciphertext`. Goes in the message. */
  digest: Uint8Array;
  /** The plaintext size in bytes (before bucket padding). Goes in the message. */
  size: number;
}

export interface EncryptAttachmentOptions {
  /** Pad the plaintext with zeros up to its size bucket (default true). */
  pad?: boolean;
}

export type AttachmentIntegrityReason =
  /** SHA-256(ciphertext) is not the digest from the message: not the blob the sender uploaded. */
  | 'digest'
  /** The HMAC does not verify: tampered blob or wrong key. */
  | 'mac'
  /** Structurally invalid: bad key length, blob too short / misaligned, bad cipher padding, size too large. */
  | 'malformed';

/** The attachment failed a check; nothing was decrypted (or, for 'malformed', nothing is returned). */
export class AttachmentIntegrityError extends Error {
  constructor(
    readonly reason: AttachmentIntegrityReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'AttachmentIntegrityError';
  }
}

/**
 * The padded plaintext size for a plaintext of `size` bytes: Signal's buckets,
 * max(541, floor(1.05^ceil(log_1.05(size)))), so sizes leak only to within 5%.
 */
export function attachmentPaddedSize(size: number): number {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`bad attachment size: ${size}`);
  const bucket = Math.floor(1.05 ** Math.ceil(Math.log(size) / Math.log(1.05)));
  // max(size, …) guards against floating-point rounding below the size.
  return Math.max(541, size, bucket);
}

export async function encryptAttachment(
  crypto: CryptoProvider,
  plaintext: Uint8Array,
  options: EncryptAttachmentOptions = {},
): Promise<EncryptedAttachment> {
  const size = plaintext.length;
  let input = plaintext;
  if (options.pad ?? true) {
    input = new Uint8Array(attachmentPaddedSize(size));
    input.set(plaintext);
  }
  const key = crypto.randomBytes(ATTACHMENT_KEY_LENGTH);
  const ciphertext = await sealBlob(crypto, key, input);
  return { ciphertext, key, digest: await sha256(ciphertext), size };
}

/**
 * Verifies and decrypts a downloaded blob with the `key` and `digest` from the message. Order:
 * digest, MAC (both constant time), decrypt. With `size` (from the message), the bucket padding is
 * cut off; without it, the padded plaintext is returned. Throws `AttachmentIntegrityError`.
 */
export async function decryptAttachment(
  crypto: CryptoProvider,
  ciphertext: Uint8Array,
  key: Uint8Array,
  digest: Uint8Array,
  size?: number | bigint,
): Promise<Uint8Array> {
  // The key is checked first: a malformed pointer is reported as such, not as a digest mismatch.
  if (key.length !== ATTACHMENT_KEY_LENGTH)
    throw new AttachmentIntegrityError('malformed', `attachment key must be ${ATTACHMENT_KEY_LENGTH} bytes`);
  if (!constantTimeEqual(await sha256(ciphertext), digest))
    throw new AttachmentIntegrityError('digest', 'attachment digest mismatch');

  const plaintext = await openBlob(crypto, key, ciphertext);

  if (size === undefined) return plaintext;
  if (BigInt(size) > BigInt(plaintext.length) || BigInt(size) < 0n)
    throw new AttachmentIntegrityError('malformed', `attachment size ${size} exceeds its ${plaintext.length} bytes`);
  return plaintext.subarray(0, Number(size));
}

/**
 * Encrypt-then-MAC under a 64-byte key (AES key ‖ MAC key): iv ‖ AES-256-CBC ‖ HMAC-SHA256(iv ‖ ct).
 * The attachment layout; provisioning messages (src/provisioning.ts) use it too.
 */
export async function sealBlob(crypto: CryptoProvider, key: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
  if (key.length !== ATTACHMENT_KEY_LENGTH) throw new RangeError(`blob key must be ${ATTACHMENT_KEY_LENGTH} bytes`);
  const iv = crypto.randomBytes(IV_LENGTH);
  const ct = await crypto.aes256CbcEncrypt(key.subarray(0, AES_KEY_LENGTH), iv, plaintext);
  const blob = new Uint8Array(IV_LENGTH + ct.length + MAC_LENGTH);
  blob.set(iv);
  blob.set(ct, IV_LENGTH);
  const mac = await crypto.hmacSha256(key.subarray(AES_KEY_LENGTH), blob.subarray(0, IV_LENGTH + ct.length));
  blob.set(mac, IV_LENGTH + ct.length);
  return blob;
}

/** Checks the MAC of a `sealBlob` output in constant time, then decrypts. Throws `AttachmentIntegrityError`. */
export async function openBlob(crypto: CryptoProvider, key: Uint8Array, blob: Uint8Array): Promise<Uint8Array> {
  if (key.length !== ATTACHMENT_KEY_LENGTH)
    throw new AttachmentIntegrityError('malformed', `attachment key must be ${ATTACHMENT_KEY_LENGTH} bytes`);
  if (blob.length < MIN_CIPHERTEXT_LENGTH || (blob.length - IV_LENGTH - MAC_LENGTH) % BLOCK !== 0)
    throw new AttachmentIntegrityError('malformed', `attachment ciphertext has a bad length (${blob.length})`);
  const macOffset = blob.length - MAC_LENGTH;
  const expectedMac = await crypto.hmacSha256(key.subarray(AES_KEY_LENGTH), blob.subarray(0, macOffset));
  if (!constantTimeEqual(expectedMac, blob.subarray(macOffset)))
    throw new AttachmentIntegrityError('mac', 'attachment MAC mismatch');
  try {
    return await crypto.aes256CbcDecrypt(
      key.subarray(0, AES_KEY_LENGTH),
      blob.subarray(0, IV_LENGTH),
      blob.subarray(IV_LENGTH, macOffset),
    );
  } catch (cause) {
    // Only reachable when the sender itself encrypted garbage (the MAC verified).
    throw new AttachmentIntegrityError('malformed', 'attachment cipher padding is invalid', { cause });
  }
}

/** Constant-time equality; the lengths are public. */
function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] as number) ^ (b[i] as number);
  return diff === 0;
}

/**
 * SHA-256: WebCrypto where present (Node 20, browsers: native and fast for large blobs),
 * else @noble/hashes (React Native without a polyfill).
 */
export async function sha256(data: Uint8Array): Promise<Uint8Array> {
  const subtle = globalThis.crypto?.subtle;
  if (subtle === undefined) return nobleSha256(data);
  // WebCrypto wants an ArrayBuffer-backed view (not a SharedArrayBuffer one).
  const input = data.buffer instanceof ArrayBuffer ? (data as Uint8Array<ArrayBuffer>) : data.slice();
  return new Uint8Array(await subtle.digest('SHA-256', input));
}
