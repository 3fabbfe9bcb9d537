import type { CryptoProvider } from '../crypto/provider.ts';
import { PrivateKey, PublicKey, SeededSigningKey, type SigningPrivateKey } from '../curve.ts';
import { InvalidMessageError, InvalidStateError, ProtocolError } from '../errors.ts';
import { BinaryWriter, type ProtoField, readProto, requireField } from '../proto.ts';

/** States kept per (sender, distribution); a sender that re-keys pushes the oldest chain out. */
export const MAX_SENDER_KEY_STATES = 5;
/** Message keys cached for skipped iterations per state; beyond this the oldest are dropped. */
export const MAX_SKIPPED_MESSAGE_KEYS = 2000;

const MAX_ITERATION = 0xffffffff;
const MESSAGE_KEY_LABEL = new Uint8Array([0x01]);
const CHAIN_KEY_LABEL = new Uint8Array([0x02]);
const MESSAGE_KEY_INFO = new TextEncoder().encode('WhisperGroup');

/** A sender chain's key at one iteration. */
export class SenderChainKey {
  constructor(
    readonly iteration: number,
    readonly key: Uint8Array,
  ) {}

  async next(crypto: CryptoProvider): Promise<SenderChainKey> {
    // libsignal refuses to wrap the u32 iteration, so a chain ends there.
    if (this.iteration >= MAX_ITERATION) throw new InvalidStateError('sender chain is too long');
    return new SenderChainKey(this.iteration + 1, await crypto.hmacSha256(this.key, CHAIN_KEY_LABEL));
  }

  /** The seed of this iteration's message key; it is what gets cached for skipped iterations. */
  messageKeySeed(crypto: CryptoProvider): Promise<Uint8Array> {
    return crypto.hmacSha256(this.key, MESSAGE_KEY_LABEL);
  }
}

/** AES-256-CBC key and IV for one message. Unlike 1:1 messages, the IV comes first in the HKDF output. */
export async function senderMessageKeys(
  crypto: CryptoProvider,
  seed: Uint8Array,
): Promise<{ iv: Uint8Array; cipherKey: Uint8Array }> {
  const derived = await crypto.hkdfSha256(seed, new Uint8Array(0), MESSAGE_KEY_INFO, 48);
  return { iv: derived.slice(0, 16), cipherKey: derived.slice(16, 48) };
}

/**
 * One sender chain: its id, the chain key for the next iteration, the signing key (with its
 * private half only on the sending device) and the message-key seeds of skipped iterations, by
 * iteration, oldest first. States are immutable so that a failed decryption cannot leave a
 * half-advanced chain behind in a record the caller still holds.
 */
export class SenderKeyState {
  constructor(
    readonly chainId: number,
    readonly chainKey: SenderChainKey,
    readonly signingKey: PublicKey,
    readonly signingPrivateKey?: SigningPrivateKey,
    readonly skippedSeeds: ReadonlyMap<number, Uint8Array> = new Map(),
  ) {}

  /** The same chain advanced to `chainKey`, with `skippedSeeds` replacing the cache. */
  advanced(chainKey: SenderChainKey, skippedSeeds: ReadonlyMap<number, Uint8Array>): SenderKeyState {
    return new SenderKeyState(this.chainId, chainKey, this.signingKey, this.signingPrivateKey, skippedSeeds);
  }
}

/**
 * The format version written. Version 1 records (no field 7) are still read; a record written in
 * any other version is refused rather than misread.
 */
const RECORD_VERSION = 2;
/** The version before seeded signing keys (field 7): its sender states carry field 5 only. */
const RECORD_VERSION_WITHOUT_SEEDS = 1;

/**
 * Everything known about one sender's key for one distribution: up to five chains, newest first.
 *
 * Serialized (our own format, not libsignal's) as
 *   SenderKeyRecord { 1: version = 2, 2: repeated State (newest first) }
 *   State { 1: chain_id, 2: chain_key (32), 3: iteration, 4: signing_key (33),
 *           5: signing_private_key (32, sender only, a key without a seed),
 *           6: repeated Skipped (oldest first),
 *           7: seeded_signing_key (64, sender only: Ed25519 seed ‖ its public key; version 2) }
 *   Skipped { 1: iteration, 2: seed (32) }
 * A sender state has field 5 or field 7, never both. Version 1 is the same without field 7; its
 * states keep signing through `PrivateKey`. Deserialization rejects unknown fields: the record is
 * rewritten after every message, so fields we did not understand would be silently dropped; a
 * format change must bump the version instead.
 */
export class SenderKeyRecord {
  private states: SenderKeyState[];

  constructor(states: readonly SenderKeyState[] = []) {
    this.states = states.slice(0, MAX_SENDER_KEY_STATES);
  }

  /** The chain used for sending: the newest one. */
  currentState(): SenderKeyState | undefined {
    return this.states[0];
  }

  stateForChainId(chainId: number): SenderKeyState | undefined {
    return this.states.find((state) => state.chainId === chainId);
  }

  chainIds(): number[] {
    return this.states.map((state) => state.chainId);
  }

  /**
   * Makes `state` the newest chain, with libsignal's rules: a chain already known under the same
   * id and signing key is kept as it is (so a re-sent distribution message cannot rewind it and
   * re-enable replays), a chain with the same id but another key is dropped, and the oldest chains
   * go once there are more than five.
   */
  addState(state: SenderKeyState): void {
    const existing = this.states.find((s) => s.chainId === state.chainId && s.signingKey.equals(state.signingKey));
    const others = this.states.filter((s) => s.chainId !== state.chainId);
    this.states = [existing ?? state, ...others].slice(0, MAX_SENDER_KEY_STATES);
  }

