import { be32, concatBytes, utf8 } from '../bytes.ts';
import type { CryptoProvider } from '../crypto/provider.ts';
import { InvalidMessageError, InvalidStateError, TooFarInFutureError } from '../errors.ts';

/*
 * SPQR's symmetric chain (spqr src/chain.rs): turns the braid's epoch secrets into one key per
 * message, which salts the Double Ratchet's message keys. Chain epoch 0 comes from the PQXDH SPQR
 * secret; each epoch secret S_e the braid outputs starts chain epoch e. A message labelled epoch e
 * on the wire is keyed from chain epoch e − 1.
 *
 *   start  HKDF(0³², PQR, "Signal PQ Ratchet V1 Chain  Start", 96)         → next_root ‖ A2B ‖ B2A
 *   add    HKDF(next_root, S_e, "Signal PQ Ratchet V1 Chain Add Epoch", 96) → next_root ‖ A2B ‖ B2A
 *   next   HKDF(0³², next, BE32(ctr) ‖ "Signal PQ Ratchet V1 Chain Next", 64) → next ‖ message key
 *
 * Each epoch has a sending and a receiving half (A2B is the initiator's sending direction). The
 * counter of a half is the index on the wire; it starts at 1 in every epoch.
 */
const ZERO_SALT = new Uint8Array(32);
const CHAIN_START_INFO = utf8('Signal PQ Ratchet V1 Chain  Start'); // two spaces, as in spqr
const CHAIN_ADD_EPOCH_INFO = utf8('Signal PQ Ratchet V1 Chain Add Epoch');
const CHAIN_NEXT_INFO = utf8('Signal PQ Ratchet V1 Chain Next');
/** Keys kept for messages that arrive late (spqr's max_ooo_keys). */
export const MAX_OUT_OF_ORDER_KEYS = 2000;
/** The skipped-key cache is trimmed to MAX_OUT_OF_ORDER_KEYS behind the counter once it holds this many (spqr's trim size). */
export const SKIPPED_KEYS_TRIM_SIZE = Math.floor((MAX_OUT_OF_ORDER_KEYS * 11) / 10) + 1;
/** Largest forward jump of a receiving counter (spqr's max jump). */
export const MAX_JUMP = 25_000;
/** Epochs kept before the current sending epoch: the peer may still send in the one before it. */
const EPOCHS_KEPT_BEFORE_SEND_EPOCH = 1;

/** Which way a chain runs: A2B is the initiator's sending direction. */
export enum ChainDirection {
  A2B = 0,
  B2A = 1,
}

export interface SkippedKey {
  ctr: number;
  key: Uint8Array;
}

export interface ChainHalf {
  /** Counter of the last key taken from this half (0 before the first). */
  ctr: number;
  /** The next chain key; empty once a sending half can no longer be used (an older epoch). */
  next: Uint8Array;
  /** Receiving halves only: keys of skipped counters, in the order they were derived. */
  skipped: SkippedKey[];
}

export interface ChainLink {
  send: ChainHalf;
  recv: ChainHalf;
}

export interface SpqrChainState {
  /** Our sending direction; we receive on the other one. */
  direction: ChainDirection;
  /** The newest chain epoch (0 until the braid completes its first epoch). */
  currentEpoch: number;
  /** The chain epoch we last sent in; sending never goes back to an older one. */
  sendEpoch: number;
  /** Links of epochs currentEpoch − links.length + 1 … currentEpoch, oldest first. */
  links: ChainLink[];
  /** Salt of the next epoch's Add Epoch step. */
  nextRoot: Uint8Array;
}

function link(g: Uint8Array, direction: ChainDirection): ChainLink {
  const a2b = g.slice(32, 64);
  const b2a = g.slice(64, 96);
  return {
    send: { ctr: 0, next: direction === ChainDirection.A2B ? a2b : b2a, skipped: [] },
    recv: { ctr: 0, next: direction === ChainDirection.A2B ? b2a : a2b, skipped: [] },
  };
}

export async function initSpqrChain(
  crypto: CryptoProvider,
  authKey: Uint8Array,
  direction: ChainDirection,
): Promise<SpqrChainState> {
  const g = await crypto.hkdfSha256(authKey, ZERO_SALT, CHAIN_START_INFO, 96);
  return { direction, currentEpoch: 0, sendEpoch: 0, links: [link(g, direction)], nextRoot: g.slice(0, 32) };
}

/**
 * A copy that the functions below may mutate without touching `state`. They change the state's
 * fields, its links array and link objects, but replace halves and skipped-key arrays instead of
 * changing them, so those (and all byte arrays) are shared.
 */
export function cloneSpqrChain(state: SpqrChainState): SpqrChainState {
  return { ...state, links: state.links.map((l) => ({ ...l })) };
}

