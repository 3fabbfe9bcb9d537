import { describe, expect, it } from 'vitest';
import { toHex } from '../src/bytes.ts';
import {
  CiphertextMessageType,
  DuplicatedMessageError,
  InvalidKeyError,
  InvalidKeyIdError,
  InvalidMacError,
  InvalidMessageError,
  InvalidSignatureError,
  ProtocolAddress,
  ProtocolError,
  SessionNotFoundError,
  SessionRecord,
  TooFarInFutureError,
  UntrustedIdentityError,
  processPreKeyBundle,
  signalEncrypt,
} from '../src/index.ts';
import type { PreKeyBundle } from '../src/session/session-builder.ts';
import { providers } from './providers.ts';
import { HushPeer, LibsignalPeer, type Peer, type WireMessage } from './support/peers.ts';
import { withTorsion } from './support/torsion.ts';

const text = new TextEncoder();
const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/** Everything a Hush device stores about `remote` and about its own prekeys, as one comparable string. */
async function snapshot(hush: HushPeer, remote: Peer, keyIds: { preKey?: number; kyber?: number } = {}) {
  const address = new ProtocolAddress(remote.name, remote.deviceId);
  const session = await hush.stores.sessions.getSession(address);
  const identity = await hush.stores.identity.getIdentity(address);
  const exists = async (get: () => Promise<unknown>) =>
    get().then(
      () => true,
      () => false,
    );
  return JSON.stringify({
    session: session ? toHex(session.serialize()) : null,
    identity: identity ? toHex(identity.serialize()) : null,
    preKey:
      keyIds.preKey === undefined ? null : await exists(() => hush.stores.preKeys.getPreKey(keyIds.preKey as number)),
    kyber:
      keyIds.kyber === undefined
        ? null
        : await exists(() => hush.stores.kyberPreKeys.getKyberPreKey(keyIds.kyber as number)),
  });
}

async function expectRejected(
  hush: HushPeer,
  from: Peer,
  message: WireMessage,
  errorType: new (...args: never[]) => ProtocolError,
  keyIds: { preKey?: number; kyber?: number } = {},
) {
  const before = await snapshot(hush, from, keyIds);
  const error = await hush.decrypt(from, message).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(errorType);
  expect(await snapshot(hush, from, keyIds)).toBe(before);
}

function flip(bytes: Uint8Array, index: number): Uint8Array {
  const copy = bytes.slice();
  copy[index] = (copy[index] as number) ^ 0x01;
  return copy;
}

/** A Hush device talking with libsignal, session established both ways (no PreKey wrapping left). */
async function established(crypto: (typeof providers)[number]) {
  const hush = await HushPeer.create(crypto);
  const signal = new LibsignalPeer();
  await signal.startSession(hush);
  await hush.decrypt(signal, await signal.encrypt(hush, text.encode('hello')));
  await signal.decrypt(hush, await hush.encrypt(signal, text.encode('hi')));
  return { hush, signal };
}

