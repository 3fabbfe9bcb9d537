import { constantTimeEqual } from './bytes.ts';
import type { CryptoProvider } from './crypto/provider.ts';
import type { PublicKey } from './curve.ts';
import { FingerprintVersionMismatchError, InvalidArgumentError, InvalidMessageError } from './errors.ts';
import { BinaryWriter, readProto } from './proto.ts';

/*
 * Safety numbers, as libsignal computes them: each side's identifier and identity key are hashed
 * many times with SHA-512; the two results become a 60-digit number to read aloud and a protobuf
 * to put in a QR code.
 */

/** The iteration count Signal uses. */
export const DEFAULT_FINGERPRINT_ITERATIONS = 5200;
const MAX_ITERATIONS = 1_000_000;
/** Hash-format version, fixed at zero; unrelated to the scannable version. */
const HASH_VERSION = new Uint8Array([0x00, 0x00]);

export interface FingerprintParams {
  /** Scannable format version; Signal uses 1 with phone numbers, 2 with 16-byte ACI UUIDs. */
  version: number;
  /** SHA-512 rounds per side: more than 1 and at most 1,000,000. Defaults to 5200. */
  iterations?: number;
  localIdentifier: Uint8Array;
  localKey: PublicKey;
  remoteIdentifier: Uint8Array;
  remoteKey: PublicKey;
}

/** Both sides' fingerprints, as digits and as a scannable code. */
export class Fingerprint {
  private constructor(
    readonly displayable: DisplayableFingerprint,
    readonly scannable: ScannableFingerprint,
  ) {}

  static async create(crypto: CryptoProvider, params: FingerprintParams): Promise<Fingerprint> {
    const { version, iterations = DEFAULT_FINGERPRINT_ITERATIONS } = params;
    if (!Number.isInteger(version) || version < 0 || version > 0xffffffff) {
      throw new InvalidArgumentError(`fingerprint version must be a 32-bit unsigned integer, got ${version}`);
    }
    if (!Number.isInteger(iterations) || iterations <= 1 || iterations > MAX_ITERATIONS) {
      throw new InvalidArgumentError(`fingerprint iterations must be from 2 to ${MAX_ITERATIONS}, got ${iterations}`);
    }
    const [local, remote] = await Promise.all([
      hashIdentity(crypto, iterations, params.localIdentifier, params.localKey),
      hashIdentity(crypto, iterations, params.remoteIdentifier, params.remoteKey),
    ]);
    return new Fingerprint(
      new DisplayableFingerprint(local, remote),
      new ScannableFingerprint(version, local.slice(0, 32), remote.slice(0, 32)),
    );
  }

  /** The 60-digit safety number; both parties get the same string. */
  displayableString(): string {
    return this.displayable.toString();
  }
}

/** SHA-512(0x0000 ‖ key ‖ identifier ‖ key), then `iterations − 1` rounds of SHA-512(hash ‖ key). */
async function hashIdentity(
  crypto: CryptoProvider,
  iterations: number,
  identifier: Uint8Array,
  key: PublicKey,
): Promise<Uint8Array> {
  const keyBytes = key.serialize();
  const first = new Uint8Array(HASH_VERSION.length + 2 * keyBytes.length + identifier.length);
  first.set(HASH_VERSION, 0);
  first.set(keyBytes, HASH_VERSION.length);
  first.set(identifier, HASH_VERSION.length + keyBytes.length);
  first.set(keyBytes, HASH_VERSION.length + keyBytes.length + identifier.length);
  let hash = await crypto.sha512(first);
  // One buffer reused for every round: providers never keep their input past the returned promise.
  const round = new Uint8Array(hash.length + keyBytes.length);
  round.set(keyBytes, hash.length);
  for (let i = 1; i < iterations; i++) {
    round.set(hash, 0);
    hash = await crypto.sha512(round);
  }
  return hash;
}

