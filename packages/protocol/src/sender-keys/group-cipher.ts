import type { ProtocolAddress } from '../address.ts';
import type { CryptoProvider } from '../crypto/provider.ts';
import { SeededSigningKey } from '../curve.ts';
import {
  DuplicatedMessageError,
  InvalidMessageError,
  InvalidSignatureError,
  InvalidStateError,
  NoSenderKeyStateError,
  TooFarInFutureError,
} from '../errors.ts';
import type { SenderKeyStore } from '../stores.ts';
import { SenderKeyDistributionMessage, SenderKeyMessage, canonicalDistributionId } from './messages.ts';
import {
  MAX_SKIPPED_MESSAGE_KEYS,
  SenderChainKey,
  SenderKeyRecord,
  SenderKeyState,
  senderMessageKeys,
} from './sender-key-record.ts';

/** The most iterations one message may move a receiving chain forward. */
export const MAX_FORWARD_JUMPS = 25_000;

/*
 * Group messaging with sender keys, with libsignal's semantics. Records are read from the store,
 * changed in memory and written back only after an operation has fully succeeded, so a rejected
 * message leaves the stored record exactly as it was.
 */

/**
 * The distribution message that lets group members decrypt our messages for `distributionId`,
 * creating our sending chain (a 31-bit chain id, a random chain key, a new signing key) on first use.
 */
export async function createSenderKeyDistributionMessage(
  crypto: CryptoProvider,
  sender: ProtocolAddress,
  distributionId: string,
  store: SenderKeyStore,
): Promise<SenderKeyDistributionMessage> {
  const id = canonicalDistributionId(distributionId);
  let record = await store.getSenderKey(sender, id);
  if (!record) {
    const random = crypto.randomBytes(4);
    // 31 bits, because libsignal-protocol-java keeps chain ids in a signed int.
    const chainId = new DataView(random.buffer, random.byteOffset, 4).getUint32(0) >>> 1;
    // Seeded, so that every provider signs this chain's messages natively (see SeededSigningKey).
    const signing = await SeededSigningKey.generate(crypto);
    record = new SenderKeyRecord();
    record.addState(
      new SenderKeyState(chainId, new SenderChainKey(0, crypto.randomBytes(32)), signing.publicKey, signing.privateKey),
    );
    await store.saveSenderKey(sender, id, record);
  }
  const state = record.currentState();
  if (!state) throw new InvalidStateError(`sender key record for ${sender} in distribution ${id} is empty`);
  return SenderKeyDistributionMessage.create(
    id,
    state.chainId,
    state.chainKey.iteration,
    state.chainKey.key,
    state.signingKey,
  );
}

/**
 * Stores the chain a group member announced. Re-processing a chain we already know (same chain id
 * and signing key) keeps our state for it, so old messages cannot be replayed.
 *
 * `crypto` is unused (nothing is derived here) but kept so that all four entry points share one
 * calling convention.
 */
export async function processSenderKeyDistributionMessage(
  _crypto: CryptoProvider,
  sender: ProtocolAddress,
  message: SenderKeyDistributionMessage,
  store: SenderKeyStore,
): Promise<void> {
  const record = (await store.getSenderKey(sender, message.distributionId)) ?? new SenderKeyRecord();
  record.addState(
    new SenderKeyState(message.chainId, new SenderChainKey(message.iteration, message.chainKey), message.signingKey),
  );
  await store.saveSenderKey(sender, message.distributionId, record);
}

