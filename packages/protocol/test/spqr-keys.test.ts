import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fromHex, toHex } from '../src/bytes.ts';
import { InvalidMacError, InvalidMessageError, InvalidStateError, TooFarInFutureError } from '../src/errors.ts';
import {
  ciphertextMac,
  headerMac,
  initAuthenticator,
  initAuthenticatorSync,
  updateAuthenticator,
  verifyCiphertextMac,
  verifyHeaderMac,
} from '../src/spqr/authenticator.ts';
import { deriveEpochSecret } from '../src/spqr/braid.ts';
import {
  ChainDirection,
  MAX_OUT_OF_ORDER_KEYS,
  SKIPPED_KEYS_TRIM_SIZE,
  type SpqrChainState,
  addChainEpoch,
  cloneSpqrChain,
  initSpqrChain,
  spqrRecvKey,
  spqrSendKey,
} from '../src/spqr/chain.ts';
import { providers } from './providers.ts';

// Self-check vectors for SPQR (not Signal's; produced by a model that interoperated with 0.103).
const vectors = JSON.parse(
  readFileSync(resolve(import.meta.dirname, '../../../../shared/vectors/spqr-model-vectors.json'), 'utf8'),
);
const pqr = fromHex(vectors.inputs.pqr_auth_key);
const filled = (length: number, byte: number) => new Uint8Array(length).fill(byte);

