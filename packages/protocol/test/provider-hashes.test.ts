/**
 * Known answers for the providers' plain hashes, which Wycheproof's files here do not cover:
 * SHA-512 (XEdDSA) and SHA3-256 / SHAKE256 (Kyber's hashes around ML-KEM). Examples from FIPS 180-4
 * and FIPS 202; the Kyber interop tests check the same functions against libsignal end to end.
 */
import { describe, expect, it } from 'vitest';
import { toHex, utf8 } from '../src/bytes.ts';
import type { CryptoProvider } from '../src/crypto/provider.ts';
import { providers } from './providers.ts';

describe.each(providers)('hashes ($name)', (crypto: CryptoProvider) => {
  it('SHA-512, SHA3-256 and SHAKE256 of "" and "abc"', async () => {
    expect(toHex(await crypto.sha512(utf8('abc')))).toBe(
      'ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f',
    );
    expect(toHex(await crypto.sha3_256(new Uint8Array(0)))).toBe(
      'a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a',
    );
    expect(toHex(await crypto.sha3_256(utf8('abc')))).toBe(
      '3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532',
    );
    expect(toHex(await crypto.shake256(new Uint8Array(0), 32))).toBe(
      '46b9dd2b0ba88d13233b3feb743eeb243fcd52ea62b81b82b50c27646ed5762f',
    );
    // A longer output is the same stream continued.
    const long = await crypto.shake256(new Uint8Array(0), 64);
    expect(toHex(long.subarray(0, 32))).toBe('46b9dd2b0ba88d13233b3feb743eeb243fcd52ea62b81b82b50c27646ed5762f');
  });
});
