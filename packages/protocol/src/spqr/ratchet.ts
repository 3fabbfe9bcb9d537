import type { CryptoProvider } from '../crypto/provider.ts';
import { initAuthenticator } from './authenticator.ts';
import { type BraidState, braidRecv, braidSend, cloneBraidState, initialBraidState } from './braid.ts';
import {
  ChainDirection,
  type SpqrChainState,
  addChainEpoch,
  cloneSpqrChain,
  initSpqrChain,
  spqrRecvKey,
  spqrSendKey,
} from './chain.ts';
import { decodeSpqrMessage, encodeSpqrMessage } from './message.ts';

/*
 * SPQR, the post-quantum half of the Triple Ratchet (spqr src/lib.rs), as the session cipher uses
 * it: per message, `spqrSend` gives the bytes of SignalMessage field 5 and a 32-byte key that salts
 * the Double Ratchet's message keys; `spqrRecv` takes field 5 and gives the same key.
 *
 * Inside, the braid (braid.ts) runs one ML-KEM-768 exchange per epoch, a chunk per message, and
 * outputs an epoch secret when one completes; the chain (chain.ts) adds it as a new chain epoch and
 * hands out the per-message keys (a message labelled epoch e is keyed from chain epoch e − 1).
 *
 * Both operations return a new state and leave their input as it was, so a receiver can keep the
 * result only once the Double Ratchet MAC and the decryption have succeeded (libsignal's
 * triple_ratchet.rs does the same): an SPQR change from a message that fails is never kept.
 */
export interface SpqrState {
  readonly braid: BraidState;
  readonly chain: SpqrChainState;
}

/** The state after PQXDH: `authKey` is its SPQR secret; the initiator sends A2B. */
export async function initSpqr(
  crypto: CryptoProvider,
  authKey: Uint8Array,
  direction: ChainDirection,
): Promise<SpqrState> {
  const [auth, chain] = await Promise.all([
    initAuthenticator(crypto, authKey),
    initSpqrChain(crypto, authKey, direction),
  ]);
  return { braid: initialBraidState(auth, direction === ChainDirection.A2B), chain };
}

/** A deep copy. Not needed for safety (nothing here mutates a state), but cheap: no key material is copied. */
export function cloneSpqrState(state: SpqrState): SpqrState {
  return { braid: cloneBraidState(state.braid), chain: cloneSpqrChain(state.chain) };
}

/** The next outgoing SPQR message (field 5) and its key; the caller stores `state`. */
export async function spqrSend(
  crypto: CryptoProvider,
  state: SpqrState,
): Promise<{ state: SpqrState; message: Uint8Array; key: Uint8Array }> {
  const step = await braidSend(crypto, state.braid);
  const chain = cloneSpqrChain(state.chain);
  // The send_ct side's epoch secret enters the chain before this message takes its key.
  if (step.epochSecret) await addChainEpoch(crypto, chain, step.epochSecret.epoch, step.epochSecret.secret);
  const { ctr, key } = await spqrSendKey(crypto, chain, step.message.epoch - 1);
  return { state: { braid: step.state, chain }, message: encodeSpqrMessage({ ...step.message, index: ctr }), key };
}

/**
 * The key of an incoming SPQR message (field 5) and the state after it, which the caller keeps
 * only if the message then decrypts. Throws a ProtocolError for malformed framing, an epoch out of
 * range, a bad header or ciphertext MAC, a bad ek, a used or too distant key.
 */
export async function spqrRecv(
  crypto: CryptoProvider,
  state: SpqrState,
  bytes: Uint8Array,
): Promise<{ state: SpqrState; key: Uint8Array }> {
  const message = decodeSpqrMessage(bytes);
  const step = await braidRecv(crypto, state.braid, message);
  const chain = cloneSpqrChain(state.chain);
  // The send_ek side's epoch secret arrives with the last Ct2 chunk; that message is still keyed
  // from the epoch before (its label), so the order here does not matter for its key.
  if (step.epochSecret) await addChainEpoch(crypto, chain, step.epochSecret.epoch, step.epochSecret.secret);
  const key = await spqrRecvKey(crypto, chain, message.epoch - 1, message.index);
  return { state: { braid: step.state, chain }, key };
}
