import { concatBytes, constantTimeEqual } from '../bytes.ts';
import type { CryptoProvider } from '../crypto/provider.ts';
import { PublicKey } from '../curve.ts';
import { InvalidMessageError, LegacyCiphertextVersionError, UnrecognizedVersionError } from '../errors.ts';
import { BinaryWriter, readProto, requireField } from '../proto.ts';

/** The 1:1 message version this library speaks (PQXDH + SPQR); sent as version byte 0x44. */
export const CIPHERTEXT_MESSAGE_VERSION = 4;
const VERSION_BYTE = (CIPHERTEXT_MESSAGE_VERSION << 4) | CIPHERTEXT_MESSAGE_VERSION;
const MAC_LENGTH = 8;

/** libsignal's CiphertextMessageType values, as the Node API reports them. */
export enum CiphertextMessageType {
  Whisper = 2,
  PreKey = 3,
  SenderKey = 7,
  Plaintext = 8,
}

/** Reads the version byte: the high nibble must be 3 or 4 (the low nibble is ignored, as libsignal does). */
function messageVersion(bytes: Uint8Array, what: string): number {
  if (bytes.length === 0) throw new InvalidMessageError(`${what}: empty`);
  const version = (bytes[0] as number) >> 4;
  if (version < 3) throw new LegacyCiphertextVersionError(version);
  if (version > CIPHERTEXT_MESSAGE_VERSION) throw new UnrecognizedVersionError(version);
  return version;
}

export interface SignalMessageFields {
  ratchetKey: PublicKey;
  counter: number;
  previousCounter: number;
  ciphertext: Uint8Array;
  pqRatchet: Uint8Array;
}

/** SignalMessage (type 2): versionByte ‖ protobuf ‖ 8-byte truncated HMAC-SHA256. */
export class SignalMessage {
  private constructor(
    readonly messageVersion: number,
    readonly fields: SignalMessageFields,
    readonly serialized: Uint8Array,
  ) {}

  static async create(
    crypto: CryptoProvider,
    fields: SignalMessageFields,
    macKey: Uint8Array,
    senderIdentity: PublicKey,
    receiverIdentity: PublicKey,
  ): Promise<SignalMessage> {
    const writer = new BinaryWriter()
      .tag(1, 2)
      .bytes(fields.ratchetKey.serialize())
      .tag(2, 0)
      .uint32(fields.counter)
      .tag(3, 0)
      .uint32(fields.previousCounter)
      .tag(4, 2)
      .bytes(fields.ciphertext);
    if (fields.pqRatchet.length > 0) writer.tag(5, 2).bytes(fields.pqRatchet);
    const body = concatBytes(new Uint8Array([VERSION_BYTE]), writer.finish());
    const mac = await computeMac(crypto, macKey, senderIdentity, receiverIdentity, body);
    return new SignalMessage(CIPHERTEXT_MESSAGE_VERSION, fields, concatBytes(body, mac));
  }

  static deserialize(serialized: Uint8Array): SignalMessage {
    const what = 'SignalMessage';
    const version = messageVersion(serialized, what);
    if (serialized.length < 1 + MAC_LENGTH) throw new InvalidMessageError(`${what}: too short`);
    let ratchetKey: PublicKey | undefined;
    let counter: number | undefined;
    let previousCounter = 0;
    let ciphertext: Uint8Array | undefined;
    let pqRatchet: Uint8Array = new Uint8Array(0);
    readProto(serialized.subarray(1, serialized.length - MAC_LENGTH), what, (field) => {
      switch (field.no) {
        case 1:
          ratchetKey = parseKey(field.bytes(), what);
          break;
        case 2:
          counter = field.uint32();
          break;
        case 3:
          previousCounter = field.uint32();
          break;
        case 4:
          ciphertext = field.bytes();
          break;
        case 5:
          pqRatchet = field.bytes();
          break;
      }
    });
    const fields: SignalMessageFields = {
      ratchetKey: requireField(ratchetKey, what, 'ratchet_key'),
      counter: requireField(counter, what, 'counter'),
      previousCounter,
      ciphertext: requireField(ciphertext, what, 'ciphertext'),
      pqRatchet,
    };
    return new SignalMessage(version, fields, serialized.slice());
  }

  async verifyMac(
    crypto: CryptoProvider,
    macKey: Uint8Array,
    senderIdentity: PublicKey,
    receiverIdentity: PublicKey,
  ): Promise<boolean> {
    const body = this.serialized.subarray(0, this.serialized.length - MAC_LENGTH);
    const expected = await computeMac(crypto, macKey, senderIdentity, receiverIdentity, body);
    return constantTimeEqual(expected, this.serialized.subarray(this.serialized.length - MAC_LENGTH));
  }
}

