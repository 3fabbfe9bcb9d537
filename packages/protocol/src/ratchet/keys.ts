import { utf8 } from '../bytes.ts';
import type { CryptoProvider } from '../crypto/provider.ts';
import type { PrivateKey, PublicKey } from '../curve.ts';

/*
 * The Double Ratchet's key schedule with libsignal's labels:
 *   chain step     CK' = HMAC(CK, 0x02)     message seed = HMAC(CK, 0x01)
 *   message keys   HKDF(salt = SPQR key or none, seed, "WhisperMessageKeys", 80) → cipher 32 ‖ MAC 32 ‖ IV 16
 *   root step      HKDF(salt = RK, DH(ours, theirs), "WhisperRatchet", 64) → RK' ‖ CK
 */
const MESSAGE_KEY_SEED = new Uint8Array([0x01]);
const CHAIN_KEY_SEED = new Uint8Array([0x02]);
const MESSAGE_KEYS_INFO = utf8('WhisperMessageKeys');
const RATCHET_INFO = utf8('WhisperRatchet');
const NO_SALT = new Uint8Array(0);

export interface MessageKeys {
  cipherKey: Uint8Array;
  macKey: Uint8Array;
  iv: Uint8Array;
  counter: number;
}

/** A symmetric chain position: its key and the index of the next message key it yields. */
export interface ChainKey {
  key: Uint8Array;
  index: number;
}

export function messageKeySeed(crypto: CryptoProvider, chainKey: ChainKey): Promise<Uint8Array> {
  return crypto.hmacSha256(chainKey.key, MESSAGE_KEY_SEED);
}

export async function nextChainKey(crypto: CryptoProvider, chainKey: ChainKey): Promise<ChainKey> {
  return { key: await crypto.hmacSha256(chainKey.key, CHAIN_KEY_SEED), index: chainKey.index + 1 };
}

/** Expands a message-key seed; `salt` is the SPQR message key (every session from 0.92 on has one). */
export async function deriveMessageKeys(
  crypto: CryptoProvider,
  seed: Uint8Array,
  counter: number,
  salt: Uint8Array | undefined,
): Promise<MessageKeys> {
  const okm = await crypto.hkdfSha256(seed, salt ?? NO_SALT, MESSAGE_KEYS_INFO, 80);
  return { cipherKey: okm.subarray(0, 32), macKey: okm.subarray(32, 64), iv: okm.subarray(64, 80), counter };
}

/** One DH ratchet step from root key `rootKey`: returns the next root key and a fresh chain key. */
export async function rootStep(
  crypto: CryptoProvider,
  rootKey: Uint8Array,
  ours: PrivateKey,
  theirs: PublicKey,
): Promise<{ rootKey: Uint8Array; chainKey: ChainKey }> {
  const shared = await ours.agree(crypto, theirs);
  const okm = await crypto.hkdfSha256(shared, rootKey, RATCHET_INFO, 64);
  return { rootKey: okm.slice(0, 32), chainKey: { key: okm.slice(32, 64), index: 0 } };
}
