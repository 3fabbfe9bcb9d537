import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { sha256 } from '@noble/hashes/sha2.js';
import { sha3_256, shake256 } from '@noble/hashes/sha3.js';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { describe, expect, it } from 'vitest';
import { concatBytes, fromHex, toHex } from '../src/bytes.ts';
import { InvalidArgumentError, InvalidMessageError } from '../src/errors.ts';
import {
  CT1_BYTES,
  CT2_BYTES,
  DK_BYTES,
  EK_VECTOR_BYTES,
  HEADER_BYTES,
  SHARED_SECRET_BYTES,
  decaps,
  ekMatchesHeader,
  encaps1,
  encaps2,
  generateKeyPair,
} from '../src/spqr/incremental-mlkem768.ts';

interface NistKat {
  key_generation_seed: string;
  sha3_256_hash_of_public_key: string;
  sha3_256_hash_of_secret_key: string;
  encapsulation_seed: string;
  sha3_256_hash_of_ciphertext: string;
  shared_secret: string;
}

// The first 25 NIST-DRBG ML-KEM-768 KATs, vendored from libcrux (see test/vectors/README.md).
const kats: NistKat[] = JSON.parse(
  readFileSync(resolve(import.meta.dirname, 'vectors/mlkem768-nistkats.json'), 'utf8'),
);
// Self-check vectors for SPQR (not Signal's; produced by a model that interoperated with 0.103).
const modelVector = JSON.parse(
  readFileSync(resolve(import.meta.dirname, '../../../../shared/vectors/spqr-model-vectors.json'), 'utf8'),
).incremental_mlkem768;

/** Reproducible pseudo-random bytes for the cross-checks. */
const prng = (label: string, i: number, length: number) =>
  shake256(concatBytes(new TextEncoder().encode(label), Uint8Array.of(i)), { dkLen: length });

/** The FIPS 203 implicit-rejection key K̄ = J(z ‖ c) = SHAKE256(z ‖ c, 32). */
const rejectionKey = (z: Uint8Array, ct: Uint8Array) => shake256(concatBytes(z, ct), { dkLen: 32 });

/** Sets the idx-th 12-bit coefficient of an encoded t̂ (little-endian 12-bit words). */
function setCoefficient(ekVector: Uint8Array, idx: number, value: number): Uint8Array {
  const out = ekVector.slice();
  const at = (idx >> 1) * 3;
  if (idx % 2 === 0) {
    out[at] = value & 0xff;
    out[at + 1] = ((out[at + 1] as number) & 0xf0) | (value >> 8);
  } else {
    out[at + 1] = ((out[at + 1] as number) & 0x0f) | ((value & 0x0f) << 4);
    out[at + 2] = value >> 4;
  }
  return out;
}

/** A header that commits to this (possibly malformed) ek vector, so only the modulus check can object. */
const rehashedHeader = (header: Uint8Array, ekVector: Uint8Array) =>
  concatBytes(header.subarray(0, 32), sha3_256(concatBytes(ekVector, header.subarray(0, 32))));

describe('incremental ML-KEM-768: NIST known answers', () => {
  it('has the 25 vendored vectors', () => expect(kats).toHaveLength(25));

  it.each(kats.map((kat, i) => [i, kat] as const))('KAT %i', (_i, kat) => {
    const seed = fromHex(kat.key_generation_seed);
    const { header, ekVector, dk } = generateKeyPair(seed);
    expect(header).toHaveLength(HEADER_BYTES);
    expect(ekVector).toHaveLength(EK_VECTOR_BYTES);
    expect(dk).toHaveLength(DK_BYTES);
    const ek = concatBytes(ekVector, header.subarray(0, 32));
    expect(toHex(sha3_256(ek))).toBe(kat.sha3_256_hash_of_public_key);
    expect(toHex(header.subarray(32))).toBe(kat.sha3_256_hash_of_public_key);
    expect(toHex(sha3_256(dk))).toBe(kat.sha3_256_hash_of_secret_key);
    expect(ekMatchesHeader(header, ekVector)).toBe(true);

    const m = fromHex(kat.encapsulation_seed);
    const { ct1, sharedSecret } = encaps1(header, m);
    expect(ct1).toHaveLength(CT1_BYTES);
    expect(toHex(sharedSecret)).toBe(kat.shared_secret);
    const ct2 = encaps2(header, ekVector, m);
    expect(ct2).toHaveLength(CT2_BYTES);
    expect(toHex(sha3_256(concatBytes(ct1, ct2)))).toBe(kat.sha3_256_hash_of_ciphertext);
    expect(toHex(decaps(dk, ct1, ct2))).toBe(kat.shared_secret);
  });
});

