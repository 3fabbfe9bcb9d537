import { be32, utf8 } from '../bytes.ts';
import type { CryptoProvider } from '../crypto/provider.ts';
import { InvalidMessageError, TooFarInFutureError } from '../errors.ts';

/*
 * SPQR's symmetric chain (spqr src/chain.rs), epoch 1 only: the part of the Triple Ratchet that
 * salts every message key. The ML-KEM braid that adds epochs is a later step; until then this
 * chain gives forward secrecy per message on top of the Double Ratchet but no post-quantum
 * post-compromise recovery.
 *
 *   start  HKDF(0³², PQR, "Signal PQ Ratchet V1 Chain  Start", 96) → next_root ‖ A2B seed ‖ B2A seed
 *   next   HKDF(0³², next, BE32(ctr) ‖ "Signal PQ Ratchet V1 Chain Next", 64) → next ‖ message key
 */
const ZERO_SALT = new Uint8Array(32);
const CHAIN_START_INFO = utf8('Signal PQ Ratchet V1 Chain  Start'); // two spaces, as in spqr
const CHAIN_NEXT_INFO = utf8('Signal PQ Ratchet V1 Chain Next');
/** Keys kept for messages that arrive late (spqr's max_ooo_keys). */
export const MAX_OUT_OF_ORDER_KEYS = 2000;
/** Largest forward jump of the receiving counter (spqr's max jump). */
export const MAX_JUMP = 25_000;

/** Which way a chain runs: A2B is the initiator's sending direction. */
export enum ChainDirection {
  A2B = 0,
  B2A = 1,
}

export interface SpqrChainHalf {
  next: Uint8Array;
  /** Counter of the last key taken from this half (0 before the first). */
  ctr: number;
}

export interface SpqrChainState {
  /** Our sending direction; we receive on the other one. */
  direction: ChainDirection;
  /** The root for the next epoch; kept so the ML-KEM braid can add epochs to existing sessions. */
  nextRoot: Uint8Array;
  /** The PQXDH-derived SPQR auth key, kept for the same reason. */
  authKey: Uint8Array;
  send: SpqrChainHalf;
  recv: SpqrChainHalf;
  /** Keys for skipped receive counters, ascending by counter. */
  skipped: { ctr: number; key: Uint8Array }[];
}

export async function initSpqrChain(
  crypto: CryptoProvider,
  authKey: Uint8Array,
  direction: ChainDirection,
): Promise<SpqrChainState> {
  const g = await crypto.hkdfSha256(authKey, ZERO_SALT, CHAIN_START_INFO, 96);
  const a2b = g.slice(32, 64);
  const b2a = g.slice(64, 96);
  return {
    direction,
    nextRoot: g.slice(0, 32),
    authKey: authKey.slice(),
    send: { next: direction === ChainDirection.A2B ? a2b : b2a, ctr: 0 },
    recv: { next: direction === ChainDirection.A2B ? b2a : a2b, ctr: 0 },
    skipped: [],
  };
}

export function cloneSpqrChain(state: SpqrChainState): SpqrChainState {
  return { ...state, send: { ...state.send }, recv: { ...state.recv }, skipped: state.skipped.slice() };
}

async function step(crypto: CryptoProvider, half: SpqrChainHalf): Promise<{ half: SpqrChainHalf; key: Uint8Array }> {
  const ctr = half.ctr + 1;
  const info = new Uint8Array(4 + CHAIN_NEXT_INFO.length);
  info.set(be32(ctr), 0);
  info.set(CHAIN_NEXT_INFO, 4);
  const o = await crypto.hkdfSha256(half.next, ZERO_SALT, info, 64);
  return { half: { next: o.slice(0, 32), ctr }, key: o.slice(32, 64) };
}

/** The next sending key and its counter; mutates `state`. */
export async function spqrSendKey(
  crypto: CryptoProvider,
  state: SpqrChainState,
): Promise<{ ctr: number; key: Uint8Array }> {
  const { half, key } = await step(crypto, state.send);
  state.send = half;
  return { ctr: half.ctr, key };
}

/** The receiving key for counter `ctr`, caching skipped ones; mutates `state`. */
export async function spqrRecvKey(crypto: CryptoProvider, state: SpqrChainState, ctr: number): Promise<Uint8Array> {
  if (ctr <= state.recv.ctr) {
    const i = state.skipped.findIndex((s) => s.ctr === ctr);
    // Not a DuplicatedMessageError: the Double Ratchet chain catches real replays first, so reaching
    // here means this session state is the wrong one, and the caller must go on to older states
    // (libsignal reports SPQR failures as an invalid message for the same reason).
    if (i < 0) throw new InvalidMessageError(`SPQR key ${ctr} already used or trimmed`);
    const [found] = state.skipped.splice(i, 1);
    return (found as { key: Uint8Array }).key;
  }
  const jump = ctr - state.recv.ctr;
  if (jump > MAX_JUMP) throw new TooFarInFutureError(jump, MAX_JUMP);
  let half = state.recv;
  let key: Uint8Array | undefined;
  while (half.ctr < ctr) {
    const next = await step(crypto, half);
    half = next.half;
    if (half.ctr === ctr) key = next.key;
    // Keys that would be trimmed at once are not kept at all.
    else if (half.ctr + MAX_OUT_OF_ORDER_KEYS >= ctr) state.skipped.push({ ctr: half.ctr, key: next.key });
  }
  state.recv = half;
  const excess = state.skipped.length - MAX_OUT_OF_ORDER_KEYS;
  if (excess > 0) state.skipped.splice(0, excess);
  return key as Uint8Array;
}