describe.each(providers)('rejections with the $name provider (typed error, no state change)', (crypto) => {
  it('tampered ciphertext and tampered MAC fail with InvalidMacError; the genuine message still decrypts', async () => {
    const { hush, signal } = await established(crypto);
    const message = await signal.encrypt(hush, text.encode('genuine'));
    expect(message.type).toBe(CiphertextMessageType.Whisper);
    await expectRejected(
      hush,
      signal,
      { ...message, body: flip(message.body, message.body.length - 12) },
      InvalidMacError,
    );
    await expectRejected(
      hush,
      signal,
      { ...message, body: flip(message.body, message.body.length - 1) },
      InvalidMacError,
    );
    expect(decode(await hush.decrypt(signal, message))).toBe('genuine');
  });

  it('a tampered PreKey message sets up no session and keeps the prekeys', async () => {
    const hush = await HushPeer.create(crypto);
    const signal = new LibsignalPeer();
    let bundle: PreKeyBundle | undefined;
    const originalBundle = hush.bundle.bind(hush);
    hush.bundle = async (options) => (bundle = await originalBundle(options));
    await signal.startSession(hush);
    const message = await signal.encrypt(hush, text.encode('first'));
    const ids = { preKey: bundle?.preKeyId, kyber: bundle?.kyberPreKeyId };
    await expectRejected(
      hush,
      signal,
      { ...message, body: flip(message.body, message.body.length - 3) },
      InvalidMacError,
      ids,
    );
    expect(decode(await hush.decrypt(signal, message))).toBe('first');
    // Used one-time keys are gone after the genuine message.
    expect(await snapshot(hush, signal, ids)).toContain('"preKey":false,"kyber":false');
  });

  it('a replayed message fails with DuplicatedMessageError', async () => {
    const { hush, signal } = await established(crypto);
    const message = await signal.encrypt(hush, text.encode('once'));
    expect(decode(await hush.decrypt(signal, message))).toBe('once');
    await expectRejected(hush, signal, message, DuplicatedMessageError);
    // Also for a skipped key that was already used.
    const late = await signal.encrypt(hush, text.encode('late'));
    const next = await signal.encrypt(hush, text.encode('next'));
    expect(decode(await hush.decrypt(signal, next))).toBe('next');
    expect(decode(await hush.decrypt(signal, late))).toBe('late');
    await expectRejected(hush, signal, late, DuplicatedMessageError);
  });

  it('a jump of more than 25,000 messages fails with TooFarInFutureError; one within reach decrypts', async () => {
    const { hush, signal } = await established(crypto);
    const undelivered: WireMessage[] = [];
    for (let i = 0; i <= 25_001; i++) undelivered.push(await signal.encrypt(hush, text.encode(`skipped ${i}`)));
    // Message 25,001 is 25,001 ahead of the receiving chain.
    await expectRejected(hush, signal, undelivered[25_001] as WireMessage, TooFarInFutureError);
    // Message 24,999 is 24,999 ahead in the chain and 25,000 ahead in the SPQR chain: both limits hold.
    expect(decode(await hush.decrypt(signal, undelivered[24_999] as WireMessage))).toBe('skipped 24999');
    // Keys within the last 2,000 were kept for late messages; older ones were not.
    expect(decode(await hush.decrypt(signal, undelivered[23_000] as WireMessage))).toBe('skipped 23000');
    await expectRejected(hush, signal, undelivered[100] as WireMessage, DuplicatedMessageError);
  });

  it('bad signed-prekey and Kyber-prekey signatures are refused with InvalidSignatureError', async () => {
    const hush = await HushPeer.create(crypto);
    const signal = new LibsignalPeer();
    const address = new ProtocolAddress(signal.name, signal.deviceId);
    for (const field of ['signedPreKeySignature', 'kyberPreKeySignature'] as const) {
      const bundle = await signal.bundle();
      bundle[field] = flip(bundle[field], 10);
      await expect(processPreKeyBundle(crypto, bundle, address, hush.stores)).rejects.toBeInstanceOf(
        InvalidSignatureError,
      );
      expect(await snapshot(hush, signal)).toBe(
        JSON.stringify({ session: null, identity: null, preKey: null, kyber: null }),
      );
    }
  });

  it('an X3DH-only bundle (no Kyber prekey) is refused', async () => {
    const hush = await HushPeer.create(crypto);
    const signal = new LibsignalPeer();
    const bundle = await signal.bundle();
    const { kyberPreKey: _k, kyberPreKeyId: _i, kyberPreKeySignature: _s, ...x3dhOnly } = bundle;
    await expect(
      processPreKeyBundle(crypto, x3dhOnly as PreKeyBundle, new ProtocolAddress(signal.name, 1), hush.stores),
    ).rejects.toBeInstanceOf(InvalidKeyError);
    expect(await hush.stores.sessions.getSession(new ProtocolAddress(signal.name, 1))).toBeNull();
  });

  it('a PreKey message naming an unknown prekey id fails with InvalidKeyIdError', async () => {
    const hush = await HushPeer.create(crypto);
    const signal = new LibsignalPeer();
    let bundle: PreKeyBundle | undefined;
    const originalBundle = hush.bundle.bind(hush);
    hush.bundle = async (options) => (bundle = await originalBundle(options));
    await signal.startSession(hush);
    const message = await signal.encrypt(hush, text.encode('first'));
    await hush.stores.preKeys.removePreKey(bundle?.preKeyId as number);
    await expectRejected(hush, signal, message, InvalidKeyIdError, { kyber: bundle?.kyberPreKeyId });
  });

  it('a changed identity key on an existing session is refused with UntrustedIdentityError, both ways', async () => {
    const { hush, signal } = await established(crypto);
    // The peer reinstalls: same address, new identity key, new session.
    const reinstalled = Object.assign(new LibsignalPeer(), { name: signal.name });
    await reinstalled.startSession(hush);
    const message = await reinstalled.encrypt(hush, text.encode('who am I'));
    await expectRejected(hush, reinstalled, message, UntrustedIdentityError);
    // Nor does Hush start a session to the new key without the user accepting it.
    const bundle = await reinstalled.bundle();
    const address = new ProtocolAddress(signal.name, signal.deviceId);
    const before = await snapshot(hush, signal);
    await expect(processPreKeyBundle(crypto, bundle, address, hush.stores)).rejects.toBeInstanceOf(
      UntrustedIdentityError,
    );
    expect(await snapshot(hush, signal)).toBe(before);
  });

  it('a base key that is not canonical is refused', async () => {
    const hush = await HushPeer.create(crypto);
    const initiator = await HushPeer.create(crypto);
    await initiator.startSession(hush);
    const message = await initiator.encrypt(hush, text.encode('first'));
    // Field 2 (base key) starts after the 0x44 version byte and, with a one-time prekey, field 1.
    const body = message.body.slice();
    const baseKeyOffset = body.indexOf(0x12) + 2 + 1; // tag 0x12, length 0x21, type 0x05
    body[baseKeyOffset + 31] = (body[baseKeyOffset + 31] as number) | 0x80; // set the high bit
    await expectRejected(hush, initiator, { ...message, body }, InvalidMessageError);
  });

  it('a base key with a torsion component is refused', async () => {
    const hush = await HushPeer.create(crypto);
    const initiator = await HushPeer.create(crypto);
    await initiator.startSession(hush);
    const message = await initiator.encrypt(hush, text.encode('first'));
    const body = message.body.slice();
    const baseKeyOffset = body.indexOf(0x12) + 2 + 1; // as above
    const baseKey = body.subarray(baseKeyOffset, baseKeyOffset + 32);
    baseKey.set(withTorsion(baseKey, 4n)); // add the point of order 2
    await expectRejected(hush, initiator, { ...message, body }, InvalidMessageError);
  });

  it('encrypting without a session, or on an unanswered session older than 30 days, fails with SessionNotFoundError', async () => {
    const hush = await HushPeer.create(crypto);
    const signal = new LibsignalPeer();
    const address = new ProtocolAddress(signal.name, signal.deviceId);
    await expect(signalEncrypt(crypto, text.encode('x'), address, hush.stores)).rejects.toBeInstanceOf(
      SessionNotFoundError,
    );
    await processPreKeyBundle(crypto, await signal.bundle(), address, hush.stores, {
      now: Date.now() - 31 * 86_400_000,
    });
    await expect(signalEncrypt(crypto, text.encode('x'), address, hush.stores)).rejects.toBeInstanceOf(
      SessionNotFoundError,
    );
  });

  it('every prefix and every single-byte corruption of a message fails with a ProtocolError and changes nothing', async () => {
    const { hush, signal } = await established(crypto);
    const whisper = await signal.encrypt(hush, text.encode('whole'));
    const before = await snapshot(hush, signal);
    for (let length = 0; length < whisper.body.length; length++) {
      await expect(hush.decrypt(signal, { ...whisper, body: whisper.body.subarray(0, length) })).rejects.toBeInstanceOf(
        ProtocolError,
      );
    }
    for (let i = 0; i < whisper.body.length; i++) {
      await expect(hush.decrypt(signal, { ...whisper, body: flip(whisper.body, i) })).rejects.toBeInstanceOf(
        ProtocolError,
      );
    }
    expect(await snapshot(hush, signal)).toBe(before);
    expect(decode(await hush.decrypt(signal, whisper))).toBe('whole');
  });
});

