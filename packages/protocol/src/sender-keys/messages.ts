import { concatBytes, uuidFromBytes, uuidToBytes } from '../bytes.ts';
import type { CryptoProvider } from '../crypto/provider.ts';
import { PublicKey, type SigningPrivateKey } from '../curve.ts';
import {
  InvalidArgumentError,
  InvalidMessageError,
  LegacyCiphertextVersionError,
  ProtocolError,
  UnrecognizedVersionError,
} from '../errors.ts';
import { BinaryWriter, readProto, requireField } from '../proto.ts';

/** Sender-key messages exist in one version only; it fills both nibbles of the version byte. */
export const SENDER_KEY_MESSAGE_VERSION = 3;
const VERSION_BYTE = (SENDER_KEY_MESSAGE_VERSION << 4) | SENDER_KEY_MESSAGE_VERSION;
const SIGNATURE_LENGTH = 64;
const CHAIN_KEY_LENGTH = 32;
const SIGNING_KEY_LENGTH = 33;
/** The smallest SKDM libsignal will parse: the version byte, a chain key and an X25519 key. */
const MIN_DISTRIBUTION_MESSAGE_LENGTH = 1 + 32 + 32;

/**
 * Checks the version byte as libsignal does: only the high nibble (the message's version) counts,
 * and it must be exactly 3.
 */
function checkVersion(serialized: Uint8Array, minLength: number, what: string): void {
  if (serialized.length < minLength) throw new InvalidMessageError(`${what} too short: ${serialized.length} bytes`);
  const version = (serialized[0] as number) >> 4;
  if (version < SENDER_KEY_MESSAGE_VERSION) throw new LegacyCiphertextVersionError(version);
  if (version > SENDER_KEY_MESSAGE_VERSION) throw new UnrecognizedVersionError(version);
}

export function distributionIdBytes(distributionId: string): Uint8Array {
  const bytes = uuidToBytes(distributionId);
  if (!bytes) throw new InvalidArgumentError(`distribution id must be a UUID string, got '${distributionId}'`);
  return bytes;
}

/** The lowercase form libsignal-client uses, so that store keys match whichever side parsed the id. */
export function canonicalDistributionId(distributionId: string): string {
  return uuidFromBytes(distributionIdBytes(distributionId));
}

function checkUint32(value: number, name: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new InvalidArgumentError(`${name} must be a 32-bit unsigned integer, got ${value}`);
  }
}

function readDistributionId(bytes: Uint8Array | undefined, what: string): string {
  if (bytes?.length !== 16) throw new InvalidMessageError(`${what}: distribution_uuid must be 16 bytes`);
  return uuidFromBytes(bytes);
}

/**
 * Hands a sender's chain (chain id, current iteration and chain key) and its public signing key to
 * a group member, who can then decrypt that sender's messages from this iteration on.
 */
export class SenderKeyDistributionMessage {
  private constructor(
    readonly distributionId: string,
    readonly chainId: number,
    readonly iteration: number,
    readonly chainKey: Uint8Array,
    readonly signingKey: PublicKey,
    private readonly serialized: Uint8Array,
  ) {}

  static create(
    distributionId: string,
    chainId: number,
    iteration: number,
    chainKey: Uint8Array,
    signingKey: PublicKey,
  ): SenderKeyDistributionMessage {
    if (chainKey.length !== CHAIN_KEY_LENGTH) throw new InvalidArgumentError('sender chain key must be 32 bytes');
    checkUint32(chainId, 'chain id');
    checkUint32(iteration, 'iteration');
    const idBytes = distributionIdBytes(distributionId);
    const proto = new BinaryWriter()
      .tag(1, 2)
      .bytes(idBytes)
      .tag(2, 0)
      .uint32(chainId)
      .tag(3, 0)
      .uint32(iteration)
      .tag(4, 2)
      .bytes(chainKey)
      .tag(5, 2)
      .bytes(signingKey.serialize())
      .finish();
    const serialized = concatBytes(new Uint8Array([VERSION_BYTE]), proto);
    return new SenderKeyDistributionMessage(
      uuidFromBytes(idBytes),
      chainId,
      iteration,
      chainKey.slice(),
      signingKey,
      serialized,
    );
  }

