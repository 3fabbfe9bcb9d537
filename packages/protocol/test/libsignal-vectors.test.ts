/**
 * Known answers from the libsignal repository, and cross-checks against the real libsignal
 * (`@signalapp/libsignal-client` 0.103, a devDependency used only here) for the primitives where
 * our code must agree with it byte for byte: XEdDSA, X25519, HKDF and Kyber1024.
 *
 * Vector sources (github.com/signalapp/libsignal, tag v0.101.0; libsignal is AGPL-3.0, so only the
 * test-vector bytes are copied here, never code):
 *   - rust/core/src/curve/curve25519.rs `test_agreement` and `test_signature`
 *   - node/ts/test/PublicAPITest.ts "HKDF test vector"
 *   - rust/protocol/src/kem/test-data/{pk,sk}.dat, stored hex-encoded in
 *     test/vectors/libsignal-kyber1024-keypair.json
 *
 * libsignal-client 0.103 exposes no KEM encapsulate/decapsulate to JavaScript (KEMPublicKey and
 * KEMSecretKey only serialize). To check real Kyber1024 interoperability anyway, the last suite
 * goes through the one place where libsignal does encapsulate and decapsulate: the first PQXDH
 * message. It derives that message's keys by hand from the wire facts (PQXDH, the first
 * "WhisperRatchet" step, the SPQR symmetric chain's first key, "WhisperMessageKeys"), in both
 * directions; the message only authenticates and decrypts if both sides got the same Kyber shared
 * secret.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import * as Lib from '@signalapp/libsignal-client';
import { describe, expect, it } from 'vitest';
import { be32, concatBytes, fromHex, toHex, utf8 } from '../src/bytes.ts';
import type { CryptoProvider } from '../src/crypto/provider.ts';
import { KeyPair, PrivateKey, PublicKey } from '../src/curve.ts';
import { KEMKeyPair, KEMPublicKey, KEMSecretKey } from '../src/kem.ts';
import { providers } from './providers.ts';

/** libsignal-client's API takes `Uint8Array<ArrayBuffer>`; copy ours into a fresh buffer. */
function lib(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(bytes);
}

// ---------------------------------------------------------------------------------------------
// rust/core/src/curve/curve25519.rs, test_agreement
const AGREEMENT = {
  alicePublic: '1bb75966f2e93a3691dfff942bb2a466a1c08b8d78ca3f4d6df8b8bfa2e4ee28',
  alicePrivate: 'c806439dc9d2c476ffed8f2580c0888d58ab406bf7ae3698879021b96bb4bf59',
  bobPublic: '653614993d2b15ee9e5fd3d86ce719ef4ec1daae1886a87b3f5fa9565a27a22f',
  bobPrivate: 'b03b34c33a1c44f225b662d2bf4859b8135411fa7b0386d45fb75dc5b91b4466',
  shared: '325f239328941ced6e673b86ba41017448e99b649a9c3806c1dd7ca4c477e629',
};

// rust/core/src/curve/curve25519.rs, test_signature: Alice's identity key signs her serialized
// (0x05-prefixed) ephemeral public key. The last signature byte is 0x88, so the sign bit is set.
const SIGNATURE = {
  identityPrivate: 'c097248412e58bf05df487968205132794178e367637f5818f81e0e6ce73e865',
  identityPublic: 'ab7e717d4a163b7d9a1d8071dfe9dcf8cdcd1cea3339b6356be84d887e322c64',
  message: '05edce9d9c415ca78cb7252e72c2c4a554d3eb29485a0e1d503118d1a82d99fb4a',
  signature:
    '5de88ca9a89b4a115da79109c67c9c7464a3e4180274f1cb8c63c2984e286dfb' +
    'ede82deb9dcd9fae0bfbb821569b3d9001bd8130cd11d486cef047bd60b86e88',
};

// node/ts/test/PublicAPITest.ts, "HKDF test vector" (libsignal's hkdf(42, secret, label, salt)).
// The first vector is given twice there, with an empty salt and with a null one; both mean RFC
// 5869's default salt, which our providers take as an empty array.
const HKDF_VECTORS = [
  {
    ikm: '0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b',
    salt: '',
    info: '',
    okm: '8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8',
  },
  {
    ikm: '0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b',
    salt: '000102030405060708090a0b0c',
    info: 'f0f1f2f3f4f5f6f7f8f9',
    okm: '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865',
  },
];