describe.each(providers)('ratchet limits with the $name provider', (crypto) => {
  it('keeps 5 receiver chains: a late message from 4 turns ago decrypts, one from 6 turns ago is refused', async () => {
    const { hush, signal } = await established(crypto);
    const roundTrip = async () => {
      await hush.decrypt(signal, await signal.encrypt(hush, text.encode('ping')));
      await signal.decrypt(hush, await hush.encrypt(signal, text.encode('pong')));
    };
    const recent = await signal.encrypt(hush, text.encode('recent'));
    for (let i = 0; i < 4; i++) await roundTrip();
    expect(decode(await hush.decrypt(signal, recent))).toBe('recent');
    const old = await signal.encrypt(hush, text.encode('old'));
    for (let i = 0; i < 6; i++) await roundTrip();
    const before = await snapshot(hush, signal);
    await expect(hush.decrypt(signal, old)).rejects.toBeInstanceOf(ProtocolError);
    expect(await snapshot(hush, signal)).toBe(before);
  });
});

describe('session records', () => {
  it('keep at most 40 archived sessions and serialize every state', async () => {
    const [crypto] = providers as [(typeof providers)[number]];
    const hush = await HushPeer.create(crypto);
    const signal = new LibsignalPeer();
    const address = new ProtocolAddress(signal.name, signal.deviceId);
    for (let i = 0; i < 45; i++) await processPreKeyBundle(crypto, await signal.bundle(), address, hush.stores);
    const record = (await hush.stores.sessions.getSession(address)) as SessionRecord;
    expect(record.hasCurrentState()).toBe(true);
    expect(record.previousStates()).toHaveLength(40);
    expect(toHex(SessionRecord.deserialize(record.serialize()).serialize())).toBe(toHex(record.serialize()));
  });
});