/** Encrypts with our newest chain for `distributionId`; returns the serialized SenderKeyMessage. */
export async function groupEncrypt(
  crypto: CryptoProvider,
  sender: ProtocolAddress,
  distributionId: string,
  store: SenderKeyStore,
  plaintext: Uint8Array,
): Promise<Uint8Array> {
  const id = canonicalDistributionId(distributionId);
  const record = await store.getSenderKey(sender, id);
  const state = record?.currentState();
  if (!record || !state) throw new NoSenderKeyStateError(`no sender key for ${sender} in distribution ${id}`);
  if (!state.signingPrivateKey) {
    throw new InvalidStateError(`sender key for ${sender} in distribution ${id} was received, not created here`);
  }
  const next = await state.chainKey.next(crypto);
  const { iv, cipherKey } = await senderMessageKeys(crypto, await state.chainKey.messageKeySeed(crypto));
  const ciphertext = await crypto.aes256CbcEncrypt(cipherKey, iv, plaintext);
  const message = await SenderKeyMessage.create(
    crypto,
    id,
    state.chainId,
    state.chainKey.iteration,
    ciphertext,
    state.signingPrivateKey,
  );
  record.replaceState(state, state.advanced(next, state.skippedSeeds));
  await store.saveSenderKey(sender, id, record);
  return message.serialize();
}

/**
 * Decrypts a serialized SenderKeyMessage from `sender`. The signature is checked before any key is
 * derived; then the message key comes from the skipped-key cache (iterations behind the chain) or
 * from stepping the chain forward (at most 25,000 iterations, caching the skipped keys).
 */
export async function groupDecrypt(
  crypto: CryptoProvider,
  sender: ProtocolAddress,
  store: SenderKeyStore,
  ciphertext: Uint8Array,
): Promise<Uint8Array> {
  const message = SenderKeyMessage.deserialize(ciphertext);
  const id = message.distributionId;
  const record = await store.getSenderKey(sender, id);
  if (!record) throw new NoSenderKeyStateError(`no sender key for ${sender} in distribution ${id}`);
  const state = record.stateForChainId(message.chainId);
  if (!state) {
    throw new NoSenderKeyStateError(
      `no sender key for ${sender} in distribution ${id} with chain id ${message.chainId} (known: ${record.chainIds().join(', ')})`,
    );
  }
  if (!(await message.verifySignature(crypto, state.signingKey))) {
    throw new InvalidSignatureError('sender key message signature did not verify');
  }
  const { seed, next } = await messageKeySeed(crypto, state, message.iteration);
  const { iv, cipherKey } = await senderMessageKeys(crypto, seed);
  let plaintext: Uint8Array;
  try {
    plaintext = await crypto.aes256CbcDecrypt(cipherKey, iv, message.ciphertext);
  } catch (error) {
    // The signature held, so this is a sender that encrypted garbage (bad length or padding).
    throw new InvalidMessageError(`SenderKeyMessage: decryption failed (${(error as Error).message})`);
  }
  record.replaceState(state, next);
  await store.saveSenderKey(sender, id, record);
  return plaintext;
}

/** The message-key seed for `iteration`, and the state as it will be once that key is used up. */
async function messageKeySeed(
  crypto: CryptoProvider,
  state: SenderKeyState,
  iteration: number,
): Promise<{ seed: Uint8Array; next: SenderKeyState }> {
  const chainKey = state.chainKey;
  if (iteration < chainKey.iteration) {
    const seed = state.skippedSeeds.get(iteration);
    if (!seed) throw new DuplicatedMessageError(chainKey.iteration, iteration);
    const skipped = new Map(state.skippedSeeds);
    skipped.delete(iteration);
    return { seed, next: state.advanced(chainKey, skipped) };
  }
  const jump = iteration - chainKey.iteration;
  if (jump > MAX_FORWARD_JUMPS) throw new TooFarInFutureError(jump, MAX_FORWARD_JUMPS);
  const skipped = new Map(state.skippedSeeds);
  // Seeds the cache limit would evict at once are not worth deriving.
  const firstCached = iteration - MAX_SKIPPED_MESSAGE_KEYS;
  let key = chainKey;
  while (key.iteration < iteration) {
    if (key.iteration >= firstCached) skipped.set(key.iteration, await key.messageKeySeed(crypto));
    key = await key.next(crypto);
  }
  // Maps iterate in insertion order, and iterations are inserted in increasing order: oldest first.
  for (const oldest of skipped.keys()) {
    if (skipped.size <= MAX_SKIPPED_MESSAGE_KEYS) break;
    skipped.delete(oldest);
  }
  return { seed: await key.messageKeySeed(crypto), next: state.advanced(await key.next(crypto), skipped) };
}
