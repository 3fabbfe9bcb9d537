import * as Signal from '@signalapp/libsignal-client';
import { describe, expect, it } from 'vitest';
import { fromHex, toHex, utf8 } from '../src/bytes.ts';
import { KeyPair, PublicKey } from '../src/curve.ts';
import { FingerprintVersionMismatchError, InvalidArgumentError, InvalidMessageError } from '../src/errors.ts';
import { Fingerprint, ScannableFingerprint } from '../src/fingerprint.ts';
import { providers } from './providers.ts';

// The vector from libsignal's rust/protocol/src/fingerprint.rs (tests fingerprint_test_v1/v2).
const ALICE_IDENTITY = fromHex('0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868');
const BOB_IDENTITY = fromHex('05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b');
const ALICE_ID = utf8('+14152222222');
const BOB_ID = utf8('+14153333333');
const DISPLAYABLE = '300354477692869396892869876765458257569162576843440918079131';
const ALICE_LOCAL = '1e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df';
const BOB_LOCAL = 'd62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d';
const SCANNABLE = {
  1: {
    alice: `080112220a20${ALICE_LOCAL}1a220a20${BOB_LOCAL}`,
    bob: `080112220a20${BOB_LOCAL}1a220a20${ALICE_LOCAL}`,
  },
  2: {
    alice: `080212220a20${ALICE_LOCAL}1a220a20${BOB_LOCAL}`,
    bob: `080212220a20${BOB_LOCAL}1a220a20${ALICE_LOCAL}`,
  },
} as const;

const aliceKey = PublicKey.deserialize(ALICE_IDENTITY);
const bobKey = PublicKey.deserialize(BOB_IDENTITY);

