import type { ProtocolAddress } from '../address.ts';
import type { CryptoProvider } from '../crypto/provider.ts';
import { KeyPair, type PublicKey } from '../curve.ts';
import {
  DuplicatedMessageError,
  InvalidMacError,
  InvalidMessageError,
  ProtocolError,
  SessionNotFoundError,
  TooFarInFutureError,
  UnrecognizedVersionError,
  UntrustedIdentityError,
} from '../errors.ts';
import { deriveMessageKeys, messageKeySeed, nextChainKey, rootStep } from '../ratchet/keys.ts';
import { spqrRecv, spqrSend } from '../spqr/ratchet.ts';
import { Direction, type ProtocolStores } from '../stores.ts';
import { CiphertextMessageType, PreKeySignalMessage, SignalMessage } from './messages.ts';
import { initializeBobSession } from './pqxdh.ts';
import { SessionRecord } from './session-record.ts';
import {
  MAX_FORWARD_JUMPS,
  MAX_MESSAGE_KEYS,
  MAX_RECEIVER_CHAINS,
  type ReceiverChain,
  type SessionState,
  cloneSessionState,
} from './state.ts';

/** An initiator's session that the peer never answered stops being used after 30 days. */
const MAX_UNACKNOWLEDGED_SESSION_AGE_MS = 30 * 24 * 60 * 60 * 1000;

export interface CiphertextMessage {
  type: CiphertextMessageType.Whisper | CiphertextMessageType.PreKey;
  serialized: Uint8Array;
}

type SessionStores = Pick<ProtocolStores, 'identity' | 'sessions'>;

/** Encrypts for the current session with `address` (PreKey-wrapped until the peer has answered). */
export async function signalEncrypt(
  crypto: CryptoProvider,
  plaintext: Uint8Array,
  address: ProtocolAddress,
  stores: SessionStores,
  options: { now?: number } = {},
): Promise<CiphertextMessage> {
  const record = await stores.sessions.getSession(address);
  const state = record?.currentState();
  if (!record || !state) throw new SessionNotFoundError(address.toString());
  const pending = state.pendingPreKey;
  if (pending && (options.now ?? Date.now()) - pending.timestamp > MAX_UNACKNOWLEDGED_SESSION_AGE_MS) {
    throw new SessionNotFoundError(address.toString());
  }
  if (!(await stores.identity.isTrustedIdentity(address, state.remoteIdentityKey, Direction.Sending))) {
    throw new UntrustedIdentityError(address.toString());
  }

  const chainKey = state.senderChain.chainKey;
  // The Triple Ratchet: SPQR's key for this message salts the Double Ratchet's message keys.
  const [seed, spqr] = await Promise.all([messageKeySeed(crypto, chainKey), spqrSend(crypto, state.spqr)]);
  const keys = await deriveMessageKeys(crypto, seed, chainKey.index, spqr.key);
  const message = await SignalMessage.create(
    crypto,
    {
      ratchetKey: state.senderChain.ratchetKeyPair.publicKey,
      counter: chainKey.index,
      previousCounter: state.previousCounter,
      ciphertext: await crypto.aes256CbcEncrypt(keys.cipherKey, keys.iv, plaintext),
      pqRatchet: spqr.message,
    },
    keys.macKey,
    state.localIdentityKey,
    state.remoteIdentityKey,
  );
  state.senderChain = { ...state.senderChain, chainKey: await nextChainKey(crypto, chainKey) };
  state.spqr = spqr.state;

  let result: CiphertextMessage = { type: CiphertextMessageType.Whisper, serialized: message.serialized };
  if (pending) {
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
    result = { type: CiphertextMessageType.PreKey, serialized: preKeyMessage.serialized };
  }
  await stores.identity.saveIdentity(address, state.remoteIdentityKey);
  await stores.sessions.saveSession(address, record);
  return result;
}

