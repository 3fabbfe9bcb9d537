/**
 * A Hush sender that rewrites its own SPQR field before the Double Ratchet MAC: the way to put a
 * tampered braid payload (bad chunk, wrong epoch, malformed framing) into a message that is
 * otherwise genuine, since field 5 is covered by the MAC. It encrypts as `signalEncrypt` does
 * (PreKey-wrapped while the session is unacknowledged) and saves the sender's session as if the
 * untampered message had gone out.
 */
import {
  CiphertextMessageType,
  PreKeySignalMessage,
  ProtocolAddress,
  SessionNotFoundError,
  SignalMessage,
} from '../../src/index.ts';
import { deriveMessageKeys, messageKeySeed, nextChainKey } from '../../src/ratchet/keys.ts';
import { spqrSend } from '../../src/spqr/ratchet.ts';
import type { HushPeer, Peer, WireMessage } from './peers.ts';

export async function encryptWithSpqr(
  sender: HushPeer,
  to: Peer,
  plaintext: Uint8Array,
  rewrite: (spqr: Uint8Array) => Uint8Array,
): Promise<WireMessage> {
  const { crypto } = sender;
  const address = new ProtocolAddress(to.name, to.deviceId);
  const record = await sender.stores.sessions.getSession(address);
  const state = record?.currentState();
  if (!record || !state) throw new SessionNotFoundError(address.toString());
  const chainKey = state.senderChain.chainKey;
  const spqr = await spqrSend(crypto, state.spqr);
  const keys = await deriveMessageKeys(crypto, await messageKeySeed(crypto, chainKey), chainKey.index, spqr.key);
  const message = await SignalMessage.create(
    crypto,
    {
      ratchetKey: state.senderChain.ratchetKeyPair.publicKey,
      counter: chainKey.index,
      previousCounter: state.previousCounter,
      ciphertext: await crypto.aes256CbcEncrypt(keys.cipherKey, keys.iv, plaintext),
      pqRatchet: rewrite(spqr.message),
    },
    keys.macKey,
    state.localIdentityKey,
    state.remoteIdentityKey,
  );
  state.senderChain = { ...state.senderChain, chainKey: await nextChainKey(crypto, chainKey) };
  state.spqr = spqr.state;
  await sender.stores.sessions.saveSession(address, record);
  const pending = state.pendingPreKey;
  if (!pending) return { type: CiphertextMessageType.Whisper, body: message.serialized };
  const preKeyMessage = PreKeySignalMessage.create({
    registrationId: state.localRegistrationId,
    ...(pending.preKeyId !== undefined ? { preKeyId: pending.preKeyId } : {}),
    signedPreKeyId: pending.signedPreKeyId,
    kyberPreKeyId: pending.kyberPreKeyId,
    kyberCiphertext: pending.kyberCiphertext,
    baseKey: pending.baseKey,
    identityKey: state.localIdentityKey,
    message,
  });
  return { type: CiphertextMessageType.PreKey, body: preKeyMessage.serialized };
}