/** Starts chain epoch `epoch` (which must be the next one) from the braid's epoch secret; mutates `state`. */
export async function addChainEpoch(
  crypto: CryptoProvider,
  state: SpqrChainState,
  epoch: number,
  secret: Uint8Array,
): Promise<void> {
  if (epoch !== state.currentEpoch + 1) {
    throw new InvalidStateError(`SPQR chain: epoch ${epoch} added after epoch ${state.currentEpoch}`);
  }
  const g = await crypto.hkdfSha256(secret, state.nextRoot, CHAIN_ADD_EPOCH_INFO, 96);
  state.currentEpoch = epoch;
  state.nextRoot = g.slice(0, 32);
  state.links.push(link(g, state.direction));
}

/** Where epoch `epoch`'s link is in `links`; spqr words a missing one "epoch not in valid range". */
function linkIndex(state: SpqrChainState, epoch: number): number {
  const back = state.currentEpoch - epoch;
  if (back < 0 || back >= state.links.length) {
    throw new InvalidMessageError(`SPQR chain: epoch not in valid range: ${epoch}`);
  }
  return state.links.length - 1 - back;
}

async function step(
  crypto: CryptoProvider,
  next: Uint8Array,
  ctr: number,
): Promise<{ next: Uint8Array; key: Uint8Array }> {
  const o = await crypto.hkdfSha256(next, ZERO_SALT, concatBytes(be32(ctr), CHAIN_NEXT_INFO), 64);
  return { next: o.slice(0, 32), key: o.slice(32, 64) };
}

/** The next sending key of chain epoch `epoch` and its counter; mutates `state`. */
export async function spqrSendKey(
  crypto: CryptoProvider,
  state: SpqrChainState,
  epoch: number,
): Promise<{ ctr: number; key: Uint8Array }> {
  if (epoch < state.sendEpoch) {
    throw new InvalidStateError(`SPQR chain: send key epoch decreased (${state.sendEpoch} -> ${epoch})`);
  }
  let index = linkIndex(state, epoch);
  if (epoch !== state.sendEpoch) {
    state.sendEpoch = epoch;
    // Older epochs are kept only as far as the peer may still send in them; we never send there again.
    const drop = Math.max(0, index - EPOCHS_KEPT_BEFORE_SEND_EPOCH);
    state.links.splice(0, drop);
    index -= drop;
    for (let i = 0; i < index; i++) {
      const l = state.links[i] as ChainLink;
      l.send = { ...l.send, next: new Uint8Array(0) };
    }
  }
  const l = state.links[index] as ChainLink;
  const ctr = l.send.ctr + 1;
  if (l.send.next.length !== 32 || ctr > 0xffffffff) throw new InvalidStateError('SPQR chain: sending half exhausted');
  const { next, key } = await step(crypto, l.send.next, ctr);
  l.send = { ...l.send, ctr, next };
  return { ctr, key };
}

/** The receiving key for counter `ctr` of chain epoch `epoch`, caching skipped ones; mutates `state`. */
export async function spqrRecvKey(
  crypto: CryptoProvider,
  state: SpqrChainState,
  epoch: number,
  ctr: number,
): Promise<Uint8Array> {
  const l = state.links[linkIndex(state, epoch)] as ChainLink;
  const half = l.recv;
  // A used key is not a DuplicatedMessageError: the Double Ratchet chain catches real replays first,
  // so reaching here means this session state is the wrong one, and the caller must go on to older
  // states (libsignal reports SPQR failures as an invalid message for the same reason).
  if (ctr <= half.ctr) {
    if (ctr + MAX_OUT_OF_ORDER_KEYS < half.ctr) throw new InvalidMessageError(`SPQR key ${ctr} trimmed`);
    const i = half.skipped.findIndex((s) => s.ctr === ctr);
    if (i < 0) throw new InvalidMessageError(`SPQR key ${ctr} already requested`);
    const skipped = half.skipped.slice();
    const [found] = skipped.splice(i, 1);
    l.recv = { ...half, skipped };
    return (found as SkippedKey).key;
  }
  if (ctr - half.ctr > MAX_JUMP) throw new TooFarInFutureError(ctr - half.ctr, MAX_JUMP);
  // A jump past the whole window makes every cached key obsolete.
  let skipped = ctr > half.ctr + MAX_OUT_OF_ORDER_KEYS ? [] : half.skipped;
  let { next, ctr: at } = half;
  while (at + 1 < ctr) {
    at++;
    const s = await step(crypto, next, at);
    next = s.next;
    // Keys that would be trimmed at once are not kept at all.
    if (at + MAX_OUT_OF_ORDER_KEYS >= ctr) {
      if (skipped === half.skipped) skipped = skipped.slice();
      skipped.push({ ctr: at, key: s.key });
    }
  }
  if (skipped.length >= SKIPPED_KEYS_TRIM_SIZE) {
    const horizon = at - MAX_OUT_OF_ORDER_KEYS;
    skipped = skipped.filter((s) => s.ctr >= horizon);
  }
  const s = await step(crypto, next, ctr);
  l.recv = { ctr, next: s.next, skipped };
  return s.key;
}
