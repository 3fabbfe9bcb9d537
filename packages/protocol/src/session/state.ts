import { KeyPair, PrivateKey, PublicKey } from '../curve.ts';
import { InvalidMessageError } from '../errors.ts';
import { type BinaryWriter, readProto, requireField } from '../proto.ts';
import type { ChainKey } from '../ratchet/keys.ts';
import { ChainDirection, type SkippedKey } from '../spqr/chain.ts';
import { type SpqrState, cloneSpqrState } from '../spqr/ratchet.ts';
import { type SpqrLiteState, readSpqrState, upgradeSpqrLite, writeSpqrState } from '../spqr/serialize.ts';

/*
 * One Double Ratchet session (libsignal's SessionState), as plain data. Byte arrays and key
 * objects inside are never mutated in place, so a clone copies only the containers; a decrypt
 * attempt works on a clone and is kept only if the message decrypts.
 */

/** Receiver chains kept per session (libsignal MAX_RECEIVER_CHAINS). */
export const MAX_RECEIVER_CHAINS = 5;
/** Skipped message keys kept per receiver chain (libsignal MAX_MESSAGE_KEYS). */
export const MAX_MESSAGE_KEYS = 2000;
/** Largest forward jump within one chain (libsignal MAX_FORWARD_JUMPS). */
export const MAX_FORWARD_JUMPS = 25_000;

export interface SenderChain {
  ratchetKeyPair: KeyPair;
  chainKey: ChainKey;
}

export interface SkippedMessageKey {
  counter: number;
  /** The message-key seed; the keys are expanded with the SPQR salt of the message that uses it. */
  seed: Uint8Array;
}

export interface ReceiverChain {
  ratchetKey: PublicKey;
  chainKey: ChainKey;
  /** Oldest first, at most MAX_MESSAGE_KEYS. */
  skipped: SkippedMessageKey[];
}

/** What an initiator repeats in every message until the responder answers. */
export interface PendingPreKey {
  preKeyId?: number;
  signedPreKeyId: number;
  kyberPreKeyId: number;
  kyberCiphertext: Uint8Array;
  baseKey: PublicKey;
  /** When the session was created (ms); unacknowledged sessions expire after 30 days. */
  timestamp: number;
}

export interface SessionState {
  version: number;
  localIdentityKey: PublicKey;
  remoteIdentityKey: PublicKey;
  localRegistrationId: number;
  remoteRegistrationId: number;
  rootKey: Uint8Array;
  previousCounter: number;
  senderChain: SenderChain;
  receiverChains: ReceiverChain[];
  pendingPreKey?: PendingPreKey;
  /** The initiator's base key: identifies the session when PreKey messages repeat. */
  aliceBaseKey: Uint8Array;
  /** The Triple Ratchet's post-quantum part (braid, authenticator, chain epochs); an immutable value. */
  spqr: SpqrState;
}

export function cloneSessionState(state: SessionState): SessionState {
  return {
    ...state,
    senderChain: { ...state.senderChain },
    receiverChains: state.receiverChains.map((chain) => ({ ...chain, skipped: chain.skipped.slice() })),
    spqr: cloneSpqrState(state.spqr),
  };
}

// ---- serialization (a protobuf of our own; version in the enclosing SessionRecord) ----

const WHAT = 'SessionState';

function writeChainKey(writer: BinaryWriter, chainKey: ChainKey): void {
  writer.tag(3, 2).bytes(chainKey.key).tag(4, 0).uint32(chainKey.index);
}

export function writeSessionState(writer: BinaryWriter, state: SessionState): void {
  writer
    .tag(1, 0)
    .uint32(state.version)
    .tag(2, 2)
    .bytes(state.localIdentityKey.serialize())
    .tag(3, 2)
    .bytes(state.remoteIdentityKey.serialize())
    .tag(4, 0)
    .uint32(state.localRegistrationId)
    .tag(5, 0)
    .uint32(state.remoteRegistrationId)
    .tag(6, 2)
    .bytes(state.rootKey)
    .tag(7, 0)
    .uint32(state.previousCounter);

  writer.tag(8, 2).fork();
  writer
    .tag(1, 2)
    .bytes(state.senderChain.ratchetKeyPair.publicKey.serialize())
    .tag(2, 2)
    .bytes(state.senderChain.ratchetKeyPair.privateKey.serialize());
  writeChainKey(writer, state.senderChain.chainKey);
  writer.join();

  for (const chain of state.receiverChains) {
    writer.tag(9, 2).fork();
    writer.tag(1, 2).bytes(chain.ratchetKey.serialize());
    writeChainKey(writer, chain.chainKey);
    for (const skipped of chain.skipped) {
      writer.tag(5, 2).fork().tag(1, 0).uint32(skipped.counter).tag(2, 2).bytes(skipped.seed).join();
    }
    writer.join();
  }

  const pending = state.pendingPreKey;
  if (pending) {
    writer.tag(10, 2).fork();
    if (pending.preKeyId !== undefined) writer.tag(1, 0).uint32(pending.preKeyId);
    writer
      .tag(2, 0)
      .uint32(pending.signedPreKeyId)
      .tag(3, 0)
      .uint32(pending.kyberPreKeyId)
      .tag(4, 2)
      .bytes(pending.kyberCiphertext)
      .tag(5, 2)
      .bytes(pending.baseKey.serialize())
      .tag(6, 0)
      .uint64(pending.timestamp)
      .join();
  }

  writer.tag(11, 2).bytes(state.aliceBaseKey);

  // Field 12 held the SPQR-lite chain (record format 1); it is still read, never written.
  writer.tag(13, 2).fork();
  writeSpqrState(writer, state.spqr);
  writer.join();
}