// rust/protocol/src/kem/test-data/{pk,sk}.dat (raw, without the 0x08 type byte).
const testDir = path.dirname(fileURLToPath(import.meta.url));
const KYBER_TEST_DATA = JSON.parse(
  readFileSync(path.join(testDir, 'vectors/libsignal-kyber1024-keypair.json'), 'utf8'),
) as { publicKey: string; secretKey: string };

const KYBER_TYPE = new Uint8Array([0x08]);
const RANDOM_KEYS = 100;

// ---------------------------------------------------------------------------------------------

describe.each(providers)('libsignal vectors, $name provider', (crypto: CryptoProvider) => {
  it('X25519 test_agreement (curve25519.rs)', async () => {
    const alice = PrivateKey.deserialize(fromHex(AGREEMENT.alicePrivate));
    const bob = PrivateKey.deserialize(fromHex(AGREEMENT.bobPrivate));
    expect(toHex((await alice.getPublicKey(crypto)).publicKeyBytes)).toBe(AGREEMENT.alicePublic);
    expect(toHex((await bob.getPublicKey(crypto)).publicKeyBytes)).toBe(AGREEMENT.bobPublic);

    const alicePublic = PublicKey.deserialize(fromHex(`05${AGREEMENT.alicePublic}`));
    const bobPublic = PublicKey.deserialize(fromHex(`05${AGREEMENT.bobPublic}`));
    expect(toHex(await alice.agree(crypto, bobPublic))).toBe(AGREEMENT.shared);
    expect(toHex(await bob.agree(crypto, alicePublic))).toBe(AGREEMENT.shared);
  });

  it('XEdDSA test_signature (curve25519.rs), and every one-bit flip of it fails', async () => {
    const key = PrivateKey.deserialize(fromHex(SIGNATURE.identityPrivate));
    expect(toHex((await key.getPublicKey(crypto)).publicKeyBytes)).toBe(SIGNATURE.identityPublic);

    const publicKey = PublicKey.deserialize(fromHex(`05${SIGNATURE.identityPublic}`));
    const message = fromHex(SIGNATURE.message);
    const signature = fromHex(SIGNATURE.signature);
    expect((signature[63] as number) & 0x80).toBe(0x80);
    expect(await publicKey.verifySignature(crypto, message, signature)).toBe(true);

    // As in libsignal's test: flipping the low bit of any one byte breaks the signature.
    for (let i = 0; i < signature.length; i++) {
      const flipped = signature.slice();
      flipped[i] = (flipped[i] as number) ^ 0x01;
      expect(await publicKey.verifySignature(crypto, message, flipped), `byte ${i} flipped`).toBe(false);
    }
    // And the sign bit that libsignal carries in bit 7 of the last byte matters.
    const signBitFlipped = signature.slice();
    signBitFlipped[63] = (signBitFlipped[63] as number) ^ 0x80;
    expect(await publicKey.verifySignature(crypto, message, signBitFlipped)).toBe(false);
    // A changed message fails too.
    const otherMessage = message.slice();
    otherMessage[5] = (otherMessage[5] as number) ^ 0x01;
    expect(await publicKey.verifySignature(crypto, otherMessage, signature)).toBe(false);
  });

  it('HKDF test vectors (PublicAPITest.ts)', async () => {
    for (const v of HKDF_VECTORS) {
      const okm = await crypto.hkdfSha256(fromHex(v.ikm), fromHex(v.salt), fromHex(v.info), 42);
      expect(toHex(okm)).toBe(v.okm);
    }
  });

  it(`XEdDSA against libsignal-client over ${RANDOM_KEYS} random keys, both ways`, async () => {
    let libSignBitsSet = 0;
    let ourSignBitsSet = 0;
    for (let i = 0; i < RANDOM_KEYS; i++) {
      const message = crypto.randomBytes(1 + (i % 80));

      // libsignal signs, we verify (and derive the same public key from its private key).
      const libPrivate = Lib.PrivateKey.generate();
      const libPublic = libPrivate.getPublicKey().serialize();
      const libSignature = libPrivate.sign(lib(message));
      if (((libSignature[63] as number) & 0x80) !== 0) libSignBitsSet++;
      const ourCopy = PrivateKey.deserialize(libPrivate.serialize());
      expect(toHex((await ourCopy.getPublicKey(crypto)).serialize())).toBe(toHex(libPublic));
      const verifier = PublicKey.deserialize(libPublic);
      expect(await verifier.verifySignature(crypto, message, libSignature), `libsignal signature ${i}`).toBe(true);
      const tampered = libSignature.slice();
      tampered[i % 64] = (tampered[i % 64] as number) ^ (1 << (i % 8));
      expect(await verifier.verifySignature(crypto, message, tampered), `tampered signature ${i}`).toBe(false);

      // We sign, libsignal verifies.
      const ours = await KeyPair.generate(crypto);
      const ourSignature = await ours.privateKey.sign(crypto, message);
      if (((ourSignature[63] as number) & 0x80) !== 0) ourSignBitsSet++;
      const libVerifier = Lib.PublicKey.deserialize(lib(ours.publicKey.serialize()));
      expect(libVerifier.verify(lib(message), lib(ourSignature)), `our signature ${i}`).toBe(true);
      // libsignal derives the same public key from our private key.
      const libCopy = Lib.PrivateKey.deserialize(lib(ours.privateKey.serialize()));
      expect(toHex(libCopy.getPublicKey().serialize())).toBe(toHex(ours.publicKey.serialize()));
    }
    // Both values of the carried Edwards sign bit occurred (each misses with probability 2^-100).
    expect(libSignBitsSet).toBeGreaterThan(0);
    expect(libSignBitsSet).toBeLessThan(RANDOM_KEYS);
    expect(ourSignBitsSet).toBeGreaterThan(0);
    expect(ourSignBitsSet).toBeLessThan(RANDOM_KEYS);
  });

  it('Kyber1024: libsignal encapsulates to our key in a PQXDH message, we decapsulate', async () => {
    await libsignalInitiatesToUs(crypto);
  });

  it('Kyber1024: we encapsulate to a libsignal key in a PQXDH message, libsignal decapsulates', async () => {
    await weInitiateToLibsignal(crypto);
  });
});