  static deserialize(serialized: Uint8Array): SenderKeyDistributionMessage {
    const what = 'SenderKeyDistributionMessage';
    checkVersion(serialized, MIN_DISTRIBUTION_MESSAGE_LENGTH, what);
    let uuid: Uint8Array | undefined;
    let chainId: number | undefined;
    let iteration: number | undefined;
    let chainKey: Uint8Array | undefined;
    let signingKey: Uint8Array | undefined;
    readProto(serialized.subarray(1), what, (field) => {
      if (field.no === 1) uuid = field.bytes();
      else if (field.no === 2) chainId = field.uint32();
      else if (field.no === 3) iteration = field.uint32();
      else if (field.no === 4) chainKey = field.bytes();
      else if (field.no === 5) signingKey = field.bytes();
    });
    const distributionId = readDistributionId(uuid, what);
    chainKey = requireField(chainKey, what, 'chain_key');
    signingKey = requireField(signingKey, what, 'signing_key');
    if (chainKey.length !== CHAIN_KEY_LENGTH) throw new InvalidMessageError(`${what}: chain_key must be 32 bytes`);
    if (signingKey.length !== SIGNING_KEY_LENGTH)
      throw new InvalidMessageError(`${what}: signing_key must be 33 bytes`);
    return new SenderKeyDistributionMessage(
      distributionId,
      requireField(chainId, what, 'chain_id'),
      requireField(iteration, what, 'iteration'),
      chainKey,
      parsePublicKey(signingKey, what),
      serialized.slice(),
    );
  }

  serialize(): Uint8Array {
    return this.serialized.slice();
  }
}

/** A bad signing key is a bad message, whatever the key parser calls it. */
function parsePublicKey(bytes: Uint8Array, what: string): PublicKey {
  try {
    return PublicKey.deserialize(bytes);
  } catch (error) {
    if (error instanceof ProtocolError) throw new InvalidMessageError(`${what}: ${error.message}`);
    throw error;
  }
}

/** One group message: `versionByte ‖ proto ‖ XEdDSA signature` over everything before the signature. */
export class SenderKeyMessage {
  private constructor(
    readonly distributionId: string,
    readonly chainId: number,
    readonly iteration: number,
    readonly ciphertext: Uint8Array,
    private readonly serialized: Uint8Array,
  ) {}

  static async create(
    crypto: CryptoProvider,
    distributionId: string,
    chainId: number,
    iteration: number,
    ciphertext: Uint8Array,
    signingKey: SigningPrivateKey,
  ): Promise<SenderKeyMessage> {
    checkUint32(chainId, 'chain id');
    checkUint32(iteration, 'iteration');
    const idBytes = distributionIdBytes(distributionId);
    const proto = new BinaryWriter()
      .tag(1, 2)
      .bytes(idBytes)
      .tag(2, 0)
      .uint32(chainId)
      .tag(3, 0)
      .uint32(iteration)
      .tag(4, 2)
      .bytes(ciphertext)
      .finish();
    const signed = concatBytes(new Uint8Array([VERSION_BYTE]), proto);
    const signature = await signingKey.sign(crypto, signed);
    return new SenderKeyMessage(
      uuidFromBytes(idBytes),
      chainId,
      iteration,
      ciphertext.slice(),
      concatBytes(signed, signature),
    );
  }

  static deserialize(serialized: Uint8Array): SenderKeyMessage {
    const what = 'SenderKeyMessage';
    checkVersion(serialized, 1 + SIGNATURE_LENGTH, what);
    let uuid: Uint8Array | undefined;
    let chainId: number | undefined;
    let iteration: number | undefined;
    let ciphertext: Uint8Array | undefined;
    readProto(serialized.subarray(1, serialized.length - SIGNATURE_LENGTH), what, (field) => {
      if (field.no === 1) uuid = field.bytes();
      else if (field.no === 2) chainId = field.uint32();
      else if (field.no === 3) iteration = field.uint32();
      else if (field.no === 4) ciphertext = field.bytes();
    });
    return new SenderKeyMessage(
      readDistributionId(uuid, what),
      requireField(chainId, what, 'chain_id'),
      requireField(iteration, what, 'iteration'),
      requireField(ciphertext, what, 'ciphertext'),
      serialized.slice(),
    );
  }

  /** Checks the signature over the version byte and the protobuf, exactly as they were received. */
  verifySignature(crypto: CryptoProvider, signingKey: PublicKey): Promise<boolean> {
    const split = this.serialized.length - SIGNATURE_LENGTH;
    return signingKey.verifySignature(crypto, this.serialized.subarray(0, split), this.serialized.subarray(split));
  }

  serialize(): Uint8Array {
    return this.serialized.slice();
  }
}