function readChainKey(key: Uint8Array | undefined, index: number | undefined, what: string): ChainKey {
  return { key: requireField(key, what, 'chain_key'), index: requireField(index, what, 'chain index') };
}

function bytes32(value: Uint8Array, name: string): Uint8Array {
  if (value.length !== 32) throw new InvalidMessageError(`${WHAT}: ${name} must be 32 bytes`);
  return value;
}

function readSenderChain(bytes: Uint8Array): SenderChain {
  let pub: PublicKey | undefined;
  let priv: PrivateKey | undefined;
  let key: Uint8Array | undefined;
  let index: number | undefined;
  readProto(bytes, WHAT, (f) => {
    if (f.no === 1) pub = PublicKey.deserialize(f.bytes());
    else if (f.no === 2) priv = PrivateKey.deserialize(f.bytes());
    else if (f.no === 3) key = bytes32(f.bytes(), 'chain key');
    else if (f.no === 4) index = f.uint32();
  });
  return {
    ratchetKeyPair: new KeyPair(
      requireField(pub, WHAT, 'sender ratchet key'),
      requireField(priv, WHAT, 'sender ratchet private key'),
    ),
    chainKey: readChainKey(key, index, WHAT),
  };
}

function readCounterAndKey(bytes: Uint8Array): { counter: number; key: Uint8Array } {
  let counter: number | undefined;
  let key: Uint8Array | undefined;
  readProto(bytes, WHAT, (f) => {
    if (f.no === 1) counter = f.uint32();
    else if (f.no === 2) key = bytes32(f.bytes(), 'skipped key');
  });
  return { counter: requireField(counter, WHAT, 'counter'), key: requireField(key, WHAT, 'key') };
}

function readReceiverChain(bytes: Uint8Array): ReceiverChain {
  let ratchetKey: PublicKey | undefined;
  let key: Uint8Array | undefined;
  let index: number | undefined;
  const skipped: SkippedMessageKey[] = [];
  readProto(bytes, WHAT, (f) => {
    if (f.no === 1) ratchetKey = PublicKey.deserialize(f.bytes());
    else if (f.no === 3) key = bytes32(f.bytes(), 'chain key');
    else if (f.no === 4) index = f.uint32();
    else if (f.no === 5) {
      const { counter, key: seed } = readCounterAndKey(f.bytes());
      skipped.push({ counter, seed });
    }
  });
  return {
    ratchetKey: requireField(ratchetKey, WHAT, 'receiver ratchet key'),
    chainKey: readChainKey(key, index, WHAT),
    skipped,
  };
}

function readPendingPreKey(bytes: Uint8Array): PendingPreKey {
  let preKeyId: number | undefined;
  let signedPreKeyId: number | undefined;
  let kyberPreKeyId: number | undefined;
  let kyberCiphertext: Uint8Array | undefined;
  let baseKey: PublicKey | undefined;
  let timestamp = 0;
  readProto(bytes, WHAT, (f) => {
    if (f.no === 1) preKeyId = f.uint32();
    else if (f.no === 2) signedPreKeyId = f.uint32();
    else if (f.no === 3) kyberPreKeyId = f.uint32();
    else if (f.no === 4) kyberCiphertext = f.bytes();
    else if (f.no === 5) baseKey = PublicKey.deserialize(f.bytes());
    else if (f.no === 6) timestamp = Number(f.uint64());
  });
  const pending: PendingPreKey = {
    signedPreKeyId: requireField(signedPreKeyId, WHAT, 'signed prekey id'),
    kyberPreKeyId: requireField(kyberPreKeyId, WHAT, 'kyber prekey id'),
    kyberCiphertext: requireField(kyberCiphertext, WHAT, 'kyber ciphertext'),
    baseKey: requireField(baseKey, WHAT, 'base key'),
    timestamp,
  };
  if (preKeyId !== undefined) pending.preKeyId = preKeyId;
  return pending;
}