describe('libsignal vectors, provider-independent', () => {
  it('the copied vectors are the ones libsignal-client itself accepts', () => {
    // Guards against transcription errors in the constants above.
    const publicKey = Lib.PublicKey.deserialize(lib(fromHex(`05${SIGNATURE.identityPublic}`)));
    expect(publicKey.verify(lib(fromHex(SIGNATURE.message)), lib(fromHex(SIGNATURE.signature)))).toBe(true);
    const alice = Lib.PrivateKey.deserialize(lib(fromHex(AGREEMENT.alicePrivate)));
    const bob = Lib.PublicKey.deserialize(lib(fromHex(`05${AGREEMENT.bobPublic}`)));
    expect(toHex(alice.agree(bob))).toBe(AGREEMENT.shared);
    for (const v of HKDF_VECTORS) {
      expect(toHex(Lib.hkdf(42, lib(fromHex(v.ikm)), lib(fromHex(v.info)), lib(fromHex(v.salt))))).toBe(v.okm);
    }
    expect(toHex(Lib.hkdf(42, lib(fromHex(HKDF_VECTORS[0]?.ikm ?? '')), new Uint8Array(0), null))).toBe(
      HKDF_VECTORS[0]?.okm,
    );
  });

  it('Kyber1024 test-data key pair (kem/test-data/{pk,sk}.dat) round-trips through both implementations', async () => {
    const serializedPublic = concatBytes(KYBER_TYPE, fromHex(KYBER_TEST_DATA.publicKey));
    const serializedSecret = concatBytes(KYBER_TYPE, fromHex(KYBER_TEST_DATA.secretKey));
    expect(serializedPublic.length).toBe(1569);
    expect(serializedSecret.length).toBe(3169);

    const publicKey = KEMPublicKey.deserialize(serializedPublic);
    const secretKey = KEMSecretKey.deserialize(serializedSecret);
    expect(toHex(publicKey.serialize())).toBe(toHex(serializedPublic));
    expect(toHex(secretKey.serialize())).toBe(toHex(serializedSecret));
    expect(toHex(Lib.KEMPublicKey.deserialize(lib(serializedPublic)).serialize())).toBe(toHex(serializedPublic));
    expect(toHex(Lib.KEMSecretKey.deserialize(lib(serializedSecret)).serialize())).toBe(toHex(serializedSecret));

    // The secret key is laid out as ML-KEM's is: the public key sits inside it, so our decapsulation
    // (which is ML-KEM's plus Kyber's final hash) works on libsignal's keys.
    expect(toHex(serializedSecret.subarray(1 + 1536, 1 + 1536 + 1568))).toBe(KYBER_TEST_DATA.publicKey);
    // Every provider: the Kyber hashes around ML-KEM (SHA3-256, SHAKE256) come from the provider.
    for (const crypto of providers) {
      const { ciphertext, sharedSecret } = await publicKey.encapsulate(crypto);
      expect(ciphertext.length).toBe(1569);
      for (const other of providers) {
        expect(toHex(await secretKey.decapsulate(other, ciphertext))).toBe(toHex(sharedSecret));
      }
    }
  });

  it('Kyber1024 key pairs generated by libsignal-client and by us deserialize on the other side unchanged', async () => {
    const crypto = providers[0] as CryptoProvider;
    for (let i = 0; i < 5; i++) {
      const libPair = Lib.KEMKeyPair.generate();
      const libPublic = libPair.getPublicKey().serialize();
      const libSecret = libPair.getSecretKey().serialize();
      const publicKey = KEMPublicKey.deserialize(libPublic);
      const secretKey = KEMSecretKey.deserialize(libSecret);
      expect(toHex(publicKey.serialize())).toBe(toHex(libPublic));
      expect(toHex(secretKey.serialize())).toBe(toHex(libSecret));
      const { ciphertext, sharedSecret } = await publicKey.encapsulate(crypto);
      expect(toHex(await secretKey.decapsulate(crypto, ciphertext))).toBe(toHex(sharedSecret));

      const ours = KEMKeyPair.generate(crypto);
      const ourPublic = ours.publicKey.serialize();
      const ourSecret = ours.secretKey.serialize();
      expect(toHex(Lib.KEMPublicKey.deserialize(lib(ourPublic)).serialize())).toBe(toHex(ourPublic));
      expect(toHex(Lib.KEMSecretKey.deserialize(lib(ourSecret)).serialize())).toBe(toHex(ourSecret));
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The first PQXDH message, derived by hand (wire facts sections 3 to 6), to drive libsignal's
// Kyber1024 encapsulation and decapsulation.

const VERSION_BYTE = 0x44;
const ZERO_SALT = new Uint8Array(32);

/** The keys for message 0 of the initiator's first sending chain. */
async function firstMessageKeys(
  crypto: CryptoProvider,
  pqxdhSecret: Uint8Array,
  ratchetAgreement: () => Promise<Uint8Array>,
): Promise<{ cipherKey: Uint8Array; macKey: Uint8Array; iv: Uint8Array }> {
  const derived = await crypto.hkdfSha256(
    pqxdhSecret,
    new Uint8Array(0),
    utf8('WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024'),
    96,
  );
  const rootKey = derived.slice(0, 32);
  const pqRatchetKey = derived.slice(64, 96);
  // The initiator's first DH ratchet step: its sending chain key.
  const rootStep = await crypto.hkdfSha256(await ratchetAgreement(), rootKey, utf8('WhisperRatchet'), 64);
  const chainKey = rootStep.slice(32, 64);
  const seed = await crypto.hmacSha256(chainKey, new Uint8Array([0x01]));
  // SPQR's symmetric chain: the A2B seed, then its first key (counter 1).
  const start = await crypto.hkdfSha256(pqRatchetKey, ZERO_SALT, utf8('Signal PQ Ratchet V1 Chain  Start'), 96);
  const next = await crypto.hkdfSha256(
    start.slice(32, 64),
    ZERO_SALT,
    concatBytes(be32(1), utf8('Signal PQ Ratchet V1 Chain Next')),
    64,
  );
  const spqrKey = next.slice(32, 64);
  const keys = await crypto.hkdfSha256(seed, spqrKey, utf8('WhisperMessageKeys'), 80);
  return { cipherKey: keys.slice(0, 32), macKey: keys.slice(32, 64), iv: keys.slice(64, 80) };
}

async function mac(
  crypto: CryptoProvider,
  macKey: Uint8Array,
  senderIdentity: Uint8Array,
  receiverIdentity: Uint8Array,
  versionAndProto: Uint8Array,
): Promise<Uint8Array> {
  const full = await crypto.hmacSha256(macKey, concatBytes(senderIdentity, receiverIdentity, versionAndProto));
  return full.slice(0, 8);
}

/** Reads a protobuf into field number → raw value (bytes for length-delimited, number for varints). */
function readFields(bytes: Uint8Array): Map<number, Uint8Array | number> {
  const fields = new Map<number, Uint8Array | number>();
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [no, wireType] = reader.tag();
    if (wireType === WireType.LengthDelimited) fields.set(no, reader.bytes().slice());
    else if (wireType === WireType.Varint) fields.set(no, reader.uint32());
    else throw new Error(`unexpected wire type ${wireType} for field ${no}`);
  }
  return fields;
}

function bytesField(fields: Map<number, Uint8Array | number>, no: number): Uint8Array {
  const value = fields.get(no);
  if (!(value instanceof Uint8Array)) throw new Error(`field ${no} is missing or not bytes`);
  return value;
}

class MemorySessionStore extends Lib.SessionStore {
  private readonly sessions = new Map<string, Uint8Array<ArrayBuffer>>();
  async saveSession(name: Lib.ProtocolAddress, record: Lib.SessionRecord): Promise<void> {
    this.sessions.set(name.toString(), record.serialize());
  }
  async getSession(name: Lib.ProtocolAddress): Promise<Lib.SessionRecord | null> {
    const stored = this.sessions.get(name.toString());
    return stored ? Lib.SessionRecord.deserialize(stored) : null;
  }
  async getExistingSessions(addresses: Lib.ProtocolAddress[]): Promise<Lib.SessionRecord[]> {
    return addresses.map((address) => {
      const stored = this.sessions.get(address.toString());
      if (!stored) throw new Error(`no session for ${address.toString()}`);
      return Lib.SessionRecord.deserialize(stored);
    });
  }
}

class MemoryIdentityStore extends Lib.IdentityKeyStore {
  constructor(
    private readonly identity: Lib.PrivateKey,
    private readonly registrationId: number,
  ) {
    super();
  }
  async getIdentityKey(): Promise<Lib.PrivateKey> {
    return this.identity;
  }
  async getLocalRegistrationId(): Promise<number> {
    return this.registrationId;
  }
  async saveIdentity(): Promise<Lib.IdentityChange> {
    return Lib.IdentityChange.NewOrUnchanged;
  }
  async isTrustedIdentity(): Promise<boolean> {
    return true;
  }
  async getIdentity(): Promise<Lib.PublicKey | null> {
    return null;
  }
}

/** libsignal (Alice) builds a session from our bundle and sends; we (Bob) decapsulate and decrypt. */
async function libsignalInitiatesToUs(crypto: CryptoProvider): Promise<void> {
  const aliceAddress = Lib.ProtocolAddress.new('alice', 1);
  const bobAddress = Lib.ProtocolAddress.new('bob', 1);
  const plaintext = utf8('Kyber1024 from libsignal to us');

  // Bob's keys are ours; libsignal checks our XEdDSA signatures on both prekeys.
  const bobIdentity = await KeyPair.generate(crypto);
  const bobSignedPreKey = await KeyPair.generate(crypto);
  const bobKyber = KEMKeyPair.generate(crypto);
  const bundle = Lib.PreKeyBundle.new(
    4321,
    1,
    null,
    null,
    7,
    Lib.PublicKey.deserialize(lib(bobSignedPreKey.publicKey.serialize())),
    lib(await bobIdentity.privateKey.sign(crypto, bobSignedPreKey.publicKey.serialize())),
    Lib.PublicKey.deserialize(lib(bobIdentity.publicKey.serialize())),
    9,
    Lib.KEMPublicKey.deserialize(lib(bobKyber.publicKey.serialize())),
    lib(await bobIdentity.privateKey.sign(crypto, bobKyber.publicKey.serialize())),
  );
  const aliceSessions = new MemorySessionStore();
  const aliceIdentity = new MemoryIdentityStore(Lib.PrivateKey.generate(), 1234);
  await Lib.processPreKeyBundle(bundle, bobAddress, aliceAddress, aliceSessions, aliceIdentity);
  const sent = await Lib.signalEncrypt(lib(plaintext), bobAddress, aliceAddress, aliceSessions, aliceIdentity);
  expect(sent.type()).toBe(Lib.CiphertextMessageType.PreKey);

  const wire = sent.serialize();
  expect(wire[0]).toBe(VERSION_BYTE);
  const preKeyMessage = readFields(wire.subarray(1));
  expect(preKeyMessage.get(6)).toBe(7);
  expect(preKeyMessage.get(7)).toBe(9);
  const aliceIdentityKey = bytesField(preKeyMessage, 3);
  const baseKey = PublicKey.deserialize(bytesField(preKeyMessage, 2));
  const kyberCiphertext = bytesField(preKeyMessage, 8);
  expect(kyberCiphertext.length).toBe(1569);
  const signalMessage = bytesField(preKeyMessage, 4);
  const versionAndProto = signalMessage.subarray(0, signalMessage.length - 8);
  const fields = readFields(versionAndProto.subarray(1));
  expect(fields.get(2) ?? 0).toBe(0); // counter
  // SPQR V1, epoch 1, index 1: the index of the chain key that salts this message.
  expect(toHex(bytesField(fields, 5).subarray(0, 3))).toBe('010101');

  const sharedSecret = await bobKyber.secretKey.decapsulate(crypto, kyberCiphertext);
  const aliceIdentityPublic = PublicKey.deserialize(aliceIdentityKey);
  const pqxdhSecret = concatBytes(
    new Uint8Array(32).fill(0xff),
    await bobSignedPreKey.privateKey.agree(crypto, aliceIdentityPublic),
    await bobIdentity.privateKey.agree(crypto, baseKey),
    await bobSignedPreKey.privateKey.agree(crypto, baseKey),
    sharedSecret,
  );
  const ratchetKey = PublicKey.deserialize(bytesField(fields, 1));
  const keys = await firstMessageKeys(crypto, pqxdhSecret, () => bobSignedPreKey.privateKey.agree(crypto, ratchetKey));

  // The MAC only matches if our decapsulation produced libsignal's shared secret.
  const expectedMac = await mac(
    crypto,
    keys.macKey,
    aliceIdentityKey,
    bobIdentity.publicKey.serialize(),
    versionAndProto,
  );
  expect(toHex(signalMessage.subarray(signalMessage.length - 8))).toBe(toHex(expectedMac));
  const decrypted = await crypto.aes256CbcDecrypt(keys.cipherKey, keys.iv, bytesField(fields, 4));
  expect(toHex(decrypted)).toBe(toHex(plaintext));
}

/** We (Alice) encapsulate to libsignal's Kyber prekey and send; libsignal (Bob) must decrypt. */
async function weInitiateToLibsignal(crypto: CryptoProvider): Promise<void> {
  const aliceAddress = Lib.ProtocolAddress.new('alice', 1);
  const bobAddress = Lib.ProtocolAddress.new('bob', 1);
  const plaintext = utf8('Kyber1024 from us to libsignal');
  const signedPreKeyId = 11;
  const kyberPreKeyId = 13;

  // Bob is libsignal, with its own identity, signed prekey and Kyber prekey.
  const bobIdentity = Lib.PrivateKey.generate();
  const bobSignedPrivate = Lib.PrivateKey.generate();
  const bobSignedPublic = bobSignedPrivate.getPublicKey();
  const bobKyber = Lib.KEMKeyPair.generate();
  const bobKyberPublic = bobKyber.getPublicKey().serialize();
  const kyberSignature = bobIdentity.sign(bobKyberPublic);
  const signedRecord = Lib.SignedPreKeyRecord.new(
    signedPreKeyId,
    Date.now(),
    bobSignedPublic,
    bobSignedPrivate,
    bobIdentity.sign(bobSignedPublic.serialize()),
  );
  const kyberRecord = Lib.KyberPreKeyRecord.new(kyberPreKeyId, Date.now(), bobKyber, kyberSignature);
  const markedUsed: number[] = [];

  // Alice is us. Check libsignal's Kyber prekey signature (XEdDSA over 1569 bytes) as a client would.
  const bobIdentityPublic = PublicKey.deserialize(bobIdentity.getPublicKey().serialize());
  const bobSigned = PublicKey.deserialize(bobSignedPublic.serialize());
  expect(await bobIdentityPublic.verifySignature(crypto, bobKyberPublic, kyberSignature)).toBe(true);
  const aliceIdentity = await KeyPair.generate(crypto);
  const baseKey = await KeyPair.generate(crypto);
  const ratchetKey = await KeyPair.generate(crypto);
  const { ciphertext: kyberCiphertext, sharedSecret } =
    await KEMPublicKey.deserialize(bobKyberPublic).encapsulate(crypto);
  const pqxdhSecret = concatBytes(
    new Uint8Array(32).fill(0xff),
    await aliceIdentity.privateKey.agree(crypto, bobSigned),
    await baseKey.privateKey.agree(crypto, bobIdentityPublic),
    await baseKey.privateKey.agree(crypto, bobSigned),
    sharedSecret,
  );
  const keys = await firstMessageKeys(crypto, pqxdhSecret, () => ratchetKey.privateKey.agree(crypto, bobSigned));

  const body = await crypto.aes256CbcEncrypt(keys.cipherKey, keys.iv, plaintext);
  const signalProto = new BinaryWriter()
    .tag(1, WireType.LengthDelimited)
    .bytes(ratchetKey.publicKey.serialize())
    .tag(2, WireType.Varint)
    .uint32(0)
    .tag(3, WireType.Varint)
    .uint32(0)
    .tag(4, WireType.LengthDelimited)
    .bytes(body)
    // SPQR V1, epoch 1, index 1, message type None: the symmetric chain only.
    .tag(5, WireType.LengthDelimited)
    .bytes(new Uint8Array([0x01, 0x01, 0x01, 0x00]))
    .finish();
  const versionAndProto = concatBytes(new Uint8Array([VERSION_BYTE]), signalProto);
  const signalMessage = concatBytes(
    versionAndProto,
    await mac(crypto, keys.macKey, aliceIdentity.publicKey.serialize(), bobIdentityPublic.serialize(), versionAndProto),
  );
  const preKeyProto = new BinaryWriter()
    .tag(2, WireType.LengthDelimited)
    .bytes(baseKey.publicKey.serialize())
    .tag(3, WireType.LengthDelimited)
    .bytes(aliceIdentity.publicKey.serialize())
    .tag(4, WireType.LengthDelimited)
    .bytes(signalMessage)
    .tag(5, WireType.Varint)
    .uint32(1234)
    .tag(6, WireType.Varint)
    .uint32(signedPreKeyId)
    .tag(7, WireType.Varint)
    .uint32(kyberPreKeyId)
    .tag(8, WireType.LengthDelimited)
    .bytes(kyberCiphertext)
    .finish();

  const received = await Lib.signalDecryptPreKey(
    Lib.PreKeySignalMessage.deserialize(lib(concatBytes(new Uint8Array([VERSION_BYTE]), preKeyProto))),
    aliceAddress,
    bobAddress,
    new MemorySessionStore(),
    new MemoryIdentityStore(bobIdentity, 4321),
    new (class extends Lib.PreKeyStore {
      async savePreKey(): Promise<void> {}
      async getPreKey(id: number): Promise<Lib.PreKeyRecord> {
        throw new Error(`no one-time prekey ${id}`);
      }
      async removePreKey(): Promise<void> {}
    })(),
    new (class extends Lib.SignedPreKeyStore {
      async saveSignedPreKey(): Promise<void> {}
      async getSignedPreKey(id: number): Promise<Lib.SignedPreKeyRecord> {
        if (id !== signedPreKeyId) throw new Error(`no signed prekey ${id}`);
        return signedRecord;
      }
    })(),
    new (class extends Lib.KyberPreKeyStore {
      async saveKyberPreKey(): Promise<void> {}
      async getKyberPreKey(id: number): Promise<Lib.KyberPreKeyRecord> {
        if (id !== kyberPreKeyId) throw new Error(`no Kyber prekey ${id}`);
        return kyberRecord;
      }
      async markKyberPreKeyUsed(id: number): Promise<void> {
        markedUsed.push(id);
      }
    })(),
  );
  expect(toHex(received)).toBe(toHex(plaintext));
  expect(markedUsed).toEqual([kyberPreKeyId]);
}
