/**
 * `PublicKey.isCanonical`, the responder's check on an incoming base key, against a reference
 * built on @noble/curves (the Edwards point, then `isTorsionFree`): keys with and without a
 * torsion component, the 8-torsion itself, twist points, non-canonical encodings, random strings
 * and every public value in Wycheproof's X25519 file.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { mod } from '@noble/curves/abstract/modular.js';
import { bytesToNumberLE, numberToBytesLE } from '@noble/curves/utils.js';
import { describe, expect, it } from 'vitest';
import { fromHex } from '../src/bytes.ts';
import type { CryptoProvider } from '../src/crypto/provider.ts';
import { KeyPair, PublicKey, TORSION_CHECK_SCALAR } from '../src/curve.ts';
import { providers } from './providers.ts';
import { L, P, edwards, montgomery, torsionGenerator } from './support/torsion.ts';

/** The check as it was first written: decode the Edwards point, multiply by L. */
function reference(u: Uint8Array): boolean {
  if (((u[31] as number) & 0x80) !== 0 || bytesToNumberLE(u) >= P) return false;
  try {
    return edwards(u).isTorsionFree();
  } catch {
    return false; // a twist point, or u = −1
  }
}

const wycheproofX25519 = JSON.parse(
  readFileSync(
    path.resolve(
      path.dirname(fileURLToPath(import.meta.url)),
      '../../../../shared/vectors/wycheproof/x25519_test.json',
    ),
    'utf8',
  ),
) as { testGroups: { tests: { public: string }[] }[] };

/** Random strings (torsion-free points one time in sixteen) and Wycheproof's edge cases, judged once. */
const samples = [
  ...Array.from({ length: 160 }, () => {
    const u = new Uint8Array(randomBytes(32));
    u[31] = (u[31] as number) & 0x7f;
    return u;
  }),
  ...wycheproofX25519.testGroups.flatMap((group) => group.tests.map((t) => fromHex(t.public))),
].map((u) => ({ u, want: reference(u) }));

describe('the subgroup-check scalar', () => {
  it('is a clamped X25519 scalar, −1 mod L, and no twist point of large order is fixed by it', () => {
    const k = bytesToNumberLE(TORSION_CHECK_SCALAR);
    expect(k % 8n).toBe(0n);
    expect(k >> 254n).toBe(1n); // bit 254 set, bit 255 clear
    expect(mod(k, L)).toBe(L - 1n);
    // Curve order 8L = p + 1 − t; twist order p + 1 + t = 4L′ with L′ prime (SafeCurves).
    const twistPrime = (2n * P + 2n - 8n * L) / 4n;
    expect(2n * P + 2n - 8n * L).toBe(4n * twistPrime);
    expect((k - 1n) % twistPrime).not.toBe(0n);
    expect((k + 1n) % twistPrime).not.toBe(0n);
  });

  it('has samples of both verdicts to be tested on', () => {
    expect(samples.filter((s) => s.want).length).toBeGreaterThan(10);
    expect(samples.filter((s) => !s.want).length).toBeGreaterThan(100);
  });
});

describe.each(providers)('PublicKey.isCanonical ($name)', (crypto: CryptoProvider) => {
  const check = (u: Uint8Array) => PublicKey.fromPublicKeyBytes(u).isCanonical(crypto);

  it('accepts fresh keys and refuses them with any torsion component added', async () => {
    const t8 = torsionGenerator();
    for (let i = 0; i < 8; i++) {
      const key = (await KeyPair.generate(crypto)).publicKey;
      expect(await key.isCanonical(crypto)).toBe(true);
      const point = edwards(key.publicKeyBytes);
      for (let j = 1n; j < 8n; j++) {
        const mixed = montgomery(point.add(t8.multiplyUnsafe(j)));
        expect(reference(mixed)).toBe(false);
        expect(await check(mixed)).toBe(false);
      }
    }
    // The 8-torsion itself (u = 0, 1, −1 and the four points of order 8).
    for (let j = 1n; j < 8n; j++) {
      const u = montgomery(t8.multiplyUnsafe(j));
      expect(await check(u)).toBe(false);
    }
  });

  it('refuses the high bit and u ≥ p', async () => {
    const key = (await KeyPair.generate(crypto)).publicKey.publicKeyBytes.slice();
    key[31] = (key[31] as number) | 0x80;
    expect(await check(key)).toBe(false);
    for (let u = P; u < 2n ** 255n; u++) expect(await check(numberToBytesLE(u, 32))).toBe(false);
    // p + 9 ≡ 9, the base point: canonical only in its reduced form.
    expect(await check(numberToBytesLE(9n, 32))).toBe(true);
    expect(await check(numberToBytesLE(P + 9n, 32))).toBe(false);
  });

  it('agrees with the reference on random strings and on Wycheproof’s X25519 public values', async () => {
    for (const { u, want } of samples) expect(await check(u), Buffer.from(u).toString('hex')).toBe(want);
  });
});
