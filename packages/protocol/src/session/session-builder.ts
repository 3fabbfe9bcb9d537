import type { ProtocolAddress } from '../address.ts';
import type { CryptoProvider } from '../crypto/provider.ts';
import { KeyPair, type PublicKey } from '../curve.ts';
import { InvalidKeyError, InvalidSignatureError, UntrustedIdentityError } from '../errors.ts';
import type { KEMPublicKey } from '../kem.ts';
import { Direction, type IdentityKeyStore, type SessionStore } from '../stores.ts';
import { initializeAliceSession } from './pqxdh.ts';
import { SessionRecord } from './session-record.ts';

/** The public keys a device publishes through the server's prekey directory. */
export interface PreKeyBundle {
  registrationId: number;
  deviceId: number;
  preKeyId?: number;
  preKey?: PublicKey;
  signedPreKeyId: number;
  signedPreKey: PublicKey;
  signedPreKeySignature: Uint8Array;
  identityKey: PublicKey;
  kyberPreKeyId: number;
  kyberPreKey: KEMPublicKey;
  kyberPreKeySignature: Uint8Array;
}

/**
 * Starts a session as initiator from a prekey bundle (PQXDH). Both signatures are checked, a
 * bundle without a Kyber prekey is refused (X3DH is no longer accepted by anyone), and the new
 * session becomes current, archiving an older one. Stores are written only on success.
 */
export async function processPreKeyBundle(
  crypto: CryptoProvider,
  bundle: PreKeyBundle,
  address: ProtocolAddress,
  stores: { identity: IdentityKeyStore; sessions: SessionStore },
  options: { now?: number } = {},
): Promise<void> {
  if (!bundle.kyberPreKey || bundle.kyberPreKeyId === undefined || !bundle.kyberPreKeySignature) {
    throw new InvalidKeyError('bundle has no Kyber prekey: X3DH-only session setup is not supported');
  }
  if ((bundle.preKey === undefined) !== (bundle.preKeyId === undefined)) {
    throw new InvalidKeyError('bundle has a one-time prekey id without its key, or a key without its id');
  }
  if (!(await stores.identity.isTrustedIdentity(address, bundle.identityKey, Direction.Sending))) {
    throw new UntrustedIdentityError(address.toString());
  }
  const [signedOk, kyberOk] = await Promise.all([
    bundle.identityKey.verifySignature(crypto, bundle.signedPreKey.serialize(), bundle.signedPreKeySignature),
    bundle.identityKey.verifySignature(crypto, bundle.kyberPreKey.serialize(), bundle.kyberPreKeySignature),
  ]);
  if (!signedOk) throw new InvalidSignatureError('signature on the signed prekey is invalid');
  if (!kyberOk) throw new InvalidSignatureError('signature on the Kyber prekey is invalid');

  const [ourIdentity, localRegistrationId, baseKey, existing] = await Promise.all([
    stores.identity.getIdentityKeyPair(),
    stores.identity.getLocalRegistrationId(),
    KeyPair.generate(crypto),
    stores.sessions.getSession(address),
  ]);
  const { ciphertext, sharedSecret } = await bundle.kyberPreKey.encapsulate(crypto);
  const state = await initializeAliceSession(crypto, {
    ourIdentity,
    ourBaseKey: baseKey,
    theirIdentity: bundle.identityKey,
    theirSignedPreKey: bundle.signedPreKey,
    ...(bundle.preKey ? { theirOneTimePreKey: bundle.preKey } : {}),
    kyberSharedSecret: sharedSecret,
    localRegistrationId,
    remoteRegistrationId: bundle.registrationId,
    pendingPreKey: {
      ...(bundle.preKeyId !== undefined ? { preKeyId: bundle.preKeyId } : {}),
      signedPreKeyId: bundle.signedPreKeyId,
      kyberPreKeyId: bundle.kyberPreKeyId,
      kyberCiphertext: ciphertext,
      baseKey: baseKey.publicKey,
      timestamp: options.now ?? Date.now(),
    },
  });
  const record = existing ?? SessionRecord.newFresh();
  record.promoteState(state);
  await stores.sessions.saveSession(address, record);
  await stores.identity.saveIdentity(address, bundle.identityKey);
}
