import { concatBytes, utf8 } from '../bytes.ts';
import type { CryptoProvider } from '../crypto/provider.ts';
import { KeyPair, type PublicKey } from '../curve.ts';
import type { IdentityKeyPair } from '../identity-key.ts';
import { rootStep } from '../ratchet/keys.ts';
import { ChainDirection } from '../spqr/chain.ts';
import { initSpqr } from '../spqr/ratchet.ts';
import { CIPHERTEXT_MESSAGE_VERSION } from './messages.ts';
import type { PendingPreKey, SessionState } from './state.ts';

/*
 * PQXDH (libsignal pqxdh.rs) and the ratchet's initial state (ratchet.rs).
 *   secret = 0xFF³² ‖ DH(IK_A, SPK_B) ‖ DH(EK_A, IK_B) ‖ DH(EK_A, SPK_B) [‖ DH(EK_A, OPK_B)] ‖ KEM secret
 *   HKDF(no salt, secret, "WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024", 96) → RK ‖ CK ‖ SPQR auth key
 */
const PQXDH_INFO = utf8('WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024');
const DISCONTINUITY = new Uint8Array(32).fill(0xff);
const NO_SALT = new Uint8Array(0);

async function deriveSecrets(crypto: CryptoProvider, parts: Uint8Array[]) {
  const okm = await crypto.hkdfSha256(concatBytes(DISCONTINUITY, ...parts), NO_SALT, PQXDH_INFO, 96);
  return { rootKey: okm.slice(0, 32), chainKey: okm.slice(32, 64), spqrAuthKey: okm.slice(64, 96) };
}

export interface AliceParameters {
  ourIdentity: IdentityKeyPair;
  ourBaseKey: KeyPair;
  theirIdentity: PublicKey;
  theirSignedPreKey: PublicKey;
  theirOneTimePreKey?: PublicKey;
  kyberSharedSecret: Uint8Array;
  localRegistrationId: number;
  remoteRegistrationId: number;
  pendingPreKey: PendingPreKey;
}

/** The initiator's session: receives on the signed prekey's chain, sends on a fresh ratchet key. */
export async function initializeAliceSession(crypto: CryptoProvider, p: AliceParameters): Promise<SessionState> {
  const base = p.ourBaseKey.privateKey;
  const [dh1, dh2, dh3, dh4] = await Promise.all([
    p.ourIdentity.privateKey.agree(crypto, p.theirSignedPreKey),
    base.agree(crypto, p.theirIdentity),
    base.agree(crypto, p.theirSignedPreKey),
    p.theirOneTimePreKey ? base.agree(crypto, p.theirOneTimePreKey) : undefined,
  ]);
  const parts = [dh1, dh2, dh3];
  if (dh4) parts.push(dh4);
  parts.push(p.kyberSharedSecret);
  const secrets = await deriveSecrets(crypto, parts);

  const sendingRatchetKey = await KeyPair.generate(crypto);
  const sending = await rootStep(crypto, secrets.rootKey, sendingRatchetKey.privateKey, p.theirSignedPreKey);
  return {
    version: CIPHERTEXT_MESSAGE_VERSION,
    localIdentityKey: p.ourIdentity.publicKey,
    remoteIdentityKey: p.theirIdentity,
    localRegistrationId: p.localRegistrationId,
    remoteRegistrationId: p.remoteRegistrationId,
    rootKey: sending.rootKey,
    previousCounter: 0,
    senderChain: { ratchetKeyPair: sendingRatchetKey, chainKey: sending.chainKey },
    receiverChains: [{ ratchetKey: p.theirSignedPreKey, chainKey: { key: secrets.chainKey, index: 0 }, skipped: [] }],
    pendingPreKey: p.pendingPreKey,
    aliceBaseKey: p.ourBaseKey.publicKey.serialize(),
    spqr: await initSpqr(crypto, secrets.spqrAuthKey, ChainDirection.A2B),
  };
}

export interface BobParameters {
  ourIdentity: IdentityKeyPair;
  ourSignedPreKey: KeyPair;
  ourOneTimePreKey?: KeyPair;
  theirIdentity: PublicKey;
  theirBaseKey: PublicKey;
  kyberSharedSecret: Uint8Array;
  localRegistrationId: number;
  remoteRegistrationId: number;
}

/** The responder's session: its first sending chain runs on the signed prekey. */
export async function initializeBobSession(crypto: CryptoProvider, p: BobParameters): Promise<SessionState> {
  const [dh1, dh2, dh3, dh4] = await Promise.all([
    p.ourSignedPreKey.privateKey.agree(crypto, p.theirIdentity),
    p.ourIdentity.privateKey.agree(crypto, p.theirBaseKey),
    p.ourSignedPreKey.privateKey.agree(crypto, p.theirBaseKey),
    p.ourOneTimePreKey ? p.ourOneTimePreKey.privateKey.agree(crypto, p.theirBaseKey) : undefined,
  ]);
  const parts = [dh1, dh2, dh3];
  if (dh4) parts.push(dh4);
  parts.push(p.kyberSharedSecret);
  const secrets = await deriveSecrets(crypto, parts);
  return {
    version: CIPHERTEXT_MESSAGE_VERSION,
    localIdentityKey: p.ourIdentity.publicKey,
    remoteIdentityKey: p.theirIdentity,
    localRegistrationId: p.localRegistrationId,
    remoteRegistrationId: p.remoteRegistrationId,
    rootKey: secrets.rootKey,
    previousCounter: 0,
    senderChain: { ratchetKeyPair: p.ourSignedPreKey, chainKey: { key: secrets.chainKey, index: 0 } },
    receiverChains: [],
    aliceBaseKey: p.theirBaseKey.serialize(),
    spqr: await initSpqr(crypto, secrets.spqrAuthKey, ChainDirection.B2A),
  };
}