describe('incremental ML-KEM-768 against @noble/post-quantum', () => {
  const cases = Array.from({ length: 24 }, (_, i) => i);

  it.each(cases)('random seed %i: ct1 ‖ ct2 and K equal noble’s Encaps(ek, m); both decapsulate', (i) => {
    const seed = prng('hush incremental ml-kem keygen', i, 64);
    const m = prng('hush incremental ml-kem m', i, 32);
    const { header, ekVector, dk } = generateKeyPair(seed);
    const noble = ml_kem768.keygen(seed);
    expect(toHex(concatBytes(ekVector, header.subarray(0, 32)))).toBe(toHex(noble.publicKey));
    expect(toHex(dk)).toBe(toHex(noble.secretKey));

    const { ct1, sharedSecret } = encaps1(header, m);
    const ref = ml_kem768.encapsulate(noble.publicKey, m);
    expect(toHex(ct1)).toBe(toHex(ref.cipherText.subarray(0, CT1_BYTES)));
    expect(toHex(sharedSecret)).toBe(toHex(ref.sharedSecret));
    const ct2 = encaps2(header, ekVector, m);
    expect(toHex(ct2)).toBe(toHex(ref.cipherText.subarray(CT1_BYTES)));

    expect(toHex(decaps(dk, ct1, ct2))).toBe(toHex(sharedSecret));
    expect(toHex(ml_kem768.decapsulate(concatBytes(ct1, ct2), noble.secretKey))).toBe(toHex(sharedSecret));
  });

  it('gives different ct1 and K for different m under the same header', () => {
    const { header } = generateKeyPair(prng('hush incremental ml-kem keygen', 99, 64));
    const a = encaps1(header, new Uint8Array(32).fill(1));
    const b = encaps1(header, new Uint8Array(32).fill(2));
    expect(toHex(a.ct1)).not.toBe(toHex(b.ct1));
    expect(toHex(a.sharedSecret)).not.toBe(toHex(b.sharedSecret));
    expect(a.sharedSecret).toHaveLength(SHARED_SECRET_BYTES);
  });
});

describe('incremental ML-KEM-768: SPQR model vector', () => {
  it('reproduces incremental_mlkem768', () => {
    const { header, ekVector, dk } = generateKeyPair(fromHex(modelVector.keygen_seed_d_z));
    expect(toHex(header)).toBe(modelVector.header);
    expect(toHex(sha256(ekVector))).toBe(modelVector.sha256_of_ek_vector_1152);
    const m = fromHex(modelVector.encaps_m);
    const { ct1, sharedSecret } = encaps1(header, m);
    expect(toHex(sha256(ct1))).toBe(modelVector.sha256_of_ct1_960);
    expect(toHex(sharedSecret)).toBe(modelVector.shared_secret);
    const ct2 = encaps2(header, ekVector, m);
    expect(toHex(sha256(ct2))).toBe(modelVector.sha256_of_ct2_128);
    expect(modelVector.decaps_ok).toBe(true);
    expect(toHex(decaps(dk, ct1, ct2))).toBe(modelVector.shared_secret);
  });
});

