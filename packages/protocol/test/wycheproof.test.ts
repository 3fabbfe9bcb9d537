/**
 * Project Wycheproof (github.com/C2SP/wycheproof, testvectors_v1, Apache-2.0) against every crypto
 * provider: known answers plus the edge cases Wycheproof collects to break wrappers (low-order and
 * non-canonical X25519 points, malleable Ed25519 signatures, bad CBC padding, HKDF/HMAC sizes,
 * ML-KEM modulus and length checks).
 *
 * The vectors live outside the repository, in `../shared/vectors/wycheproof/` next to the clone.
 * Each file is read and parsed once; each test loops over a file's cases and reports every failing
 * tcId at once, so one run shows the whole picture instead of stopping at the first mismatch.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ml_kem1024 } from '@noble/post-quantum/ml-kem.js';
import { describe, expect, it } from 'vitest';
import { toHex } from '../src/bytes.ts';
import { type CryptoProvider, LowOrderPointError } from '../src/crypto/provider.ts';
import { providers } from './providers.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const wycheproofDir = path.resolve(repoRoot, '../shared/vectors/wycheproof');

type Result = 'valid' | 'invalid' | 'acceptable';
interface TestCase {
  tcId: number;
  comment?: string;
  flags: string[];
  result: Result;
}
interface VectorFile<G> {
  algorithm: string;
  numberOfTests: number;
  testGroups: G[];
}

function load<G>(name: string): VectorFile<G> {
  return JSON.parse(readFileSync(path.join(wycheproofDir, name), 'utf8')) as VectorFile<G>;
}

function hex(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, 'hex'));
}

/** Runs `fn`; returns the error it threw, or undefined. */
async function thrown(fn: () => unknown): Promise<unknown> {
  try {
    await fn();
    return undefined;
  } catch (error) {
    return error;
  }
}

function describeCase(t: TestCase, detail: string): string {
  return `tcId ${t.tcId} (${t.result}; ${t.comment || t.flags.join(',') || 'no comment'}): ${detail}`;
}

// ---------------------------------------------------------------------------------------------
// The vector files, parsed once.

interface XdhTest extends TestCase {
  public: string;
  private: string;
  shared: string;
}
const x25519File = load<{ curve: string; tests: XdhTest[] }>('x25519_test.json');

interface EddsaTest extends TestCase {
  msg: string;
  sig: string;
}
const ed25519File = load<{ publicKey: { curve: string; pk: string }; tests: EddsaTest[] }>('ed25519_test.json');

interface IndCpaTest extends TestCase {
  key: string;
  iv: string;
  msg: string;
  ct: string;
}
const aesCbcFile = load<{ keySize: number; ivSize: number; tests: IndCpaTest[] }>('aes_cbc_pkcs5_test.json');

interface HkdfTest extends TestCase {
  ikm: string;
  salt: string;
  info: string;
  size: number;
  okm: string;
}
const hkdfFile = load<{ tests: HkdfTest[] }>('hkdf_sha256_test.json');

interface MacTest extends TestCase {
  key: string;
  msg: string;
  tag: string;
}
const hmacFile = load<{ keySize: number; tagSize: number; tests: MacTest[] }>('hmac_sha256_test.json');

interface MlKemTest extends TestCase {
  seed: string;
  ek?: string;
  c: string;
  K: string;
}
const mlkemFile = load<{ parameterSet: string; tests: MlKemTest[] }>('mlkem_1024_test.json');

interface MlKemEncapsTest extends TestCase {
  ek: string;
  m: string;
  c: string;
  K: string;
}
const mlkemEncapsFile = load<{ parameterSet: string; tests: MlKemEncapsTest[] }>('mlkem_1024_encaps_test.json');

function allTests<T>(file: VectorFile<{ tests: T[] }>): T[] {
  return file.testGroups.flatMap((g) => g.tests);
}

// ---------------------------------------------------------------------------------------------