/** Decrypts a SignalMessage (type 2). Nothing is stored unless it decrypts. */
export async function signalDecrypt(
  crypto: CryptoProvider,
  message: SignalMessage | Uint8Array,
  address: ProtocolAddress,
  stores: SessionStores,
): Promise<Uint8Array> {
  const parsed = message instanceof SignalMessage ? message : SignalMessage.deserialize(message);
  const record = await stores.sessions.getSession(address);
  if (!record) throw new SessionNotFoundError(address.toString());
  const plaintext = await decryptWithRecord(crypto, record, parsed, address);
  const remoteIdentity = (record.currentState() as SessionState).remoteIdentityKey;
  if (!(await stores.identity.isTrustedIdentity(address, remoteIdentity, Direction.Receiving))) {
    throw new UntrustedIdentityError(address.toString());
  }
  await stores.identity.saveIdentity(address, remoteIdentity);
  await stores.sessions.saveSession(address, record);
  return plaintext;
}

/**
 * Decrypts a PreKeySignalMessage (type 3): sets up the responder's session from our prekeys
 * (or finds the one an earlier copy of this message set up), decrypts, and only then stores the
 * session and identity and retires the one-time prekeys it used.
 */
export async function signalDecryptPreKey(
  crypto: CryptoProvider,
  message: PreKeySignalMessage | Uint8Array,
  address: ProtocolAddress,
  stores: ProtocolStores,
): Promise<Uint8Array> {
  const parsed = message instanceof PreKeySignalMessage ? message : PreKeySignalMessage.deserialize(message);
  const m = parsed.fields;
  if (!(await stores.identity.isTrustedIdentity(address, m.identityKey, Direction.Receiving))) {
    throw new UntrustedIdentityError(address.toString());
  }
  const record = (await stores.sessions.getSession(address)) ?? SessionRecord.newFresh();
  const newSession = !record.promoteMatchingSession(parsed.messageVersion, m.baseKey.serialize());
  if (newSession) {
    const [ourIdentity, localRegistrationId, signedPreKey, kyberPreKey, oneTimePreKey] = await Promise.all([
      stores.identity.getIdentityKeyPair(),
      stores.identity.getLocalRegistrationId(),
      stores.signedPreKeys.getSignedPreKey(m.signedPreKeyId),
      stores.kyberPreKeys.getKyberPreKey(m.kyberPreKeyId),
      m.preKeyId !== undefined ? stores.preKeys.getPreKey(m.preKeyId) : undefined,
    ]);
    if (!(await m.baseKey.isCanonical(crypto))) throw new InvalidMessageError('incoming base key is invalid');
    const state = await initializeBobSession(crypto, {
      ourIdentity,
      ourSignedPreKey: signedPreKey.keyPair,
      ...(oneTimePreKey ? { ourOneTimePreKey: oneTimePreKey.keyPair } : {}),
      theirIdentity: m.identityKey,
      theirBaseKey: m.baseKey,
      kyberSharedSecret: await kyberPreKey.keyPair.secretKey.decapsulate(crypto, m.kyberCiphertext),
      localRegistrationId,
      remoteRegistrationId: m.registrationId,
    });
    record.promoteState(state);
  }
  const plaintext = await decryptWithRecord(crypto, record, m.message, address);
  await stores.identity.saveIdentity(address, m.identityKey);
  await stores.sessions.saveSession(address, record);
  if (newSession) {
    await stores.kyberPreKeys.markKyberPreKeyUsed(m.kyberPreKeyId, m.signedPreKeyId, m.baseKey);
    if (m.preKeyId !== undefined) await stores.preKeys.removePreKey(m.preKeyId);
  }
  return plaintext;
}

/**
 * Tries the current session, then archived ones (libsignal's order). The first state that
 * decrypts is kept (an archived one becomes current); the rest of the record is untouched. A
 * duplicate is reported at once; otherwise the current session's error is the one reported.
 */
async function decryptWithRecord(
  crypto: CryptoProvider,
  record: SessionRecord,
  message: SignalMessage,
  address: ProtocolAddress,
): Promise<Uint8Array> {
  let firstError: unknown;
  const current = record.currentState();
  if (current) {
    const attempt = cloneSessionState(current);
    try {
      const plaintext = await decryptWithState(crypto, attempt, message);
      record.setCurrentState(attempt);
      return plaintext;
    } catch (error) {
      if (error instanceof DuplicatedMessageError || !(error instanceof ProtocolError)) throw error;
      firstError = error;
    }
  }
  const previous = record.previousStates();
  for (let i = 0; i < previous.length; i++) {
    const attempt = cloneSessionState(previous[i] as SessionState);
    try {
      const plaintext = await decryptWithState(crypto, attempt, message);
      record.promotePreviousState(i, attempt);
      return plaintext;
    } catch (error) {
      if (error instanceof DuplicatedMessageError || !(error instanceof ProtocolError)) throw error;
      firstError ??= error;
    }
  }
  throw firstError ?? new SessionNotFoundError(address.toString());
}