describe('incremental ML-KEM-768: rejections', () => {
  const seed = prng('hush incremental ml-kem rejections', 0, 64);
  const { header, ekVector, dk } = generateKeyPair(seed);
  const m = prng('hush incremental ml-kem rejections m', 0, 32);

  it.each([
    [0, 3329],
    [1, 3329],
    [510, 4095],
    [767, 3400],
  ])('rejects coefficient %i = %i (≥ q) even when the header hash commits to it', (idx, value) => {
    const bad = setCoefficient(ekVector, idx, value);
    const badHeader = rehashedHeader(header, bad);
    expect(ekMatchesHeader(badHeader, bad)).toBe(false);
    expect(() => encaps2(badHeader, bad, m)).toThrow(InvalidMessageError);
  });

  it('accepts coefficient q − 1 = 3328 under a header that commits to it (the check is not too strict)', () => {
    const edge = setCoefficient(ekVector, 1, 3328);
    const edgeHeader = rehashedHeader(header, edge);
    expect(ekMatchesHeader(edgeHeader, edge)).toBe(true);
    const ek = concatBytes(edge, edgeHeader.subarray(0, 32));
    const { ct1, sharedSecret } = encaps1(edgeHeader, m);
    const ref = ml_kem768.encapsulate(ek, m);
    expect(toHex(concatBytes(ct1, encaps2(edgeHeader, edge, m)))).toBe(toHex(ref.cipherText));
    expect(toHex(sharedSecret)).toBe(toHex(ref.sharedSecret));
  });

  it('rejects an ek vector that does not hash to the header', () => {
    const flipped = ekVector.slice();
    flipped[700] = (flipped[700] as number) ^ 0x01;
    expect(ekMatchesHeader(header, flipped)).toBe(false);
    expect(() => encaps2(header, flipped, m)).toThrow(InvalidMessageError);
    const otherRho = header.slice();
    otherRho[0] = (otherRho[0] as number) ^ 0x80;
    expect(ekMatchesHeader(otherRho, ekVector)).toBe(false);
    expect(() => encaps2(otherRho, ekVector, m)).toThrow(InvalidMessageError);
    expect(ekMatchesHeader(header, generateKeyPair(prng('other', 0, 64)).ekVector)).toBe(false);
  });

  it('rejects wrong lengths with typed errors', () => {
    const short = (b: Uint8Array) => b.subarray(0, b.length - 1);
    const long = (b: Uint8Array) => concatBytes(b, new Uint8Array(1));
    expect(() => generateKeyPair(seed.subarray(0, 32))).toThrow(InvalidArgumentError);
    expect(() => generateKeyPair(long(seed))).toThrow(InvalidArgumentError);
    expect(() => encaps1(short(header), m)).toThrow(InvalidMessageError);
    expect(() => encaps1(long(header), m)).toThrow(InvalidMessageError);
    expect(() => encaps1(header, short(m))).toThrow(InvalidArgumentError);
    expect(() => encaps2(short(header), ekVector, m)).toThrow(InvalidMessageError);
    expect(() => encaps2(header, short(ekVector), m)).toThrow(InvalidMessageError);
    expect(() => encaps2(header, long(ekVector), m)).toThrow(InvalidMessageError);
    expect(() => encaps2(header, ekVector, long(m))).toThrow(InvalidArgumentError);
    expect(ekMatchesHeader(short(header), ekVector)).toBe(false);
    expect(ekMatchesHeader(header, short(ekVector))).toBe(false);
    const { ct1 } = encaps1(header, m);
    const ct2 = encaps2(header, ekVector, m);
    expect(() => decaps(short(dk), ct1, ct2)).toThrow(InvalidArgumentError);
    expect(() => decaps(dk, short(ct1), ct2)).toThrow(InvalidMessageError);
    expect(() => decaps(dk, ct1, long(ct2))).toThrow(InvalidMessageError);
    // A swapped ct1/ct2 pair has both lengths wrong.
    expect(() => decaps(dk, ct2, ct1)).toThrow(InvalidMessageError);
  });

  it('rejects a decapsulation key whose H(ek) does not match its ek', () => {
    const { ct1 } = encaps1(header, m);
    const ct2 = encaps2(header, ekVector, m);
    const corrupt = dk.slice();
    corrupt[1152 + 5] = (corrupt[1152 + 5] as number) ^ 0x04; // inside the embedded ek
    expect(() => decaps(corrupt, ct1, ct2)).toThrow(InvalidArgumentError);
  });

  it('decapsulates a corrupted ct1 or ct2 to the implicit-rejection key, not K', () => {
    const { ct1, sharedSecret } = encaps1(header, m);
    const ct2 = encaps2(header, ekVector, m);
    const z = seed.subarray(32);
    expect(toHex(decaps(dk, ct1, ct2))).toBe(toHex(sharedSecret));

    const badCt1 = ct1.slice();
    badCt1[17] = (badCt1[17] as number) ^ 0x10;
    const rejected = decaps(dk, badCt1, ct2);
    expect(rejected).toHaveLength(SHARED_SECRET_BYTES);
    expect(toHex(rejected)).not.toBe(toHex(sharedSecret));
    expect(toHex(rejected)).toBe(toHex(rejectionKey(z, concatBytes(badCt1, ct2))));

    const badCt2 = ct2.slice();
    badCt2[CT2_BYTES - 1] = (badCt2[CT2_BYTES - 1] as number) ^ 0x01;
    const rejected2 = decaps(dk, ct1, badCt2);
    expect(toHex(rejected2)).not.toBe(toHex(sharedSecret));
    expect(toHex(rejected2)).toBe(toHex(rejectionKey(z, concatBytes(ct1, badCt2))));
  });
});