/** Six 5-digit groups, each a 40-bit big-endian chunk of the hash mod 100,000. */
function encodeDigits(hash: Uint8Array): string {
  let digits = '';
  for (let chunk = 0; chunk < 6; chunk++) {
    let value = 0;
    // 40-bit values stay exact in a double, so plain arithmetic suffices.
    for (let i = 0; i < 5; i++) value = value * 256 + (hash[chunk * 5 + i] as number);
    digits += (value % 100_000).toString().padStart(5, '0');
  }
  return digits;
}

/** The 60 digits: each side's 30, smaller first, so the order does not depend on who is local. */
export class DisplayableFingerprint {
  private readonly local: string;
  private readonly remote: string;

  constructor(localHash: Uint8Array, remoteHash: Uint8Array) {
    if (localHash.length < 30 || remoteHash.length < 30) {
      throw new InvalidArgumentError('displayable fingerprint needs at least 30 bytes of hash per side');
    }
    this.local = encodeDigits(localHash);
    this.remote = encodeDigits(remoteHash);
  }

  toString(): string {
    return this.local < this.remote ? this.local + this.remote : this.remote + this.local;
  }
}

/**
 * The QR-code form, libsignal's CombinedFingerprints protobuf:
 * { 1: version, 2: { 1: local hash[0..32] }, 3: { 1: remote hash[0..32] } }.
 */
export class ScannableFingerprint {
  constructor(
    readonly version: number,
    readonly localFingerprint: Uint8Array,
    readonly remoteFingerprint: Uint8Array,
  ) {}

  serialize(): Uint8Array {
    return new BinaryWriter()
      .tag(1, 0)
      .uint32(this.version)
      .tag(2, 2)
      .fork()
      .tag(1, 2)
      .bytes(this.localFingerprint)
      .join()
      .tag(3, 2)
      .fork()
      .tag(1, 2)
      .bytes(this.remoteFingerprint)
      .join()
      .finish();
  }

  /** Throws InvalidMessageError unless both fingerprints are present; a missing version reads as 0. */
  static deserialize(serialized: Uint8Array): ScannableFingerprint {
    const { version, local, remote } = readCombined(serialized);
    return new ScannableFingerprint(version, requireContent(local), requireContent(remote));
  }

  /**
   * Whether the other party's scanned code matches ours: their local fingerprint must be our
   * remote one and vice versa. A different version throws FingerprintVersionMismatchError (checked
   * first, as libsignal does), since such codes cannot be compared; malformed input throws
   * InvalidMessageError.
   */
  compare(otherSerialized: Uint8Array): boolean {
    const theirs = readCombined(otherSerialized);
    if (theirs.version !== this.version) throw new FingerprintVersionMismatchError(theirs.version, this.version);
    // Evaluate both so that timing does not tell which half differed.
    const localMatches = constantTimeEqual(requireContent(theirs.local), this.remoteFingerprint);
    const remoteMatches = constantTimeEqual(requireContent(theirs.remote), this.localFingerprint);
    return localMatches && remoteMatches;
  }
}

const COMBINED = 'CombinedFingerprints';

function readCombined(serialized: Uint8Array): { version: number; local?: Uint8Array; remote?: Uint8Array } {
  let version = 0;
  let local: Uint8Array | undefined;
  let remote: Uint8Array | undefined;
  readProto(serialized, COMBINED, (field) => {
    if (field.no === 1) version = field.uint32();
    else if (field.no === 2) local = readLogicalFingerprint(field.bytes());
    else if (field.no === 3) remote = readLogicalFingerprint(field.bytes());
  });
  return { version, local, remote };
}

function requireContent(content: Uint8Array | undefined): Uint8Array {
  if (!content) throw new InvalidMessageError(`${COMBINED}: missing local or remote fingerprint`);
  return content;
}

function readLogicalFingerprint(bytes: Uint8Array): Uint8Array | undefined {
  let content: Uint8Array | undefined;
  readProto(bytes, 'LogicalFingerprint', (field) => {
    if (field.no === 1) content = field.bytes();
  });
  return content;
}
