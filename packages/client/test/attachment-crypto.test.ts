import { createDecipheriv, createHash, createHmac } from 'node:crypto';
import type { CryptoProvider } from '@hush/protocol';
import { jsCrypto } from '@hush/protocol/js';
import { nodeCrypto } from '@hush/protocol/node';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  AttachmentIntegrityError,
  type AttachmentIntegrityReason,
  attachmentPaddedSize,
  decryptAttachment,
  encryptAttachment,
  sha256,
} from '../src/content/attachment-crypto.ts';

const MiB = 1024 * 1024;

function pattern(length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 131 + 7) & 0xff);
}

async function expectIntegrityError(promise: Promise<unknown>, reason: AttachmentIntegrityReason): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(AttachmentIntegrityError);
  expect((error as AttachmentIntegrityError).reason).toBe(reason);
}

/** Byte equality without vitest's per-element deep equality (slow on a MiB). */
function expectBytes(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length);
  expect(Buffer.from(actual.buffer, actual.byteOffset, actual.length).equals(expected)).toBe(true);
}

function flip(bytes: Uint8Array, index: number): Uint8Array {
  const copy = bytes.slice();
  copy[index] = (copy[index] as number) ^ 0x01;
  return copy;
}

describe.each([nodeCrypto, jsCrypto] as CryptoProvider[])('attachments with the $name provider', (crypto) => {
  it.each([0, 1, 15, 16, 541, 542, 100_000, MiB])('round trips %i bytes', async (length) => {
    const plaintext = pattern(length);
    const encrypted = await encryptAttachment(crypto, plaintext);
    expect(encrypted.size).toBe(length);
    expect(encrypted.key).toHaveLength(64);
    expect(encrypted.digest).toHaveLength(32);
    // iv + PKCS#7 over the bucket-padded plaintext + MAC
    const padded = attachmentPaddedSize(length);
    expect(encrypted.ciphertext).toHaveLength(16 + (Math.floor(padded / 16) + 1) * 16 + 32);

    const decrypted = await decryptAttachment(crypto, encrypted.ciphertext, encrypted.key, encrypted.digest, length);
    expectBytes(decrypted, plaintext);
    // The size may come straight from the protobuf (uint64 → bigint).
    expectBytes(
      await decryptAttachment(crypto, encrypted.ciphertext, encrypted.key, encrypted.digest, BigInt(length)),
      plaintext,
    );
    // Without the size, the zero bucket padding is still there.
    const whole = await decryptAttachment(crypto, encrypted.ciphertext, encrypted.key, encrypted.digest);
    expect(whole).toHaveLength(padded);
    expectBytes(whole.subarray(0, length), plaintext);
    expect(whole.subarray(length).every((b) => b === 0)).toBe(true);
  });

  it('can skip the bucket padding', async () => {
    for (const length of [0, 1, 16, 1000]) {
      const plaintext = pattern(length);
      const encrypted = await encryptAttachment(crypto, plaintext, { pad: false });
      expect(encrypted.ciphertext).toHaveLength(16 + (Math.floor(length / 16) + 1) * 16 + 32);
      expectBytes(await decryptAttachment(crypto, encrypted.ciphertext, encrypted.key, encrypted.digest), plaintext);
    }
  });

  it("uses Signal's layout: iv ‖ AES-256-CBC ‖ HMAC-SHA256(iv ‖ ct), digest = SHA-256(blob)", async () => {
    const plaintext = pattern(5000);
    const { ciphertext, key, digest, size } = await encryptAttachment(crypto, plaintext);
    expect(digest).toEqual(new Uint8Array(createHash('sha256').update(ciphertext).digest()));
    const iv = ciphertext.subarray(0, 16);
    const body = ciphertext.subarray(16, ciphertext.length - 32);
    const mac = ciphertext.subarray(ciphertext.length - 32);
    const expectedMac = createHmac('sha256', key.subarray(32)).update(iv).update(body).digest();
    expect(mac).toEqual(new Uint8Array(expectedMac));
    const decipher = createDecipheriv('aes-256-cbc', key.subarray(0, 32), iv);
    const decrypted = new Uint8Array(Buffer.concat([decipher.update(body), decipher.final()]));
    expectBytes(decrypted.subarray(0, size), plaintext);
  });

  it('uses a fresh key and iv every time', async () => {
    const plaintext = pattern(100);
    const a = await encryptAttachment(crypto, plaintext);
    const b = await encryptAttachment(crypto, plaintext);
    expect(a.key).not.toEqual(b.key);
    expect(a.ciphertext.subarray(0, 16)).not.toEqual(b.ciphertext.subarray(0, 16));
    expect(a.digest).not.toEqual(b.digest);
  });

  it('a tampered blob fails the digest check first', async () => {
    const { ciphertext, key, digest } = await encryptAttachment(crypto, pattern(1000));
    for (const index of [0, 20, ciphertext.length - 1]) {
      await expectIntegrityError(decryptAttachment(crypto, flip(ciphertext, index), key, digest), 'digest');
    }
    await expectIntegrityError(decryptAttachment(crypto, ciphertext.subarray(0, 100), key, digest), 'digest');
  });

  it('a tampered blob whose digest matches (e.g. a lying digest) fails the MAC', async () => {
    const { ciphertext, key } = await encryptAttachment(crypto, pattern(1000));
    for (const index of [0, 15, 16, 500, ciphertext.length - 33, ciphertext.length - 32, ciphertext.length - 1]) {
      const tampered = flip(ciphertext, index);
      await expectIntegrityError(decryptAttachment(crypto, tampered, key, await sha256(tampered)), 'mac');
    }
  });

  it('a tampered digest fails the digest check', async () => {
    const { ciphertext, key, digest } = await encryptAttachment(crypto, pattern(1000));
    await expectIntegrityError(decryptAttachment(crypto, ciphertext, key, flip(digest, 31)), 'digest');
    await expectIntegrityError(decryptAttachment(crypto, ciphertext, key, digest.subarray(0, 16)), 'digest');
    await expectIntegrityError(decryptAttachment(crypto, ciphertext, key, new Uint8Array(0)), 'digest');
  });

  it('a wrong key fails the MAC', async () => {
    const { ciphertext, key, digest } = await encryptAttachment(crypto, pattern(1000));
    await expectIntegrityError(decryptAttachment(crypto, ciphertext, crypto.randomBytes(64), digest), 'mac');
    // Only the MAC half differs.
    await expectIntegrityError(decryptAttachment(crypto, ciphertext, flip(key, 40), digest), 'mac');
    // Another attachment's key.
    const other = await encryptAttachment(crypto, pattern(1000));
    await expectIntegrityError(decryptAttachment(crypto, ciphertext, other.key, digest), 'mac');
  });

  it('structurally bad inputs are malformed', async () => {
    const { ciphertext, key, digest } = await encryptAttachment(crypto, pattern(10));
    await expectIntegrityError(decryptAttachment(crypto, ciphertext, key.subarray(0, 32), digest), 'malformed');
    // Too short or misaligned, with a digest that matches.
    for (const blob of [new Uint8Array(0), new Uint8Array(63), ciphertext.subarray(0, ciphertext.length - 1)]) {
      await expectIntegrityError(decryptAttachment(crypto, blob, key, await sha256(blob)), 'malformed');
    }
    // A size larger than the plaintext.
    await expectIntegrityError(decryptAttachment(crypto, ciphertext, key, digest, 100_000), 'malformed');
    await expectIntegrityError(decryptAttachment(crypto, ciphertext, key, digest, -1), 'malformed');
  });

  it('bad cipher padding under a valid MAC (a sender encrypting garbage) is malformed', async () => {
    const key = crypto.randomBytes(64);
    const iv = crypto.randomBytes(16);
    // Encrypt a block whose last byte is not valid PKCS#7, then drop the real padding block.
    const ct = await crypto.aes256CbcEncrypt(key.subarray(0, 32), iv, new Uint8Array(16).fill(0x11));
    const body = ct.subarray(0, 16);
    const macInput = new Uint8Array([...iv, ...body]);
    const blob = new Uint8Array([...macInput, ...(await crypto.hmacSha256(key.subarray(32), macInput))]);
    await expectIntegrityError(decryptAttachment(crypto, blob, key, await sha256(blob)), 'malformed');
  });
});