describe.each(providers)('SPQR authenticator and chain with the $name provider', (crypto) => {
  it('authenticator: init, header MAC, epoch secret, update, ciphertext MAC as the model vectors say', async () => {
    const auth = await initAuthenticator(crypto, pqr);
    expect(toHex(auth.rootKey)).toBe(vectors.auth_after_init_epoch1.root_key);
    expect(toHex(auth.macKey)).toBe(vectors.auth_after_init_epoch1.mac_key);
    expect(initAuthenticatorSync(pqr)).toEqual(auth);

    const header = filled(64, 0x01);
    const hdrMac = await headerMac(crypto, auth, 1, header);
    expect(toHex(hdrMac)).toBe(vectors.mac_hdr_epoch1_hdr_all_01);
    await expect(verifyHeaderMac(crypto, auth, 1, header, hdrMac)).resolves.toBeUndefined();

    const secret = await deriveEpochSecret(crypto, 1, filled(32, 0x02));
    expect(toHex(secret)).toBe(vectors.epoch_secret_epoch1_from_ss_all_02);
    const updated = await updateAuthenticator(crypto, auth, 1, secret);
    expect(toHex(updated.rootKey)).toBe(vectors.auth_after_update_epoch1.root_key);
    expect(toHex(updated.macKey)).toBe(vectors.auth_after_update_epoch1.mac_key);
    // Immutable: the old authenticator is unchanged.
    expect(toHex(auth.rootKey)).toBe(vectors.auth_after_init_epoch1.root_key);

    const ct = filled(1088, 0x03);
    const ctMac = await ciphertextMac(crypto, updated, 1, ct.subarray(0, 960), ct.subarray(960));
    expect(toHex(ctMac)).toBe(vectors.mac_ct_epoch1_ct_all_03_1088);
    await expect(
      verifyCiphertextMac(crypto, updated, 1, ct.subarray(0, 960), ct.subarray(960), ctMac),
    ).resolves.toBeUndefined();
  });

  it('authenticator: a MAC with any bit flipped, or for another epoch, fails as InvalidMacError', async () => {
    const auth = await initAuthenticator(crypto, pqr);
    const header = filled(64, 0x01);
    const mac = await headerMac(crypto, auth, 1, header);
    for (const i of [0, 13, 31]) {
      const bad = mac.slice();
      bad[i] = (bad[i] as number) ^ 0x80;
      await expect(verifyHeaderMac(crypto, auth, 1, header, bad)).rejects.toThrow(/MAC verification failed/);
    }
    await expect(verifyHeaderMac(crypto, auth, 2, header, mac)).rejects.toBeInstanceOf(InvalidMacError);
    await expect(verifyHeaderMac(crypto, auth, 1, header, mac.subarray(0, 16))).rejects.toBeInstanceOf(InvalidMacError);
    const ct1 = filled(960, 3);
    const ct2 = filled(128, 3);
    const ctMac = await ciphertextMac(crypto, auth, 1, ct1, ct2);
    await expect(verifyCiphertextMac(crypto, auth, 1, ct1, filled(128, 4), ctMac)).rejects.toBeInstanceOf(
      InvalidMacError,
    );
  });

  it('chain: start, epoch-0 keys, add epoch 1 and its first key as the model vectors say', async () => {
    const alice = await initSpqrChain(crypto, pqr, ChainDirection.A2B);
    const bob = await initSpqrChain(crypto, pqr, ChainDirection.B2A);
    expect(toHex(alice.nextRoot)).toBe(vectors.chain_start.next_root);
    expect(toHex(alice.links[0]?.send.next as Uint8Array)).toBe(vectors.chain_start.a2b_seed);
    expect(toHex(alice.links[0]?.recv.next as Uint8Array)).toBe(vectors.chain_start.b2a_seed);
    expect(toHex(bob.links[0]?.send.next as Uint8Array)).toBe(vectors.chain_start.b2a_seed);
    for (const { index, key } of vectors.chain_a2b_epoch0_keys as { index: number; key: string }[]) {
      const sent = await spqrSendKey(crypto, alice, 0);
      expect(sent.ctr).toBe(index);
      expect(toHex(sent.key)).toBe(key);
    }
    const secret = fromHex(vectors.epoch_secret_epoch1_from_ss_all_02);
    await addChainEpoch(crypto, alice, 1, secret);
    expect(toHex(alice.nextRoot)).toBe(vectors.chain_after_add_epoch1.next_root);
    expect(toHex(alice.links[1]?.send.next as Uint8Array)).toBe(vectors.chain_after_add_epoch1.a2b_seed);
    expect(toHex(alice.links[1]?.recv.next as Uint8Array)).toBe(vectors.chain_after_add_epoch1.b2a_seed);
    const first = await spqrSendKey(crypto, alice, 1);
    expect(first.ctr).toBe(vectors.chain_a2b_epoch1_first_key.index);
    expect(toHex(first.key)).toBe(vectors.chain_a2b_epoch1_first_key.key);

    // Bob gets the same keys, out of order and across epochs; each once only.
    await addChainEpoch(crypto, bob, 1, secret);
    expect(toHex(await spqrRecvKey(crypto, bob, 1, 1))).toBe(vectors.chain_a2b_epoch1_first_key.key);
    expect(toHex(await spqrRecvKey(crypto, bob, 0, 3))).toBe(vectors.chain_a2b_epoch0_keys[2].key);
    expect(toHex(await spqrRecvKey(crypto, bob, 0, 1))).toBe(vectors.chain_a2b_epoch0_keys[0].key);
    await expect(spqrRecvKey(crypto, bob, 0, 1)).rejects.toThrow(/already requested/);
    await expect(spqrRecvKey(crypto, bob, 0, 3)).rejects.toThrow(/already requested/);
    await expect(spqrRecvKey(crypto, bob, 0, 0)).rejects.toBeInstanceOf(InvalidMessageError);
    expect(toHex(await spqrRecvKey(crypto, bob, 0, 2))).toBe(vectors.chain_a2b_epoch0_keys[1].key);
  });

  it('chain: epochs must be added in order, keys come only from epochs that exist', async () => {
    const chain = await initSpqrChain(crypto, pqr, ChainDirection.A2B);
    await expect(addChainEpoch(crypto, chain, 2, filled(32, 1))).rejects.toBeInstanceOf(InvalidStateError);
    await expect(spqrRecvKey(crypto, chain, 1, 1)).rejects.toThrow(/epoch not in valid range: 1/);
    await expect(spqrSendKey(crypto, chain, 1)).rejects.toThrow(/epoch not in valid range/);
  });

  it('chain: sending never goes back an epoch; old epochs are dropped one behind the sending epoch', async () => {
    const a = await initSpqrChain(crypto, pqr, ChainDirection.A2B);
    const b = await initSpqrChain(crypto, pqr, ChainDirection.B2A);
    for (let e = 1; e <= 3; e++) {
      await addChainEpoch(crypto, a, e, filled(32, e));
      await addChainEpoch(crypto, b, e, filled(32, e));
    }
    // Keys sent in epoch 1, to arrive after the receiver moved on.
    const late = await spqrSendKey(crypto, a, 1);
    await spqrSendKey(crypto, a, 2);
    await expect(spqrSendKey(crypto, a, 1)).rejects.toThrow(/send key epoch decreased \(2 -> 1\)/);
    // Kept: epoch 1 (the peer may still send there), the sending epoch 2 and the newer epoch 3.
    expect(a.links).toHaveLength(3);
    expect(a.links[0]?.send.next).toHaveLength(0); // epoch 1: we can no longer send there

    // b sends in epoch 2: it keeps epoch 1 (a may still send there) and drops epoch 0.
    await spqrSendKey(crypto, b, 2);
    expect(toHex(await spqrRecvKey(crypto, b, 1, late.ctr))).toBe(toHex(late.key));
    await expect(spqrRecvKey(crypto, b, 0, 1)).rejects.toThrow(/epoch not in valid range: 0/);
    await spqrSendKey(crypto, b, 3);
    await expect(spqrRecvKey(crypto, b, 1, 2)).rejects.toThrow(/epoch not in valid range: 1/);
  });

  it('chain: the jump limit, the skipped-key window and its trimming', async () => {
    const bob = await initSpqrChain(crypto, pqr, ChainDirection.B2A);
    // spqr's MAX_JUMP: 25,000 ahead of the last key is allowed, 25,001 is not.
    await expect(spqrRecvKey(crypto, bob, 0, 25_001)).rejects.toBeInstanceOf(TooFarInFutureError);
    const before: SpqrChainState = cloneSpqrChain(bob);
    await spqrRecvKey(crypto, bob, 0, 25_000);
    const half = bob.links[0]?.recv;
    expect(half?.ctr).toBe(25_000);
    // Only keys within the window are kept: 23,000 … 24,999.
    expect(half?.skipped).toHaveLength(MAX_OUT_OF_ORDER_KEYS);
    expect(half?.skipped[0]?.ctr).toBe(25_000 - MAX_OUT_OF_ORDER_KEYS);
    expect(before.links[0]?.recv.ctr).toBe(0); // the clone was not touched
    await expect(spqrRecvKey(crypto, bob, 0, 22_999)).rejects.toThrow(/trimmed/);
    await spqrRecvKey(crypto, bob, 0, 23_500);
    // Filling the cache past its trim size drops everything more than 2,000 behind.
    await spqrRecvKey(crypto, bob, 0, 25_000 + SKIPPED_KEYS_TRIM_SIZE - MAX_OUT_OF_ORDER_KEYS + 2);
    const trimmed = bob.links[0]?.recv.skipped ?? [];
    expect(trimmed.length).toBeLessThan(SKIPPED_KEYS_TRIM_SIZE);
    const ctr = bob.links[0]?.recv.ctr as number;
    expect(Math.min(...trimmed.map((s) => s.ctr))).toBeGreaterThanOrEqual(ctr - 1 - MAX_OUT_OF_ORDER_KEYS);
  });
});
