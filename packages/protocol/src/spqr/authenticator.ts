import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { be64, concatBytes, constantTimeEqual, utf8 } from '../bytes.ts';
import type { CryptoProvider } from '../crypto/provider.ts';
import { InvalidMacError } from '../errors.ts';

/*
 * The braid's authenticator (spqr src/authenticator.rs): one per session, carried from state to
 * state by both roles. It MACs what the ML-KEM exchange cannot authenticate by itself: the header
 * (ρ ‖ H(ek), and through H(ek) the ek vector) and the ciphertext ct1 ‖ ct2. Both sides mix every
 * epoch secret into it, so the header MAC of epoch e+1 is keyed by a key that already depends on
 * the epoch-e secret: an attacker who learnt the state before epoch e cannot forge later headers
 * once an honest epoch has completed.
 *
 *   init       root = mac = 0³², then update(1, PQR)
 *   update     HKDF(0³², root ‖ k, "…:Authenticator Update" ‖ BE64(ep), 64) → root ‖ mac
 *   header MAC HMAC(mac, "…:ekheader" ‖ BE64(ep) ‖ header)            (all 32 bytes)
 *   ct MAC     HMAC(mac, "…:ciphertext" ‖ BE64(ep) ‖ ct1 ‖ ct2)        (all 32 bytes)
 *
 * Values are immutable: update returns a new authenticator, so a braid state that failed can be
 * dropped without undoing anything.
 */
const ZERO_32 = new Uint8Array(32);
const UPDATE_INFO = utf8('Signal_PQCKA_V1_MLKEM768:Authenticator Update');
const HEADER_LABEL = utf8('Signal_PQCKA_V1_MLKEM768:ekheader');
const CIPHERTEXT_LABEL = utf8('Signal_PQCKA_V1_MLKEM768:ciphertext');
export const MAC_BYTES = 32;

export interface Authenticator {
  readonly rootKey: Uint8Array;
  readonly macKey: Uint8Array;
}

function updateInputs(auth: Authenticator, epoch: number, k: Uint8Array) {
  return { ikm: concatBytes(auth.rootKey, k), info: concatBytes(UPDATE_INFO, be64(epoch)) };
}

function split(o: Uint8Array): Authenticator {
  return { rootKey: o.slice(0, 32), macKey: o.slice(32, 64) };
}

const UNKEYED: Authenticator = { rootKey: ZERO_32, macKey: ZERO_32 };

export async function updateAuthenticator(
  crypto: CryptoProvider,
  auth: Authenticator,
  epoch: number,
  k: Uint8Array,
): Promise<Authenticator> {
  const { ikm, info } = updateInputs(auth, epoch, k);
  return split(await crypto.hkdfSha256(ikm, ZERO_32, info, 64));
}

/** The authenticator both roles start from: keyed by the PQXDH SPQR secret, as epoch 1. */
export function initAuthenticator(crypto: CryptoProvider, pqr: Uint8Array): Promise<Authenticator> {
  return updateAuthenticator(crypto, UNKEYED, 1, pqr);
}

/**
 * The same as `initAuthenticator`, synchronously (@noble/hashes). Only for upgrading a stored
 * SPQR-lite session while a record is parsed, which is synchronous; the result is identical.
 */
export function initAuthenticatorSync(pqr: Uint8Array): Authenticator {
  const { ikm, info } = updateInputs(UNKEYED, 1, pqr);
  return split(hkdf(sha256, ikm, ZERO_32, info, 64));
}

export function headerMac(
  crypto: CryptoProvider,
  auth: Authenticator,
  epoch: number,
  header: Uint8Array,
): Promise<Uint8Array> {
  return crypto.hmacSha256(auth.macKey, concatBytes(HEADER_LABEL, be64(epoch), header));
}

export function ciphertextMac(
  crypto: CryptoProvider,
  auth: Authenticator,
  epoch: number,
  ct1: Uint8Array,
  ct2: Uint8Array,
): Promise<Uint8Array> {
  return crypto.hmacSha256(auth.macKey, concatBytes(CIPHERTEXT_LABEL, be64(epoch), ct1, ct2));
}

/** Throws InvalidMacError ("MAC verification failed", as spqr words it) unless `mac` matches. */
export async function verifyHeaderMac(
  crypto: CryptoProvider,
  auth: Authenticator,
  epoch: number,
  header: Uint8Array,
  mac: Uint8Array,
): Promise<void> {
  if (!constantTimeEqual(await headerMac(crypto, auth, epoch, header), mac)) {
    throw new InvalidMacError(`SPQR: MAC verification failed (header, epoch ${epoch})`);
  }
}

export async function verifyCiphertextMac(
  crypto: CryptoProvider,
  auth: Authenticator,
  epoch: number,
  ct1: Uint8Array,
  ct2: Uint8Array,
  mac: Uint8Array,
): Promise<void> {
  if (!constantTimeEqual(await ciphertextMac(crypto, auth, epoch, ct1, ct2), mac)) {
    throw new InvalidMacError(`SPQR: MAC verification failed (ciphertext, epoch ${epoch})`);
  }
}
