/**
 * Typed protocol errors. Every failure of a decrypt, a decode or a session setup throws one of
 * these, and none of them leaves changed state behind: stores are written only after success.
 */
export type ProtocolErrorCode =
  | 'INVALID_MESSAGE'
  | 'INVALID_MAC'
  | 'DUPLICATED_MESSAGE'
  | 'TOO_FAR_IN_FUTURE'
  | 'LEGACY_CIPHERTEXT_VERSION'
  | 'UNRECOGNIZED_VERSION'
  | 'INVALID_KEY'
  | 'INVALID_SIGNATURE'
  | 'INVALID_KEY_ID'
  | 'UNTRUSTED_IDENTITY'
  | 'SESSION_NOT_FOUND'
  | 'NO_SENDER_KEY_STATE'
  | 'FINGERPRINT_VERSION_MISMATCH'
  | 'INVALID_ARGUMENT'
  | 'INVALID_STATE';

export class ProtocolError extends Error {
  readonly code: ProtocolErrorCode;
  constructor(code: ProtocolErrorCode, message: string) {
    super(message);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Bytes that do not parse as the expected message or record, or that fail a structural check. */
export class InvalidMessageError extends ProtocolError {
  constructor(message: string) {
    super('INVALID_MESSAGE', message);
  }
}

/** The message authentication code (or an AES padding check behind it) did not verify. */
export class InvalidMacError extends ProtocolError {
  constructor(message = 'message authentication failed') {
    super('INVALID_MAC', message);
  }
}

/** The message key for this counter was already used (a replay, or a duplicate delivery). */
export class DuplicatedMessageError extends ProtocolError {
  constructor(
    readonly chainIndex: number,
    readonly counter: number,
  ) {
    super('DUPLICATED_MESSAGE', `duplicate message: chain index ${chainIndex}, counter ${counter}`);
  }
}

/** The message asks the receiver to skip more keys than the protocol allows. */
export class TooFarInFutureError extends ProtocolError {
  constructor(
    readonly jump: number,
    readonly limit: number,
  ) {
    super('TOO_FAR_IN_FUTURE', `message from too far into the future: jump of ${jump} over a limit of ${limit}`);
  }
}

export class LegacyCiphertextVersionError extends ProtocolError {
  constructor(readonly version: number) {
    super('LEGACY_CIPHERTEXT_VERSION', `legacy ciphertext version ${version}`);
  }
}

export class UnrecognizedVersionError extends ProtocolError {
  constructor(readonly version: number) {
    super('UNRECOGNIZED_VERSION', `unrecognized message version ${version}`);
  }
}

/** A key of the wrong type byte, the wrong length, or one that is not a valid curve point. */
export class InvalidKeyError extends ProtocolError {
  constructor(message: string) {
    super('INVALID_KEY', message);
  }
}

export class InvalidSignatureError extends ProtocolError {
  constructor(message: string) {
    super('INVALID_SIGNATURE', message);
  }
}

/** A message names a prekey, signed prekey or Kyber prekey that the store does not have. */
export class InvalidKeyIdError extends ProtocolError {
  constructor(
    readonly kind: 'pre-key' | 'signed pre-key' | 'kyber pre-key',
    readonly id: number,
  ) {
    super('INVALID_KEY_ID', `unknown ${kind} id ${id}`);
  }
}

/** The peer's identity key differs from the one the identity store trusts for this address. */
export class UntrustedIdentityError extends ProtocolError {
  constructor(readonly address: string) {
    super('UNTRUSTED_IDENTITY', `untrusted identity for address ${address}`);
  }
}

export class SessionNotFoundError extends ProtocolError {
  constructor(readonly address: string) {
    super('SESSION_NOT_FOUND', `no usable session for ${address}`);
  }
}

export class NoSenderKeyStateError extends ProtocolError {
  constructor(message: string) {
    super('NO_SENDER_KEY_STATE', message);
  }
}

export class FingerprintVersionMismatchError extends ProtocolError {
  constructor(
    readonly theirs: number,
    readonly ours: number,
  ) {
    super('FINGERPRINT_VERSION_MISMATCH', `fingerprint version mismatch: theirs ${theirs}, ours ${ours}`);
  }
}

export class InvalidArgumentError extends ProtocolError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
  }
}

/** Stored state that cannot be used: a corrupt record, or a session used in the wrong way. */
export class InvalidStateError extends ProtocolError {
  constructor(message: string) {
    super('INVALID_STATE', message);
  }
}