describe.each(providers)('Wycheproof vectors, $name provider', (provider: CryptoProvider) => {
  it('X25519 (x25519_test.json)', async () => {
    expect(x25519File.testGroups.every((g) => g.curve === 'curve25519')).toBe(true);
    const tests = allTests(x25519File);
    const failures: string[] = [];
    let matched = 0;
    let rejectedZero = 0;
    for (const t of tests) {
      const privateKey = hex(t.private);
      const publicKey = hex(t.public);
      if (t.result === 'invalid') {
        // Must not produce the listed shared secret: either reject or compute something else.
        const error = await thrown(async () => {
          const out = await provider.x25519PrivateKey(privateKey).agree(publicKey);
          if (toHex(out) === t.shared) failures.push(describeCase(t, 'accepted an invalid case'));
        });
        if (error !== undefined && !(error instanceof Error)) failures.push(describeCase(t, 'threw a non-Error'));
        continue;
      }
      if (/^(00)+$/.test(t.shared)) {
        // Plain X25519 gives an all-zero output for a low-order (or twist low-order) public key, and
        // Wycheproof calls that "acceptable". libsignal is stricter: it rejects an all-zero agreement
        // as an invalid key, so every provider must throw LowOrderPointError here instead of
        // returning zeros.
        const error = await thrown(() => provider.x25519PrivateKey(privateKey).agree(publicKey));
        if (error instanceof LowOrderPointError) rejectedZero++;
        else failures.push(describeCase(t, `expected LowOrderPointError, got ${String(error ?? 'a result')}`));
        continue;
      }
      // valid and acceptable (twist points, non-canonical u >= p, high bit set: RFC 7748 says to
      // mask bit 255 and reduce mod p, and libsignal's x25519-dalek does exactly that).
      const error = await thrown(async () => {
        const out = await provider.x25519PrivateKey(privateKey).agree(publicKey);
        if (toHex(out) === t.shared) matched++;
        else failures.push(describeCase(t, `got ${toHex(out)}, want ${t.shared}`));
      });
      if (error !== undefined) failures.push(describeCase(t, `threw ${String(error)}`));
    }
    expect(failures).toEqual([]);
    expect(tests.length).toBe(x25519File.numberOfTests);
    expect(rejectedZero).toBeGreaterThan(0);
    expect(matched + rejectedZero).toBe(tests.filter((t) => t.result !== 'invalid').length);
  });

  it('X25519: a prepared key answers alike on every use, whatever later happens to its bytes', async () => {
    // RFC 7748 §6.1: Alice's and Bob's key pairs and their shared secret.
    const alice = hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
    const bobPublic = hex('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
    const key = provider.x25519PrivateKey(alice);
    alice.fill(0);
    for (let i = 0; i < 2; i++) {
      expect(toHex(await key.publicKey())).toBe('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
      expect(toHex(await key.agree(bobPublic))).toBe(
        '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742',
      );
    }
    await expect(key.agree(new Uint8Array(32))).rejects.toBeInstanceOf(LowOrderPointError);
    expect(toHex(await key.agree(bobPublic))).toBe('4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742');
  });

  it('Ed25519 verification (ed25519_test.json)', async () => {
    const failures: string[] = [];
    let checked = 0;
    for (const group of ed25519File.testGroups) {
      expect(group.publicKey.curve).toBe('edwards25519');
      const publicKey = hex(group.publicKey.pk);
      for (const t of group.tests) {
        // 'acceptable' does not occur in this file; treat it like 'valid' if a later version adds one.
        const want = t.result !== 'invalid';
        const error = await thrown(async () => {
          const got = await provider.ed25519Verify(publicKey, hex(t.msg), hex(t.sig));
          if (got !== want) failures.push(describeCase(t, `verify returned ${got}`));
        });
        // The interface returns false for anything malformed; it must never throw.
        if (error !== undefined) failures.push(describeCase(t, `threw ${String(error)}`));
        checked++;
      }
    }
    expect(failures).toEqual([]);
    expect(checked).toBe(ed25519File.numberOfTests);
  });

  it('AES-256-CBC with PKCS#7 padding (aes_cbc_pkcs5_test.json, 256-bit keys)', async () => {
    const groups = aesCbcFile.testGroups.filter((g) => g.keySize === 256);
    expect(groups.length).toBeGreaterThan(0);
    const failures: string[] = [];
    let valid = 0;
    let invalid = 0;
    for (const group of groups) {
      expect(group.ivSize).toBe(128);
      for (const t of group.tests) {
        const key = hex(t.key);
        const iv = hex(t.iv);
        if (t.result === 'invalid') {
          // Bad padding or an empty ciphertext: decryption must fail.
          const error = await thrown(() => provider.aes256CbcDecrypt(key, iv, hex(t.ct)));
          if (error === undefined) failures.push(describeCase(t, 'decrypt did not throw'));
          invalid++;
          continue;
        }
        const error = await thrown(async () => {
          const ct = await provider.aes256CbcEncrypt(key, iv, hex(t.msg));
          if (toHex(ct) !== t.ct) failures.push(describeCase(t, `encrypt gave ${toHex(ct)}`));
          const msg = await provider.aes256CbcDecrypt(key, iv, hex(t.ct));
          if (toHex(msg) !== t.msg) failures.push(describeCase(t, `decrypt gave ${toHex(msg)}`));
        });
        if (error !== undefined) failures.push(describeCase(t, `threw ${String(error)}`));
        valid++;
      }
    }
    expect(failures).toEqual([]);
    expect(valid).toBeGreaterThan(0);
    expect(invalid).toBeGreaterThan(0);
  });

  it('HKDF-SHA256 (hkdf_sha256_test.json)', async () => {
    const tests = allTests(hkdfFile);
    const failures: string[] = [];
    let valid = 0;
    let invalid = 0;
    for (const t of tests) {
      if (t.result === 'invalid') {
        // The only invalid cases ask for more than 255 * 32 bytes; a provider must refuse rather
        // than return a truncated or wrapped output.
        expect(t.flags).toContain('SizeTooLarge');
        const error = await thrown(() => provider.hkdfSha256(hex(t.ikm), hex(t.salt), hex(t.info), t.size));
        if (error === undefined) failures.push(describeCase(t, `accepted size ${t.size}`));
        invalid++;
        continue;
      }
      // An empty salt means RFC 5869's default (32 zero bytes), as CryptoProvider documents.
      const error = await thrown(async () => {
        const okm = await provider.hkdfSha256(hex(t.ikm), hex(t.salt), hex(t.info), t.size);
        if (toHex(okm) !== t.okm) failures.push(describeCase(t, `got ${toHex(okm).slice(0, 64)}...`));
      });
      if (error !== undefined) failures.push(describeCase(t, `threw ${String(error)}`));
      valid++;
    }
    expect(failures).toEqual([]);
    expect(valid).toBe(tests.filter((t) => t.result === 'valid').length);
    expect(valid).toBeGreaterThan(0);
    expect(invalid).toBe(tests.length - valid);
  });

  it('HMAC-SHA256 (hmac_sha256_test.json, full 32-byte tags)', async () => {
    // The protocol computes full tags (and truncates to 8 bytes itself), so only the 256-bit tag
    // groups apply. Their invalid cases are modified tags: the computed tag must differ.
    const groups = hmacFile.testGroups.filter((g) => g.tagSize === 256);
    expect(groups.length).toBeGreaterThan(0);
    const failures: string[] = [];
    let valid = 0;
    let invalid = 0;
    for (const group of groups) {
      for (const t of group.tests) {
        const error = await thrown(async () => {
          const tag = toHex(await provider.hmacSha256(hex(t.key), hex(t.msg)));
          if (t.result === 'invalid' && tag === t.tag) failures.push(describeCase(t, 'modified tag matched'));
          if (t.result !== 'invalid' && tag !== t.tag) failures.push(describeCase(t, `got ${tag}`));
        });
        if (error !== undefined) failures.push(describeCase(t, `threw ${String(error)}`));
        if (t.result === 'invalid') invalid++;
        else valid++;
      }
    }
    expect(failures).toEqual([]);
    expect(valid).toBeGreaterThan(0);
    expect(invalid).toBeGreaterThan(0);
  });
});

// ML-KEM is not behind CryptoProvider: src/kem.ts runs @noble/post-quantum's ml_kem1024 on every
// platform (adding libsignal's Kyber1024 hashing around it), so the FIPS 203 vectors go straight to
// ml_kem1024, once.
describe('Wycheproof vectors, ML-KEM-1024 (@noble/post-quantum ml_kem1024)', () => {
  it('key generation and decapsulation (mlkem_1024_test.json)', () => {
    const tests = allTests(mlkemFile);
    expect(mlkemFile.testGroups.every((g) => g.parameterSet === 'ML-KEM-1024')).toBe(true);
    const failures: string[] = [];
    let valid = 0;
    let invalid = 0;
    for (const t of tests) {
      try {
        if (t.result === 'invalid') {
          invalid++;
          // Either the 64-byte seed (d ‖ z) has the wrong length, or the ciphertext does.
          let keys: { publicKey: Uint8Array; secretKey: Uint8Array };
          try {
            keys = ml_kem1024.keygen(hex(t.seed));
          } catch {
            continue; // rejected the seed: correct
          }
          try {
            ml_kem1024.decapsulate(hex(t.c), keys.secretKey);
          } catch {
            continue; // rejected the ciphertext: correct
          }
          failures.push(describeCase(t, 'neither keygen nor decapsulate rejected the input'));
          continue;
        }
        valid++;
        const { publicKey, secretKey } = ml_kem1024.keygen(hex(t.seed));
        if (t.ek !== undefined && toHex(publicKey) !== t.ek) failures.push(describeCase(t, 'ek differs'));
        // Valid cases include random and bit-flipped ciphertexts: K is then the implicit-rejection
        // value, which decapsulation must reproduce exactly.
        const k = toHex(ml_kem1024.decapsulate(hex(t.c), secretKey));
        if (k !== t.K) failures.push(describeCase(t, `K = ${k}, want ${t.K}`));
      } catch (error) {
        failures.push(describeCase(t, `threw ${String(error)}`));
      }
    }
    expect(failures).toEqual([]);
    expect(valid + invalid).toBe(mlkemFile.numberOfTests);
    expect(valid).toBeGreaterThan(0);
    expect(invalid).toBeGreaterThan(0);
  });

  it('encapsulation (mlkem_1024_encaps_test.json)', () => {
    const tests = allTests(mlkemEncapsFile);
    expect(mlkemEncapsFile.testGroups.every((g) => g.parameterSet === 'ML-KEM-1024')).toBe(true);
    const failures: string[] = [];
    let valid = 0;
    let invalid = 0;
    for (const t of tests) {
      if (t.result === 'invalid') {
        invalid++;
        // Wrong length, or coefficients >= q (the FIPS 203 section 7.2 modulus check).
        let accepted = false;
        try {
          ml_kem1024.encapsulate(hex(t.ek), hex(t.m));
          accepted = true;
        } catch {
          // rejected: correct
        }
        if (accepted) failures.push(describeCase(t, 'encapsulate accepted an invalid key'));
        continue;
      }
      valid++;
      try {
        const { cipherText, sharedSecret } = ml_kem1024.encapsulate(hex(t.ek), hex(t.m));
        if (toHex(cipherText) !== t.c) failures.push(describeCase(t, 'ciphertext differs'));
        if (toHex(sharedSecret) !== t.K) failures.push(describeCase(t, 'shared secret differs'));
      } catch (error) {
        failures.push(describeCase(t, `threw ${String(error)}`));
      }
    }
    expect(failures).toEqual([]);
    expect(valid + invalid).toBe(mlkemEncapsFile.numberOfTests);
    expect(valid).toBeGreaterThan(0);
    expect(invalid).toBeGreaterThan(0);
  });
});
