/**
 * Native Ed25519 signing in every provider, and the seeded signing keys built on it: RFC 8032
 * known answers, and the key derivation checked against @noble/curves' own Ed25519-to-X25519
 * conversions. (libsignal's verdict on the signatures is in sender-keys.test.ts.)
 */
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { describe, expect, it } from 'vitest';
import { fromHex, toHex } from '../src/bytes.ts';
import type { CryptoProvider } from '../src/crypto/provider.ts';
import { SeededSigningKey } from '../src/curve.ts';
import { providers } from './providers.ts';

/** RFC 8032 §7.1, TEST 1 to 3: secret key (seed), public key, message, signature. */
const RFC8032_VECTORS = [
  {
    seed: '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60',
    publicKey: 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
    message: '',
    signature:
      'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
  },
  {
    seed: '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb',
    publicKey: '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c',
    message: '72',
    signature:
      '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
  },
  {
    seed: 'c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7',
    publicKey: 'fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025',
    message: 'af82',
    signature:
      '6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a',
  },
];

describe.each(providers)('seeded signing ($name)', (crypto: CryptoProvider) => {
  it('ed25519PublicKey and ed25519Sign give RFC 8032’s answers', async () => {
    for (const v of RFC8032_VECTORS) {
      expect(toHex(await crypto.ed25519PublicKey(fromHex(v.seed)))).toBe(v.publicKey);
      expect(toHex(await crypto.ed25519Sign(fromHex(v.seed), fromHex(v.message)))).toBe(v.signature);
    }
  });

  it('derives the X25519 key of the Ed25519 seed, and signs as Ed25519 plus the sign bit', async () => {
    const message = crypto.randomBytes(100);
    for (let i = 0; i < 16; i++) {
      const { publicKey, privateKey } = await SeededSigningKey.generate(crypto);
      const serialized = privateKey.serialize();
      const seed = serialized.subarray(0, 32);
      const edwards = serialized.subarray(32);
      expect(edwards).toEqual(ed25519.getPublicKey(seed));
      // The X25519 public key is both the Montgomery form of A and that of the RFC 8032 scalar.
      expect(publicKey.publicKeyBytes).toEqual(ed25519.utils.toMontgomery(edwards));
      expect(publicKey.publicKeyBytes).toEqual(x25519.getPublicKey(ed25519.utils.toMontgomerySecret(seed)));

      const signature = await SeededSigningKey.deserialize(serialized).sign(crypto, message);
      expect((signature[63] as number) >> 7).toBe((edwards[31] as number) >> 7);
      const plain = signature.slice();
      plain[63] = (plain[63] as number) & 0x7f;
      expect(ed25519.verify(plain, message, edwards, { zip215: false })).toBe(true);
      expect(await publicKey.verifySignature(crypto, message, signature)).toBe(true);
    }
  });
});
