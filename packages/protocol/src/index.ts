export { ProtocolAddress } from './address.ts';
export type { CryptoProvider } from './crypto/provider.ts';
export { LowOrderPointError } from './crypto/provider.ts';
export { KeyPair, PrivateKey, PublicKey } from './curve.ts';
export * from './errors.ts';
export {
  DEFAULT_FINGERPRINT_ITERATIONS,
  DisplayableFingerprint,
  Fingerprint,
  type FingerprintParams,
  ScannableFingerprint,
} from './fingerprint.ts';
export { IdentityKeyPair, generateRegistrationId } from './identity-key.ts';
export { KEMKeyPair, KEMPublicKey, KEMSecretKey } from './kem.ts';
export { KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord } from './prekeys.ts';
export * from './sender-keys/index.ts';
export { CiphertextMessageType, PreKeySignalMessage, SignalMessage } from './session/messages.ts';
export { type PreKeyBundle, processPreKeyBundle } from './session/session-builder.ts';
export { type CiphertextMessage, signalDecrypt, signalDecryptPreKey, signalEncrypt } from './session/session-cipher.ts';
export { SessionRecord } from './session/session-record.ts';
export * from './stores.ts';