  /** Swaps a state for its advanced successor, keeping its position. */
  replaceState(previous: SenderKeyState, next: SenderKeyState): void {
    const index = this.states.indexOf(previous);
    if (index < 0) throw new InvalidStateError('sender key state is not part of this record');
    this.states[index] = next;
  }

  serialize(): Uint8Array {
    const writer = new BinaryWriter().tag(1, 0).uint32(RECORD_VERSION);
    for (const state of this.states) {
      writer.tag(2, 2).fork();
      writer
        .tag(1, 0)
        .uint32(state.chainId)
        .tag(2, 2)
        .bytes(state.chainKey.key)
        .tag(3, 0)
        .uint32(state.chainKey.iteration)
        .tag(4, 2)
        .bytes(state.signingKey.serialize());
      const privateKey = state.signingPrivateKey;
      if (privateKey instanceof SeededSigningKey) writer.tag(7, 2).bytes(privateKey.serialize());
      else if (privateKey) writer.tag(5, 2).bytes(privateKey.serialize());
      for (const [iteration, seed] of state.skippedSeeds) {
        writer.tag(6, 2).fork().tag(1, 0).uint32(iteration).tag(2, 2).bytes(seed).join();
      }
      writer.join();
    }
    return writer.finish();
  }

  /** Throws InvalidMessageError for anything but a well-formed record of this version. */
  static deserialize(serialized: Uint8Array): SenderKeyRecord {
    const what = 'SenderKeyRecord';
    let version: number | undefined;
    const states: SenderKeyState[] = [];
    readProto(serialized, what, (field) => {
      if (field.no === 1) version = field.uint32();
      else if (field.no === 2) states.push(readState(field.bytes()));
      else rejectUnknown(field, what);
    });
    if (version !== RECORD_VERSION && version !== RECORD_VERSION_WITHOUT_SEEDS) {
      throw new InvalidMessageError(`${what}: unsupported record version ${version}`);
    }
    if (
      version === RECORD_VERSION_WITHOUT_SEEDS &&
      states.some((s) => s.signingPrivateKey instanceof SeededSigningKey)
    ) {
      throw new InvalidMessageError(`${what}: seeded signing key in a version 1 record`);
    }
    if (states.length > MAX_SENDER_KEY_STATES) throw new InvalidMessageError(`${what}: too many states`);
    return new SenderKeyRecord(states);
  }
}

function rejectUnknown(field: ProtoField, what: string): never {
  throw new InvalidMessageError(`${what}: unknown field ${field.no}`);
}

function readState(bytes: Uint8Array): SenderKeyState {
  const what = 'SenderKeyRecord state';
  let chainId: number | undefined;
  let chainKey: Uint8Array | undefined;
  let iteration: number | undefined;
  let signingKey: Uint8Array | undefined;
  let signingPrivateKey: Uint8Array | undefined;
  let seededSigningKey: Uint8Array | undefined;
  const skipped = new Map<number, Uint8Array>();
  let lastSkipped = -1;
  readProto(bytes, what, (field) => {
    if (field.no === 1) chainId = field.uint32();
    else if (field.no === 2) chainKey = field.bytes();
    else if (field.no === 3) iteration = field.uint32();
    else if (field.no === 4) signingKey = field.bytes();
    else if (field.no === 5) signingPrivateKey = field.bytes();
    else if (field.no === 7) seededSigningKey = field.bytes();
    else if (field.no === 6) {
      const [skippedIteration, seed] = readSkipped(field.bytes());
      if (skippedIteration <= lastSkipped) throw new InvalidMessageError(`${what}: skipped keys out of order`);
      lastSkipped = skippedIteration;
      skipped.set(skippedIteration, seed);
    } else rejectUnknown(field, what);
  });
  chainKey = requireField(chainKey, what, 'chain_key');
  iteration = requireField(iteration, what, 'iteration');
  if (chainKey.length !== 32) throw new InvalidMessageError(`${what}: chain key must be 32 bytes`);
  if (skipped.size > MAX_SKIPPED_MESSAGE_KEYS) throw new InvalidMessageError(`${what}: too many skipped keys`);
  if (lastSkipped >= iteration) throw new InvalidMessageError(`${what}: skipped key at or past the chain`);
  if (signingPrivateKey && seededSigningKey) throw new InvalidMessageError(`${what}: two signing private keys`);
  try {
    return new SenderKeyState(
      requireField(chainId, what, 'chain_id'),
      new SenderChainKey(iteration, chainKey),
      PublicKey.deserialize(requireField(signingKey, what, 'signing_key')),
      seededSigningKey
        ? SeededSigningKey.deserialize(seededSigningKey)
        : signingPrivateKey && PrivateKey.deserialize(signingPrivateKey),
      skipped,
    );
  } catch (error) {
    // A bad key in a stored record is a corrupt record, reported like any other.
    if (error instanceof ProtocolError && !(error instanceof InvalidMessageError)) {
      throw new InvalidMessageError(`${what}: ${error.message}`);
    }
    throw error;
  }
}

function readSkipped(bytes: Uint8Array): [number, Uint8Array] {
  const what = 'SenderKeyRecord skipped key';
  let iteration: number | undefined;
  let seed: Uint8Array | undefined;
  readProto(bytes, what, (field) => {
    if (field.no === 1) iteration = field.uint32();
    else if (field.no === 2) seed = field.bytes();
    else rejectUnknown(field, what);
  });
  seed = requireField(seed, what, 'seed');
  if (seed.length !== 32) throw new InvalidMessageError(`${what}: seed must be 32 bytes`);
  return [requireField(iteration, what, 'iteration'), seed];
}