/** Field 12 of SPQR-lite records: the epoch-0 chain and the PQXDH SPQR secret. */
function readSpqrLite(bytes: Uint8Array): SpqrLiteState {
  let direction: number | undefined;
  let nextRoot: Uint8Array | undefined;
  let authKey: Uint8Array | undefined;
  let sendNext: Uint8Array | undefined;
  let sendCtr = 0;
  let recvNext: Uint8Array | undefined;
  let recvCtr = 0;
  const skipped: SkippedKey[] = [];
  readProto(bytes, WHAT, (f) => {
    if (f.no === 1) direction = f.uint32();
    else if (f.no === 2) nextRoot = bytes32(f.bytes(), 'SPQR root');
    else if (f.no === 3) authKey = bytes32(f.bytes(), 'SPQR auth key');
    else if (f.no === 4) sendNext = bytes32(f.bytes(), 'SPQR send chain');
    else if (f.no === 5) sendCtr = f.uint32();
    else if (f.no === 6) recvNext = bytes32(f.bytes(), 'SPQR receive chain');
    else if (f.no === 7) recvCtr = f.uint32();
    else if (f.no === 8) {
      const { counter, key } = readCounterAndKey(f.bytes());
      skipped.push({ ctr: counter, key });
    }
  });
  if (direction !== ChainDirection.A2B && direction !== ChainDirection.B2A) {
    throw new InvalidMessageError(`${WHAT}: SPQR direction invalid`);
  }
  return {
    direction,
    nextRoot: requireField(nextRoot, WHAT, 'SPQR root'),
    authKey: requireField(authKey, WHAT, 'SPQR auth key'),
    send: { next: requireField(sendNext, WHAT, 'SPQR send chain'), ctr: sendCtr },
    recv: { next: requireField(recvNext, WHAT, 'SPQR receive chain'), ctr: recvCtr },
    skipped,
  };
}

export function readSessionState(bytes: Uint8Array): SessionState {
  let version: number | undefined;
  let localIdentityKey: PublicKey | undefined;
  let remoteIdentityKey: PublicKey | undefined;
  let localRegistrationId = 0;
  let remoteRegistrationId = 0;
  let rootKey: Uint8Array | undefined;
  let previousCounter = 0;
  let senderChain: SenderChain | undefined;
  const receiverChains: ReceiverChain[] = [];
  let pendingPreKey: PendingPreKey | undefined;
  let aliceBaseKey: Uint8Array | undefined;
  let spqr: SpqrState | undefined;
  let spqrLite: SpqrLiteState | undefined;
  readProto(bytes, WHAT, (f) => {
    switch (f.no) {
      case 1:
        version = f.uint32();
        break;
      case 2:
        localIdentityKey = PublicKey.deserialize(f.bytes());
        break;
      case 3:
        remoteIdentityKey = PublicKey.deserialize(f.bytes());
        break;
      case 4:
        localRegistrationId = f.uint32();
        break;
      case 5:
        remoteRegistrationId = f.uint32();
        break;
      case 6:
        rootKey = bytes32(f.bytes(), 'root key');
        break;
      case 7:
        previousCounter = f.uint32();
        break;
      case 8:
        senderChain = readSenderChain(f.bytes());
        break;
      case 9:
        receiverChains.push(readReceiverChain(f.bytes()));
        break;
      case 10:
        pendingPreKey = readPendingPreKey(f.bytes());
        break;
      case 11:
        aliceBaseKey = f.bytes();
        break;
      case 12:
        spqrLite = readSpqrLite(f.bytes());
        break;
      case 13:
        spqr = readSpqrState(f.bytes());
        break;
    }
  });
  const state: SessionState = {
    version: requireField(version, WHAT, 'version'),
    localIdentityKey: requireField(localIdentityKey, WHAT, 'local identity'),
    remoteIdentityKey: requireField(remoteIdentityKey, WHAT, 'remote identity'),
    localRegistrationId,
    remoteRegistrationId,
    rootKey: requireField(rootKey, WHAT, 'root key'),
    previousCounter,
    senderChain: requireField(senderChain, WHAT, 'sender chain'),
    receiverChains,
    aliceBaseKey: requireField(aliceBaseKey, WHAT, 'alice base key'),
    spqr: spqr ?? upgradeSpqrLite(requireField(spqrLite, WHAT, 'SPQR state')),
  };
  if (pendingPreKey) state.pendingPreKey = pendingPreKey;
  return state;
}