describe('attachments across providers', () => {
  it('node encrypts, js decrypts, and back', async () => {
    const plaintext = pattern(70_000);
    const a = await encryptAttachment(nodeCrypto, plaintext);
    expectBytes(await decryptAttachment(jsCrypto, a.ciphertext, a.key, a.digest, a.size), plaintext);
    const b = await encryptAttachment(jsCrypto, plaintext);
    expectBytes(await decryptAttachment(nodeCrypto, b.ciphertext, b.key, b.digest, b.size), plaintext);
  });
});

describe('size buckets', () => {
  it('are at least 541 bytes, at least the size, within 5% above it, and monotone', () => {
    let previous = 0;
    for (let size = 0; size < 200_000; size += 97) {
      const padded = attachmentPaddedSize(size);
      expect(padded).toBeGreaterThanOrEqual(Math.max(541, size));
      expect(padded).toBeLessThanOrEqual(Math.max(541, Math.ceil(size * 1.05)));
      expect(padded).toBeGreaterThanOrEqual(previous);
      previous = padded;
    }
    for (const size of [0, 1, 540, 541]) expect(attachmentPaddedSize(size)).toBe(541);
    expect(attachmentPaddedSize(100 * MiB)).toBeLessThanOrEqual(105 * MiB);
  });

  it('hide sizes within a bucket', async () => {
    const bucket = attachmentPaddedSize(10_000);
    expect(bucket).toBeGreaterThan(10_100);
    const lengths = new Set<number>();
    for (const size of [10_000, 10_001, 10_100, bucket - 1, bucket]) {
      lengths.add((await encryptAttachment(nodeCrypto, pattern(size))).ciphertext.length);
    }
    expect(lengths.size).toBe(1);
  });

  it('reject sizes that are not non-negative integers', () => {
    expect(() => attachmentPaddedSize(-1)).toThrow(RangeError);
    expect(() => attachmentPaddedSize(1.5)).toThrow(RangeError);
  });
});

describe('sha256', () => {
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  it('matches node:crypto with WebCrypto and with the @noble fallback', async () => {
    const data = pattern(100_003);
    const expected = new Uint8Array(createHash('sha256').update(data).digest());
    expect(await sha256(data)).toEqual(expected);
    expect(await sha256(data.subarray(3))).toEqual(
      new Uint8Array(createHash('sha256').update(data.subarray(3)).digest()),
    );
    vi.stubGlobal('crypto', undefined);
    expect(globalThis.crypto).toBeUndefined();
    expect(await sha256(data)).toEqual(expected);
  });
});