async function computeMac(
  crypto: CryptoProvider,
  macKey: Uint8Array,
  senderIdentity: PublicKey,
  receiverIdentity: PublicKey,
  body: Uint8Array,
): Promise<Uint8Array> {
  const full = await crypto.hmacSha256(
    macKey,
    concatBytes(senderIdentity.serialize(), receiverIdentity.serialize(), body),
  );
  return full.subarray(0, MAC_LENGTH);
}

function parseKey(bytes: Uint8Array, what: string): PublicKey {
  try {
    return PublicKey.deserialize(bytes);
  } catch (error) {
    throw new InvalidMessageError(`${what}: ${(error as Error).message}`);
  }
}

export interface PreKeySignalMessageFields {
  registrationId: number;
  preKeyId?: number;
  signedPreKeyId: number;
  kyberPreKeyId: number;
  kyberCiphertext: Uint8Array;
  baseKey: PublicKey;
  identityKey: PublicKey;
  message: SignalMessage;
}

/** PreKeySignalMessage (type 3): versionByte ‖ protobuf; it carries the first SignalMessage. */
export class PreKeySignalMessage {
  private constructor(
    readonly messageVersion: number,
    readonly fields: PreKeySignalMessageFields,
    readonly serialized: Uint8Array,
  ) {}

  static create(fields: PreKeySignalMessageFields): PreKeySignalMessage {
    const writer = new BinaryWriter();
    if (fields.preKeyId !== undefined) writer.tag(1, 0).uint32(fields.preKeyId);
    writer
      .tag(2, 2)
      .bytes(fields.baseKey.serialize())
      .tag(3, 2)
      .bytes(fields.identityKey.serialize())
      .tag(4, 2)
      .bytes(fields.message.serialized)
      .tag(5, 0)
      .uint32(fields.registrationId)
      .tag(6, 0)
      .uint32(fields.signedPreKeyId)
      .tag(7, 0)
      .uint32(fields.kyberPreKeyId)
      .tag(8, 2)
      .bytes(fields.kyberCiphertext);
    const serialized = concatBytes(new Uint8Array([VERSION_BYTE]), writer.finish());
    return new PreKeySignalMessage(CIPHERTEXT_MESSAGE_VERSION, fields, serialized);
  }

  static deserialize(serialized: Uint8Array): PreKeySignalMessage {
    const what = 'PreKeySignalMessage';
    const version = messageVersion(serialized, what);
    let preKeyId: number | undefined;
    let baseKey: PublicKey | undefined;
    let identityKey: PublicKey | undefined;
    let message: Uint8Array | undefined;
    let registrationId = 0;
    let signedPreKeyId: number | undefined;
    let kyberPreKeyId: number | undefined;
    let kyberCiphertext: Uint8Array | undefined;
    readProto(serialized.subarray(1), what, (field) => {
      switch (field.no) {
        case 1:
          preKeyId = field.uint32();
          break;
        case 2:
          baseKey = parseKey(field.bytes(), what);
          break;
        case 3:
          identityKey = parseKey(field.bytes(), what);
          break;
        case 4:
          message = field.bytes();
          break;
        case 5:
          registrationId = field.uint32();
          break;
        case 6:
          signedPreKeyId = field.uint32();
          break;
        case 7:
          kyberPreKeyId = field.uint32();
          break;
        case 8:
          kyberCiphertext = field.bytes();
          break;
      }
    });
    if (version < CIPHERTEXT_MESSAGE_VERSION) {
      // libsignal dropped X3DH (version 3) session setup in v0.75; so do we.
      throw new InvalidMessageError('X3DH no longer supported');
    }
    const fields: PreKeySignalMessageFields = {
      registrationId,
      signedPreKeyId: requireField(signedPreKeyId, what, 'signed_pre_key_id'),
      kyberPreKeyId: requireField(kyberPreKeyId, what, 'kyber_pre_key_id'),
      kyberCiphertext: requireField(kyberCiphertext, what, 'kyber_ciphertext'),
      baseKey: requireField(baseKey, what, 'base_key'),
      identityKey: requireField(identityKey, what, 'identity_key'),
      message: SignalMessage.deserialize(requireField(message, what, 'message')),
    };
    if (preKeyId !== undefined) fields.preKeyId = preKeyId;
    return new PreKeySignalMessage(version, fields, serialized.slice());
  }
}