describe.each(providers)('fingerprints ($name)', (crypto) => {
  const pair = (version: number, iterations?: number) =>
    Promise.all([
      Fingerprint.create(crypto, {
        version,
        iterations,
        localIdentifier: ALICE_ID,
        localKey: aliceKey,
        remoteIdentifier: BOB_ID,
        remoteKey: bobKey,
      }),
      Fingerprint.create(crypto, {
        version,
        iterations,
        localIdentifier: BOB_ID,
        localKey: bobKey,
        remoteIdentifier: ALICE_ID,
        remoteKey: aliceKey,
      }),
    ]);

  it.each([1, 2] as const)('matches libsignal’s test vector, version %i', async (version) => {
    const [alice, bob] = await pair(version);
    expect(alice.displayableString()).toBe(DISPLAYABLE);
    expect(bob.displayableString()).toBe(DISPLAYABLE);
    expect(toHex(alice.scannable.serialize())).toBe(SCANNABLE[version].alice);
    expect(toHex(bob.scannable.serialize())).toBe(SCANNABLE[version].bob);
    expect(alice.scannable.compare(bob.scannable.serialize())).toBe(true);
    expect(bob.scannable.compare(alice.scannable.serialize())).toBe(true);
    // Scanning one's own code is not a match: the halves are crossed.
    expect(alice.scannable.compare(alice.scannable.serialize())).toBe(false);
  });

  it('defaults to 5200 iterations', async () => {
    const fingerprint = await Fingerprint.create(crypto, {
      version: 2,
      localIdentifier: ALICE_ID,
      localKey: aliceKey,
      remoteIdentifier: BOB_ID,
      remoteKey: bobKey,
    });
    expect(fingerprint.displayableString()).toBe(DISPLAYABLE);
  });

  it('agrees with libsignal-client for random keys and ACI identifiers', async () => {
    for (const version of [1, 2]) {
      const [a, b] = await Promise.all([KeyPair.generate(crypto), KeyPair.generate(crypto)]);
      const aId = crypto.randomBytes(16);
      const bId = crypto.randomBytes(16);
      const iterations = 1024;
      const hush = await Fingerprint.create(crypto, {
        version,
        iterations,
        localIdentifier: aId,
        localKey: a.publicKey,
        remoteIdentifier: bId,
        remoteKey: b.publicKey,
      });
      const theirs = Signal.Fingerprint.new(
        iterations,
        version,
        Uint8Array.from(bId),
        Signal.PublicKey.deserialize(Uint8Array.from(b.publicKey.serialize())),
        Uint8Array.from(aId),
        Signal.PublicKey.deserialize(Uint8Array.from(a.publicKey.serialize())),
      );
      expect(hush.displayableString()).toBe(theirs.displayableFingerprint().toString());
      expect(hush.displayableString()).toMatch(/^\d{60}$/);
      const theirScannable = theirs.scannableFingerprint();
      expect(hush.scannable.compare(theirScannable.toBuffer())).toBe(true);
      expect(
        theirScannable.compare(Signal.ScannableFingerprint._fromBuffer(Uint8Array.from(hush.scannable.serialize()))),
      ).toBe(true);
    }
  });

  it('gives a different number for a different key, and the codes stop matching', async () => {
    const [alice, bob] = await pair(2, 1024);
    const mallory = await KeyPair.generate(crypto);
    const spoofed = await Fingerprint.create(crypto, {
      version: 2,
      iterations: 1024,
      localIdentifier: ALICE_ID,
      localKey: aliceKey,
      remoteIdentifier: BOB_ID,
      remoteKey: mallory.publicKey,
    });
    expect(alice.displayableString()).toBe(bob.displayableString());
    expect(spoofed.displayableString()).not.toBe(alice.displayableString());
    expect(spoofed.displayableString().slice(0, 30)).not.toBe(spoofed.displayableString().slice(30));
    expect(bob.scannable.compare(spoofed.scannable.serialize())).toBe(false);
    expect(spoofed.scannable.compare(bob.scannable.serialize())).toBe(false);
  });

  it('rejects a version mismatch, from either implementation', async () => {
    const [alice] = await pair(1);
    const [, bobV2] = await pair(2);
    expect(() => alice.scannable.compare(bobV2.scannable.serialize())).toThrow(FingerprintVersionMismatchError);
    const theirs = Signal.Fingerprint.new(
      5200,
      2,
      Uint8Array.from(BOB_ID),
      Signal.PublicKey.deserialize(Uint8Array.from(BOB_IDENTITY)),
      Uint8Array.from(ALICE_ID),
      Signal.PublicKey.deserialize(Uint8Array.from(ALICE_IDENTITY)),
    );
    let error: unknown;
    try {
      alice.scannable.compare(theirs.scannableFingerprint().toBuffer());
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(FingerprintVersionMismatchError);
    expect(error).toMatchObject({ theirs: 2, ours: 1, code: 'FINGERPRINT_VERSION_MISMATCH' });
  });

  it('rejects iteration counts outside 2..1,000,000', async () => {
    for (const iterations of [0, 1, -5, 1_000_001, 2.5]) {
      await expect(
        Fingerprint.create(crypto, {
          version: 2,
          iterations,
          localIdentifier: ALICE_ID,
          localKey: aliceKey,
          remoteIdentifier: BOB_ID,
          remoteKey: bobKey,
        }),
      ).rejects.toThrow(InvalidArgumentError);
    }
    // The smallest legal count, for completeness.
    const [a, b] = await pair(2, 2);
    expect(a.displayableString()).toBe(b.displayableString());
  });

  it('rejects malformed scanned codes with InvalidMessageError', async () => {
    const [alice, bob] = await pair(2, 1024);
    const good = bob.scannable.serialize();
    // Empty input is a (fieldless) code of version 0; every other cut is malformed or incomplete.
    expect(() => alice.scannable.compare(new Uint8Array(0))).toThrow(FingerprintVersionMismatchError);
    for (let length = 1; length < good.length; length++) {
      expect(() => alice.scannable.compare(good.subarray(0, length))).toThrow(InvalidMessageError);
      expect(() => ScannableFingerprint.deserialize(good.subarray(0, length))).toThrow(InvalidMessageError);
    }
    expect(() => alice.scannable.compare(fromHex('0802'))).toThrow(InvalidMessageError);
    expect(() => alice.scannable.compare(fromHex('0802ffff'))).toThrow(InvalidMessageError);
    expect(() => ScannableFingerprint.deserialize(fromHex('080212220a20'))).toThrow(InvalidMessageError);
    expect(ScannableFingerprint.deserialize(good).version).toBe(2);
  });
});
