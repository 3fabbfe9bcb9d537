import { describe, expect, it } from 'vitest';
import { nodeCrypto as crypto } from '../src/crypto/node.ts';
import {
  IdentityKeyPair,
  KEMPublicKey,
  KEMSecretKey,
  KyberPreKeyRecord,
  PreKeyRecord,
  PreKeySignalMessage,
  PrivateKey,
  ProtocolAddress,
  ProtocolError,
  PublicKey,
  SessionRecord,
  SignalMessage,
  SignedPreKeyRecord,
} from '../src/index.ts';
import { decodeSpqrMessage } from '../src/spqr/message.ts';
import { HushPeer } from './support/peers.ts';

/** Runs `decode` and fails the test on any error that is not a typed ProtocolError. */
function decodesOrThrowsTyped(decode: (bytes: Uint8Array) => unknown, bytes: Uint8Array, label: string): boolean {
  try {
    decode(bytes);
    return true;
  } catch (error) {
    expect(error, `${label}: ${(error as Error)?.stack}`).toBeInstanceOf(ProtocolError);
    return false;
  }
}

async function samples() {
  const alice = await HushPeer.create(crypto);
  const bob = await HushPeer.create(crypto);
  await alice.startSession(bob);
  const preKeyMessage = await alice.encrypt(bob, new TextEncoder().encode('sample'));
  await bob.decrypt(alice, preKeyMessage);
  const whisper = await bob.encrypt(alice, new TextEncoder().encode('sample reply'));
  await alice.decrypt(bob, whisper);
  const record = (await alice.stores.sessions.getSession(new ProtocolAddress(bob.name, 1))) as SessionRecord;
  const identity = await IdentityKeyPair.generate(crypto);
  const kyber = await KyberPreKeyRecord.generate(crypto, identity, 7);
  const decoders: [string, (b: Uint8Array) => unknown, Uint8Array][] = [
    ['SignalMessage', SignalMessage.deserialize, whisper.body],
    ['PreKeySignalMessage', PreKeySignalMessage.deserialize, preKeyMessage.body],
    ['SessionRecord', SessionRecord.deserialize, record.serialize()],
    ['PreKeyRecord', PreKeyRecord.deserialize, (await PreKeyRecord.generate(crypto, 5)).serialize()],
    [
      'SignedPreKeyRecord',
      SignedPreKeyRecord.deserialize,
      (await SignedPreKeyRecord.generate(crypto, identity, 6)).serialize(),
    ],
    ['KyberPreKeyRecord', KyberPreKeyRecord.deserialize, kyber.serialize()],
    ['IdentityKeyPair', IdentityKeyPair.deserialize, identity.serialize()],
    ['PublicKey', PublicKey.deserialize, identity.publicKey.serialize()],
    ['PrivateKey', PrivateKey.deserialize, identity.privateKey.serialize()],
    ['KEMPublicKey', KEMPublicKey.deserialize, kyber.keyPair.publicKey.serialize()],
    ['KEMSecretKey', KEMSecretKey.deserialize, kyber.keyPair.secretKey.serialize()],
    ['SPQR message', decodeSpqrMessage, SignalMessage.deserialize(whisper.body).fields.pqRatchet],
  ];
  return decoders;
}

describe('every decoder answers bad bytes with a typed ProtocolError', async () => {
  const decoders = await samples();

  it.each(decoders)(
    '%s: the sample decodes, and truncations, corruptions and garbage fail typed',
    (label, decode, sample) => {
      expect(decodesOrThrowsTyped(decode, sample, label)).toBe(true);
      let rejectedPrefixes = 0;
      for (let length = 0; length < sample.length; length += Math.max(1, Math.floor(sample.length / 400))) {
        if (!decodesOrThrowsTyped(decode, sample.subarray(0, length), `${label} prefix ${length}`)) rejectedPrefixes++;
      }
      // The empty input and most prefixes cannot be valid.
      expect(rejectedPrefixes).toBeGreaterThan(0);
      for (let i = 0; i < 300; i++) {
        const corrupted = sample.slice();
        const at = Math.floor(Math.random() * corrupted.length);
        corrupted[at] = Math.floor(Math.random() * 256);
        decodesOrThrowsTyped(decode, corrupted, `${label} corrupted at ${at}`);
        decodesOrThrowsTyped(
          decode,
          crypto.randomBytes(Math.floor(Math.random() * 2 * sample.length)),
          `${label} garbage`,
        );
      }
      for (const length of [0, 1, 2, 8, 33, 64]) {
        decodesOrThrowsTyped(decode, new Uint8Array(length).fill(0xff), `${label} 0xff×${length}`);
      }
    },
  );
});
