import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fromHex, toHex } from '../src/bytes.ts';
import { InvalidMessageError, TooFarInFutureError } from '../src/errors.ts';
import { deriveMessageKeys, messageKeySeed, nextChainKey } from '../src/ratchet/keys.ts';
import { ChainDirection, initSpqrChain, spqrRecvKey, spqrSendKey } from '../src/spqr/chain.ts';
import { SpqrMessageType, decodeSpqrMessage, encodeSpqrMessage } from '../src/spqr/message.ts';
import { providers } from './providers.ts';

// libsignal rust/protocol/src/ratchet/keys.rs, test_chain_key_derivation (unsalted message keys).
const CHAIN_VECTOR = {
  seed: '8ab72d6f4cc5ac0d387eaf463378ddb28edd07385b1cb01250c715982e7ad48f',
  cipherKey: 'bf51e9d75e0e31031051f82a2491ffc084fa298b7793bd9db620056febf45217',
  macKey: 'c6c77d6a73a354337a56435e34607dfe48e3ace14e77314dc6abc172e7a7030b',
  nextChainKey: '28e8f8fee54b801eef7c5cfb2f17f32c7b334485bbb70fac6ec10342a246d15d',
};

// Self-check vectors for SPQR (not Signal's; produced by a model that interoperated with 0.103).
const spqrVectors = JSON.parse(
  readFileSync(resolve(import.meta.dirname, '../../../../shared/vectors/spqr-model-vectors.json'), 'utf8'),
);

describe.each(providers)('ratchet key schedule with the $name provider', (crypto) => {
  it('derives libsignal’s chain-key vector', async () => {
    const chainKey = { key: fromHex(CHAIN_VECTOR.seed), index: 0 };
    const keys = await deriveMessageKeys(crypto, await messageKeySeed(crypto, chainKey), chainKey.index, undefined);
    expect(toHex(keys.cipherKey)).toBe(CHAIN_VECTOR.cipherKey);
    expect(toHex(keys.macKey)).toBe(CHAIN_VECTOR.macKey);
    expect(keys.counter).toBe(0);
    const next = await nextChainKey(crypto, chainKey);
    expect(toHex(next.key)).toBe(CHAIN_VECTOR.nextChainKey);
    expect(next.index).toBe(1);
  });

  it('starts the SPQR chain and derives its A2B keys as the model vectors say', async () => {
    const authKey = fromHex(spqrVectors.inputs.pqr_auth_key);
    const alice = await initSpqrChain(crypto, authKey, ChainDirection.A2B);
    const bob = await initSpqrChain(crypto, authKey, ChainDirection.B2A);
    expect(toHex(alice.nextRoot)).toBe(spqrVectors.chain_start.next_root);
    expect(toHex(alice.send.next)).toBe(spqrVectors.chain_start.a2b_seed);
    expect(toHex(alice.recv.next)).toBe(spqrVectors.chain_start.b2a_seed);
    for (const { index, key } of spqrVectors.chain_a2b_epoch0_keys as { index: number; key: string }[]) {
      const sent = await spqrSendKey(crypto, alice);
      expect(sent.ctr).toBe(index);
      expect(toHex(sent.key)).toBe(key);
    }
    // Bob receives them out of order; a key is handed out once only.
    expect(toHex(await spqrRecvKey(crypto, bob, 3))).toBe(spqrVectors.chain_a2b_epoch0_keys[2].key);
    expect(toHex(await spqrRecvKey(crypto, bob, 1))).toBe(spqrVectors.chain_a2b_epoch0_keys[0].key);
    await expect(spqrRecvKey(crypto, bob, 1)).rejects.toBeInstanceOf(InvalidMessageError);
    await expect(spqrRecvKey(crypto, bob, 3)).rejects.toBeInstanceOf(InvalidMessageError);
    expect(toHex(await spqrRecvKey(crypto, bob, 2))).toBe(spqrVectors.chain_a2b_epoch0_keys[1].key);
    // spqr's MAX_JUMP: 25,000 ahead of the last key is allowed, 25,001 is not.
    await expect(spqrRecvKey(crypto, bob, 3 + 25_001)).rejects.toBeInstanceOf(TooFarInFutureError);
    await expect(spqrRecvKey(crypto, bob, 3 + 25_000)).resolves.toHaveLength(32);
    expect(bob.skipped.length).toBeLessThanOrEqual(2000);
  });
});

describe('SPQR message framing', () => {
  it('encodes the shapes libsignal sends', () => {
    const chunk = { index: 0, data: new Uint8Array(32).fill(7) };
    expect(toHex(encodeSpqrMessage({ epoch: 1, index: 1, type: SpqrMessageType.Hdr, chunk }))).toBe(
      `0101010100${'07'.repeat(32)}`,
    );
    expect(toHex(encodeSpqrMessage({ epoch: 1, index: 1, type: SpqrMessageType.None }))).toBe('01010100');
    expect(decodeSpqrMessage(fromHex('0101c00200'))).toEqual({ epoch: 1, index: 320, type: SpqrMessageType.None });
    const hdr = decodeSpqrMessage(fromHex(`010105018102${'aa'.repeat(32)}`));
    expect(hdr).toMatchObject({ epoch: 1, index: 5, type: SpqrMessageType.Hdr, chunk: { index: 257 } });
  });

  it('rejects malformed framing with InvalidMessageError', () => {
    const bad = [
      '', // a peer without SPQR
      '00010100', // version 0
      '02010100', // unknown version
      '01000100', // epoch 0
      '010101', // no type
      '01010107', // unknown type
      '01010101', // Hdr without chunk
      `01010101 00${'aa'.repeat(31)}`.replace(' ', ''), // short chunk
      `0101010100${'aa'.repeat(33)}`, // long chunk
      '0101010000', // trailing byte after None
      '01ffffffffffffffffffff0100', // varint too long
      '010101018080040000', // chunk index above 65535
    ];
    for (const hex of bad) expect(() => decodeSpqrMessage(fromHex(hex)), hex).toThrow(InvalidMessageError);
  });
});