/** Decrypts with one session state, mutating it; the caller discards it if this throws. */
async function decryptWithState(
  crypto: CryptoProvider,
  state: SessionState,
  message: SignalMessage,
): Promise<Uint8Array> {
  if (message.messageVersion !== state.version) throw new UnrecognizedVersionError(message.messageVersion);
  const { ratchetKey, counter } = message.fields;
  const chain = findReceiverChain(state, ratchetKey) ?? (await ratchetForward(crypto, state, ratchetKey));
  const seed = await takeMessageKeySeed(crypto, chain, counter);

  // SPQR's new state is kept only once the message has authenticated and decrypted.
  const spqr = await spqrRecv(crypto, state.spqr, message.fields.pqRatchet);

  const keys = await deriveMessageKeys(crypto, seed, counter, spqr.key);
  if (!(await message.verifyMac(crypto, keys.macKey, state.remoteIdentityKey, state.localIdentityKey))) {
    throw new InvalidMacError();
  }
  let plaintext: Uint8Array;
  try {
    plaintext = await crypto.aes256CbcDecrypt(keys.cipherKey, keys.iv, message.fields.ciphertext);
  } catch {
    throw new InvalidMessageError('decryption failed (bad padding)');
  }
  state.spqr = spqr.state;
  delete state.pendingPreKey;
  return plaintext;
}

function findReceiverChain(state: SessionState, ratchetKey: PublicKey): ReceiverChain | undefined {
  return state.receiverChains.find((chain) => chain.ratchetKey.equals(ratchetKey));
}

/** A new ratchet key from the peer: a receiving chain for it, and a new sending chain of ours. */
async function ratchetForward(crypto: CryptoProvider, state: SessionState, theirs: PublicKey): Promise<ReceiverChain> {
  const receiving = await rootStep(crypto, state.rootKey, state.senderChain.ratchetKeyPair.privateKey, theirs);
  const ourNewKey = await KeyPair.generate(crypto);
  const sending = await rootStep(crypto, receiving.rootKey, ourNewKey.privateKey, theirs);
  const chain: ReceiverChain = { ratchetKey: theirs, chainKey: receiving.chainKey, skipped: [] };
  state.receiverChains.push(chain);
  if (state.receiverChains.length > MAX_RECEIVER_CHAINS) state.receiverChains.shift();
  state.rootKey = sending.rootKey;
  state.previousCounter = Math.max(state.senderChain.chainKey.index - 1, 0);
  state.senderChain = { ratchetKeyPair: ourNewKey, chainKey: sending.chainKey };
  return chain;
}

/** The seed for `counter`, from the skipped-key cache or by advancing the chain (caching skipped seeds). */
async function takeMessageKeySeed(crypto: CryptoProvider, chain: ReceiverChain, counter: number): Promise<Uint8Array> {
  const index = chain.chainKey.index;
  if (index > counter) {
    const i = chain.skipped.findIndex((s) => s.counter === counter);
    if (i < 0) throw new DuplicatedMessageError(index, counter);
    const [found] = chain.skipped.splice(i, 1);
    return (found as { seed: Uint8Array }).seed;
  }
  if (counter - index > MAX_FORWARD_JUMPS) throw new TooFarInFutureError(counter - index, MAX_FORWARD_JUMPS);
  let chainKey = chain.chainKey;
  while (chainKey.index < counter) {
    // Seeds that would be dropped at once for the 2,000 limit are not derived at all.
    if (counter - chainKey.index <= MAX_MESSAGE_KEYS) {
      chain.skipped.push({ counter: chainKey.index, seed: await messageKeySeed(crypto, chainKey) });
    }
    chainKey = await nextChainKey(crypto, chainKey);
  }
  const excess = chain.skipped.length - MAX_MESSAGE_KEYS;
  if (excess > 0) chain.skipped.splice(0, excess);
  const seed = await messageKeySeed(crypto, chainKey);
  chain.chainKey = await nextChainKey(crypto, chainKey);
  return seed;
}
