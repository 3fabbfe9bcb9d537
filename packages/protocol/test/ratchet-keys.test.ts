import { describe, expect, it } from 'vitest';
import { fromHex, toHex } from '../src/bytes.ts';
import { InvalidMessageError } from '../src/errors.ts';
import { deriveMessageKeys, messageKeySeed, nextChainKey } from '../src/ratchet/keys.ts';
import { SpqrMessageType, decodeSpqrMessage, encodeSpqrMessage } from '../src/spqr/message.ts';
import { providers } from './providers.ts';

// libsignal rust/protocol/src/ratchet/keys.rs, test_chain_key_derivation (unsalted message keys).
const CHAIN_VECTOR = {
  seed: '8ab72d6f4cc5ac0d387eaf463378ddb28edd07385b1cb01250c715982e7ad48f',
  cipherKey: 'bf51e9d75e0e31031051f82a2491ffc084fa298b7793bd9db620056febf45217',
  macKey: 'c6c77d6a73a354337a56435e34607dfe48e3ace14e77314dc6abc172e7a7030b',
  nextChainKey: '28e8f8fee54b801eef7c5cfb2f17f32c7b334485bbb70fac6ec10342a246d15d',
};

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
      '01ffffffffffffffffffff0100', // varint too long
      '010101018080040000', // chunk index above 65535
    ];
    for (const hex of bad) expect(() => decodeSpqrMessage(fromHex(hex)), hex).toThrow(InvalidMessageError);
  });

  it('ignores trailing bytes and reads overlong varints, as spqr 1.6.0 does', () => {
    expect(decodeSpqrMessage(fromHex(`01010100${'ee'.repeat(33)}`))).toEqual({
      epoch: 1,
      index: 1,
      type: SpqrMessageType.None,
    });
    const hdr = decodeSpqrMessage(fromHex(`0101010100${'aa'.repeat(32)}bb`));
    expect(toHex(hdr.chunk?.data as Uint8Array)).toBe('aa'.repeat(32));
    expect(decodeSpqrMessage(fromHex('018100820004'))).toEqual({ epoch: 1, index: 2, type: SpqrMessageType.Ct1Ack });
  });
});
