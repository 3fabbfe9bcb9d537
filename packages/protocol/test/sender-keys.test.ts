import { createCipheriv } from 'node:crypto';
import * as Signal from '@signalapp/libsignal-client';
import { describe, expect, it } from 'vitest';
import { ProtocolAddress } from '../src/address.ts';
import { utf8 } from '../src/bytes.ts';
import type { CryptoProvider } from '../src/crypto/provider.ts';
import { KeyPair, PrivateKey, type PublicKey, SeededSigningKey } from '../src/curve.ts';
import {
  DuplicatedMessageError,
  InvalidArgumentError,
  InvalidMessageError,
  InvalidSignatureError,
  InvalidStateError,
  LegacyCiphertextVersionError,
  NoSenderKeyStateError,
  ProtocolError,
  TooFarInFutureError,
  UnrecognizedVersionError,
} from '../src/errors.ts';
import { BinaryWriter } from '../src/proto.ts';
import {
  MAX_FORWARD_JUMPS,
  MAX_SENDER_KEY_STATES,
  MAX_SKIPPED_MESSAGE_KEYS,
  SenderKeyDistributionMessage,
  SenderKeyMessage,
  SenderKeyRecord,
  createSenderKeyDistributionMessage,
  groupDecrypt,
  groupEncrypt,
  processSenderKeyDistributionMessage,
} from '../src/sender-keys/index.ts';
import { senderMessageKeys } from '../src/sender-keys/sender-key-record.ts';
import { InMemorySenderKeyStore, type SenderKeyStore } from '../src/stores.ts';
import { providers } from './providers.ts';

/** libsignal-client wants ArrayBuffer-backed arrays. */
const buf = (bytes: Uint8Array): Uint8Array<ArrayBuffer> => Uint8Array.from(bytes);

/** libsignal's side of the store, keeping serialized records as a real store would. */
class LibsignalSenderKeyStore extends Signal.SenderKeyStore {
  private readonly records = new Map<string, Uint8Array<ArrayBuffer>>();

  async saveSenderKey(sender: Signal.ProtocolAddress, distributionId: string, record: Signal.SenderKeyRecord) {
    this.records.set(`${sender.name()}.${sender.deviceId()}::${distributionId}`, record.serialize());
  }

  async getSenderKey(sender: Signal.ProtocolAddress, distributionId: string) {
    const bytes = this.records.get(`${sender.name()}.${sender.deviceId()}::${distributionId}`);
    return bytes ? Signal.SenderKeyRecord.deserialize(bytes) : null;
  }
}

/**
 * A store that hands out the very record objects it was given, like a cache would: a decrypt that
 * mutated its record before failing would show up here even without a save.
 */
class ObjectSenderKeyStore implements SenderKeyStore {
  private readonly records = new Map<string, SenderKeyRecord>();

  async saveSenderKey(sender: ProtocolAddress, distributionId: string, record: SenderKeyRecord) {
    this.records.set(`${sender}::${distributionId}`, record);
  }

  async getSenderKey(sender: ProtocolAddress, distributionId: string) {
    return this.records.get(`${sender}::${distributionId}`) ?? null;
  }
}

const ALICE = '9d0652a3-dcc3-4d11-975f-74d61598733f';
const alice = new ProtocolAddress(ALICE, 1);
const libAlice = Signal.ProtocolAddress.new(ALICE, 1);
const newDistributionId = () => globalThis.crypto.randomUUID();

/** A small deterministic generator, so that the garbage inputs are the same on every run. */
function seededBytes(seed: number) {
  let state = seed >>> 0;
  return (length: number) => {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) {
      state = (state + 0x6d2b79f5) >>> 0;
      let t = state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      out[i] = ((t ^ (t >>> 14)) >>> 0) & 0xff;
    }
    return out;
  };
}

const ALLOWED_DECODE_ERRORS = [InvalidMessageError, LegacyCiphertextVersionError, UnrecognizedVersionError];

function expectTypedDecodeError(decode: () => unknown): void {
  let caught: unknown;
  try {
    decode();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(ProtocolError);
  expect(ALLOWED_DECODE_ERRORS).toContain((caught as object).constructor);
}

describe.each(providers)('sender keys ($name)', (crypto: CryptoProvider) => {
  /** Alice's sending state and one Hush receiver that has processed her distribution message. */
  async function hushGroup(receiverStore: SenderKeyStore = new InMemorySenderKeyStore()) {
    const distributionId = newDistributionId();
    const senderStore = new InMemorySenderKeyStore();
    const skdm = await createSenderKeyDistributionMessage(crypto, alice, distributionId, senderStore);
    await processSenderKeyDistributionMessage(
      crypto,
      alice,
      SenderKeyDistributionMessage.deserialize(skdm.serialize()),
      receiverStore,
    );
    const send = (text: string) => groupEncrypt(crypto, alice, distributionId, senderStore, utf8(text));
    const receive = async (message: Uint8Array) =>
      new TextDecoder().decode(await groupDecrypt(crypto, alice, receiverStore, message));
    const receivedRecord = async () => (await receiverStore.getSenderKey(alice, distributionId))?.serialize();
    return { distributionId, senderStore, receiverStore, skdm, send, receive, receivedRecord };
  }

  /** Moves Alice's sending chain forward as if she had sent messages up to `iteration` − 1. */
  async function fastForward(store: SenderKeyStore, distributionId: string, iteration: number) {
    const record = (await store.getSenderKey(alice, distributionId)) as SenderKeyRecord;
    const state = record.currentState();
    if (!state) throw new Error('no sending state');
    let chainKey = state.chainKey;
    while (chainKey.iteration < iteration) chainKey = await chainKey.next(crypto);
    record.replaceState(state, state.advanced(chainKey, state.skippedSeeds));
    await store.saveSenderKey(alice, distributionId, record);
  }

  /** A message correctly signed with Alice's key but with fields of the test's choosing. */
  async function signedMessage(
    store: SenderKeyStore,
    distributionId: string,
    fields: { iteration: number; ciphertext: Uint8Array; chainId?: number },
  ) {
    const state = (await store.getSenderKey(alice, distributionId))?.currentState();
    if (!state?.signingPrivateKey) throw new Error('no sending state');
    const message = await SenderKeyMessage.create(
      crypto,
      distributionId,
      fields.chainId ?? state.chainId,
      fields.iteration,
      fields.ciphertext,
      state.signingPrivateKey,
    );
    return message.serialize();
  }

  /** A one-state record written field by field, with the given private-key fields (5 and/or 7). */
  function handWrittenRecord(version: number, signingKey: PublicKey, privateKeys: [number, Uint8Array][]) {
    const state = new BinaryWriter()
      .tag(1, 0)
      .uint32(1234)
      .tag(2, 2)
      .bytes(crypto.randomBytes(32))
      .tag(3, 0)
      .uint32(0)
      .tag(4, 2)
      .bytes(signingKey.serialize());
    for (const [field, bytes] of privateKeys) state.tag(field, 2).bytes(bytes);
    return new BinaryWriter().tag(1, 0).uint32(version).tag(2, 2).bytes(state.finish()).finish();
  }

  describe('Hush to Hush', () => {
    it('delivers in order, out of order and across skipped iterations', async () => {
      const group = await hushGroup();
      const messages = [];
      for (let i = 0; i < 12; i++) messages.push(await group.send(`message ${i}`));
      expect(await group.receive(messages[0] as Uint8Array)).toBe('message 0');
      expect(await group.receive(messages[1] as Uint8Array)).toBe('message 1');
      // Jump ahead, then fill in some of the gap in reverse; 8 and 10 never arrive.
      expect(await group.receive(messages[11] as Uint8Array)).toBe('message 11');
      for (const i of [9, 7, 2, 5, 3, 6, 4])
        expect(await group.receive(messages[i] as Uint8Array)).toBe(`message ${i}`);
      const record = SenderKeyRecord.deserialize((await group.receivedRecord()) as Uint8Array);
      const state = record.currentState();
      expect(state?.chainKey.iteration).toBe(12);
      expect([...(state?.skippedSeeds.keys() ?? [])]).toEqual([8, 10]);
      expect(state?.signingPrivateKey).toBeUndefined();
      await expect(groupDecrypt(crypto, alice, group.receiverStore, messages[5] as Uint8Array)).rejects.toThrow(
        DuplicatedMessageError,
      );
    });

    it('handles empty and large plaintexts', async () => {
      const group = await hushGroup();
      // Built locally: providers' randomBytes follow WebCrypto's 64 KiB limit per call.
      const large = seededBytes(1)(100_000);
      const empty = await groupEncrypt(crypto, alice, group.distributionId, group.senderStore, new Uint8Array(0));
      const big = await groupEncrypt(crypto, alice, group.distributionId, group.senderStore, large);
      expect(await groupDecrypt(crypto, alice, group.receiverStore, empty)).toEqual(new Uint8Array(0));
      expect(await groupDecrypt(crypto, alice, group.receiverStore, big)).toEqual(large);
    });

    it('serializes messages in libsignal’s exact encoding', async () => {
      const group = await hushGroup();
      const skdm = group.skdm;
      const theirs = Signal.SenderKeyDistributionMessage._new(
        3,
        group.distributionId,
        skdm.chainId,
        skdm.iteration,
        buf(skdm.chainKey),
        Signal.PublicKey.deserialize(buf(skdm.signingKey.serialize())),
      );
      expect(skdm.serialize()).toEqual(new Uint8Array(theirs.serialize()));
      expect(skdm.chainId).toBeLessThan(2 ** 31);
      const message = SenderKeyMessage.deserialize(await group.send('hello'));
      expect(message.serialize()[0]).toBe(0x33);
      const parsed = Signal.SenderKeyMessage.deserialize(buf(message.serialize()));
      expect(parsed.distributionId()).toBe(group.distributionId);
      expect(parsed.chainId()).toBe(skdm.chainId);
      expect(parsed.iteration()).toBe(0);
      expect(new Uint8Array(parsed.ciphertext())).toEqual(message.ciphertext);
      expect(parsed.verifySignature(Signal.PublicKey.deserialize(buf(skdm.signingKey.serialize())))).toBe(true);
    });

    it('keeps a known chain when its distribution message is processed again', async () => {
      const group = await hushGroup();
      const first = await group.send('first');
      expect(await group.receive(first)).toBe('first');
      await processSenderKeyDistributionMessage(crypto, alice, group.skdm, group.receiverStore);
      // Had the state been reset to iteration 0, this replay would decrypt.
      await expect(groupDecrypt(crypto, alice, group.receiverStore, first)).rejects.toThrow(DuplicatedMessageError);
      expect(await group.receive(await group.send('second'))).toBe('second');
      // A later distribution message from the sender continues the same chain.
      const again = await createSenderKeyDistributionMessage(crypto, alice, group.distributionId, group.senderStore);
      expect(again.chainId).toBe(group.skdm.chainId);
      expect(again.iteration).toBe(2);
    });

    it('replaces a chain announced again under the same id with another signing key', async () => {
      const group = await hushGroup();
      const old = await group.send('old');
      const impostor = await KeyPair.generate(crypto);
      const replacement = SenderKeyDistributionMessage.create(
        group.distributionId,
        group.skdm.chainId,
        0,
        crypto.randomBytes(32),
        impostor.publicKey,
      );
      await processSenderKeyDistributionMessage(crypto, alice, replacement, group.receiverStore);
      const record = (await group.receiverStore.getSenderKey(alice, group.distributionId)) as SenderKeyRecord;
      expect(record.chainIds()).toEqual([group.skdm.chainId]);
      await expect(groupDecrypt(crypto, alice, group.receiverStore, old)).rejects.toThrow(InvalidSignatureError);
    });

    it('keeps at most five chains per sender and distribution, dropping the oldest', async () => {
      const distributionId = newDistributionId();
      const receiverStore = new InMemorySenderKeyStore();
      const senders: InMemorySenderKeyStore[] = [];
      for (let i = 0; i <= MAX_SENDER_KEY_STATES; i++) {
        // A fresh sender store each time: Alice re-keyed (e.g. after a member left).
        const store = new InMemorySenderKeyStore();
        senders.push(store);
        const skdm = await createSenderKeyDistributionMessage(crypto, alice, distributionId, store);
        await processSenderKeyDistributionMessage(crypto, alice, skdm, receiverStore);
      }
      const record = (await receiverStore.getSenderKey(alice, distributionId)) as SenderKeyRecord;
      expect(record.chainIds()).toHaveLength(MAX_SENDER_KEY_STATES);
      const [oldest, ...rest] = senders;
      const evicted = await groupEncrypt(crypto, alice, distributionId, oldest as SenderKeyStore, utf8('lost'));
      await expect(groupDecrypt(crypto, alice, receiverStore, evicted)).rejects.toThrow(NoSenderKeyStateError);
      for (const store of rest) {
        const message = await groupEncrypt(crypto, alice, distributionId, store, utf8('kept'));
        expect(await groupDecrypt(crypto, alice, receiverStore, message)).toEqual(utf8('kept'));
      }
    });

    it('caches 2000 skipped keys, newest kept, like libsignal', async () => {
      const group = await hushGroup();
      const libStore = new LibsignalSenderKeyStore();
      await Signal.processSenderKeyDistributionMessage(
        libAlice,
        Signal.SenderKeyDistributionMessage.deserialize(buf(group.skdm.serialize())),
        libStore,
      );
      const m0 = await group.send('m0');
      await fastForward(group.senderStore, group.distributionId, 499);
      const m499 = await group.send('m499');
      const m500 = await group.send('m500');
      await fastForward(group.senderStore, group.distributionId, 2500);
      const m2500 = await group.send('m2500');

      expect(await group.receive(m2500)).toBe('m2500');
      const state = SenderKeyRecord.deserialize((await group.receivedRecord()) as Uint8Array).currentState();
      expect(state?.skippedSeeds.size).toBe(MAX_SKIPPED_MESSAGE_KEYS);
      expect(Math.min(...(state?.skippedSeeds.keys() ?? []))).toBe(500);
      for (const dropped of [m0, m499]) {
        await expect(groupDecrypt(crypto, alice, group.receiverStore, dropped)).rejects.toThrow(DuplicatedMessageError);
      }
      expect(await group.receive(m500)).toBe('m500');

      // libsignal draws the line in the same place.
      expect(await Signal.groupDecrypt(libAlice, libStore, buf(m2500))).toEqual(buf(utf8('m2500')));
      await expect(Signal.groupDecrypt(libAlice, libStore, buf(m499))).rejects.toThrow();
      expect(await Signal.groupDecrypt(libAlice, libStore, buf(m500))).toEqual(buf(utf8('m500')));
    });

    it('refuses to send without a chain, or with a chain it only received', async () => {
      const group = await hushGroup();
      await expect(groupEncrypt(crypto, alice, newDistributionId(), group.senderStore, utf8('x'))).rejects.toThrow(
        NoSenderKeyStateError,
      );
      await expect(groupEncrypt(crypto, alice, group.distributionId, group.receiverStore, utf8('x'))).rejects.toThrow(
        InvalidStateError,
      );
      await expect(createSenderKeyDistributionMessage(crypto, alice, 'not-a-uuid', group.senderStore)).rejects.toThrow(
        InvalidArgumentError,
      );
    });

    it('treats the distribution id case-insensitively, as the UUID it is', async () => {
      const group = await hushGroup();
      const upper = group.distributionId.toUpperCase();
      const again = await createSenderKeyDistributionMessage(crypto, alice, upper, group.senderStore);
      expect(again.chainId).toBe(group.skdm.chainId);
      const message = await groupEncrypt(crypto, alice, upper, group.senderStore, utf8('hi'));
      expect(await group.receive(message)).toBe('hi');
    });
  });

  describe('interop with libsignal-client 0.103', () => {
    it('decrypts libsignal’s group messages, out of order and with gaps', async () => {
      const distributionId = newDistributionId();
      const libStore = new LibsignalSenderKeyStore();
      const theirSkdm = await Signal.SenderKeyDistributionMessage.create(libAlice, distributionId, libStore);
      const skdm = SenderKeyDistributionMessage.deserialize(theirSkdm.serialize());
      expect(skdm.distributionId).toBe(distributionId);
      expect(skdm.chainId).toBe(theirSkdm.chainId());
      expect(skdm.iteration).toBe(0);
      expect(skdm.chainKey).toEqual(new Uint8Array(theirSkdm.chainKey()));

      const store = new InMemorySenderKeyStore();
      await processSenderKeyDistributionMessage(crypto, alice, skdm, store);
      const messages: Uint8Array[] = [];
      for (let i = 0; i < 20; i++) {
        const message = await Signal.groupEncrypt(libAlice, distributionId, libStore, buf(utf8(`lib ${i}`)));
        expect(message.type()).toBe(7);
        messages.push(message.serialize());
      }
      // 1, 6, 13 and 17 are never delivered.
      for (const i of [0, 2, 19, 3, 10, 4, 18, 5, 7, 8, 9, 11, 12, 14, 15, 16]) {
        expect(await groupDecrypt(crypto, alice, store, messages[i] as Uint8Array)).toEqual(utf8(`lib ${i}`));
      }
      const state = ((await store.getSenderKey(alice, distributionId)) as SenderKeyRecord).currentState();
      expect([...(state?.skippedSeeds.keys() ?? [])]).toEqual([1, 6, 13, 17]);
      await expect(groupDecrypt(crypto, alice, store, messages[10] as Uint8Array)).rejects.toThrow(
        DuplicatedMessageError,
      );
      expect(await groupDecrypt(crypto, alice, store, messages[13] as Uint8Array)).toEqual(utf8('lib 13'));
    });

    it('picks up a libsignal chain midway, from a later distribution message', async () => {
      const distributionId = newDistributionId();
      const libStore = new LibsignalSenderKeyStore();
      await Signal.SenderKeyDistributionMessage.create(libAlice, distributionId, libStore);
      for (let i = 0; i < 5; i++) await Signal.groupEncrypt(libAlice, distributionId, libStore, buf(utf8('early')));
      const theirSkdm = await Signal.SenderKeyDistributionMessage.create(libAlice, distributionId, libStore);
      const store = new InMemorySenderKeyStore();
      await processSenderKeyDistributionMessage(
        crypto,
        alice,
        SenderKeyDistributionMessage.deserialize(theirSkdm.serialize()),
        store,
      );
      const late = await Signal.groupEncrypt(libAlice, distributionId, libStore, buf(utf8('late')));
      expect(await groupDecrypt(crypto, alice, store, late.serialize())).toEqual(utf8('late'));
    });

    it('has its messages decrypted by libsignal, out of order and with gaps', async () => {
      const group = await hushGroup();
      const libStore = new LibsignalSenderKeyStore();
      await Signal.processSenderKeyDistributionMessage(
        libAlice,
        Signal.SenderKeyDistributionMessage.deserialize(buf(group.skdm.serialize())),
        libStore,
      );
      const messages: Uint8Array[] = [];
      for (let i = 0; i < 20; i++) messages.push(await group.send(`hush ${i}`));
      // 2, 8 and 15 are never delivered.
      for (const i of [1, 0, 19, 3, 4, 18, 5, 6, 7, 9, 16, 10, 11, 12, 13, 14, 17]) {
        const plaintext = await Signal.groupDecrypt(libAlice, libStore, buf(messages[i] as Uint8Array));
        expect(new Uint8Array(plaintext)).toEqual(utf8(`hush ${i}`));
      }
      await expect(Signal.groupDecrypt(libAlice, libStore, buf(messages[4] as Uint8Array))).rejects.toThrow();
      const late = await Signal.groupDecrypt(libAlice, libStore, buf(messages[8] as Uint8Array));
      expect(new Uint8Array(late)).toEqual(utf8('hush 8'));
    });

    it('signs with seeded keys that libsignal verifies, whichever sign bit their Edwards key has', async () => {
      // Each new chain gets a new seeded signing key; about half of their Edwards keys have the sign
      // bit set. libsignal must accept each message as sent and refuse it with bit 7 of its last
      // byte flipped, which shows it rebuilds the key from that bit.
      const signBits = [0, 0];
      for (let i = 0; i < 48; i++) {
        const group = await hushGroup();
        const state = (await group.senderStore.getSenderKey(alice, group.distributionId))?.currentState();
        expect(state?.signingPrivateKey).toBeInstanceOf(SeededSigningKey);
        const libStore = new LibsignalSenderKeyStore();
        await Signal.processSenderKeyDistributionMessage(
          libAlice,
          Signal.SenderKeyDistributionMessage.deserialize(buf(group.skdm.serialize())),
          libStore,
        );
        const message = await group.send(`chain ${i}`);
        const last = message.length - 1;
        const signBit = (message[last] as number) >> 7;
        signBits[signBit] = (signBits[signBit] as number) + 1;
        const flipped = message.slice();
        flipped[last] = (flipped[last] as number) ^ 0x80;
        await expect(Signal.groupDecrypt(libAlice, libStore, buf(flipped))).rejects.toThrow();
        await expect(groupDecrypt(crypto, alice, group.receiverStore, flipped)).rejects.toThrow(InvalidSignatureError);
        expect(new Uint8Array(await Signal.groupDecrypt(libAlice, libStore, buf(message)))).toEqual(utf8(`chain ${i}`));
        expect(await group.receive(message)).toBe(`chain ${i}`);
      }
      // Each count is Binomial(48, ½): below 8 with probability about 1e-6.
      expect(signBits[0]).toBeGreaterThanOrEqual(8);
      expect(signBits[1]).toBeGreaterThanOrEqual(8);
    });

    it('keeps signing version 1 records’ chains, which have no seed, in a way libsignal verifies', async () => {
      const distributionId = newDistributionId();
      const signing = await KeyPair.generate(crypto);
      const record = SenderKeyRecord.deserialize(
        handWrittenRecord(1, signing.publicKey, [[5, signing.privateKey.serialize()]]),
      );
      expect(record.currentState()?.signingPrivateKey).toBeInstanceOf(PrivateKey);
      const store = new InMemorySenderKeyStore();
      await store.saveSenderKey(alice, distributionId, record);
      const skdm = await createSenderKeyDistributionMessage(crypto, alice, distributionId, store);
      const libStore = new LibsignalSenderKeyStore();
      await Signal.processSenderKeyDistributionMessage(
        libAlice,
        Signal.SenderKeyDistributionMessage.deserialize(buf(skdm.serialize())),
        libStore,
      );
      for (let i = 0; i < 3; i++) {
        const message = await groupEncrypt(crypto, alice, distributionId, store, utf8(`old ${i}`));
        expect(new Uint8Array(await Signal.groupDecrypt(libAlice, libStore, buf(message)))).toEqual(utf8(`old ${i}`));
      }
      // Rewritten as version 2, still with the unseeded key.
      const rewritten = (await store.getSenderKey(alice, distributionId)) as SenderKeyRecord;
      expect(rewritten.serialize()[1]).toBe(2);
      expect(rewritten.currentState()?.signingPrivateKey).toBeInstanceOf(PrivateKey);

      // A seeded key (field 7) did not exist in version 1.
      const seeded = await SeededSigningKey.generate(crypto);
      const seededV1 = handWrittenRecord(1, seeded.publicKey, [[7, seeded.privateKey.serialize()]]);
      expect(() => SenderKeyRecord.deserialize(seededV1)).toThrow(InvalidMessageError);
      const seededV2 = handWrittenRecord(2, seeded.publicKey, [[7, seeded.privateKey.serialize()]]);
      expect(SenderKeyRecord.deserialize(seededV2).currentState()?.signingPrivateKey).toBeInstanceOf(SeededSigningKey);
    });

    it('allows a jump of exactly 25000 iterations and refuses 25001, as libsignal does', async () => {
      const group = await hushGroup();
      // A second pair of receivers, still at iteration 0, for the over-the-limit message.
      const farStore = new InMemorySenderKeyStore();
      await processSenderKeyDistributionMessage(crypto, alice, group.skdm, farStore);
      const libStores = [new LibsignalSenderKeyStore(), new LibsignalSenderKeyStore()];
      for (const libStore of libStores) {
        await Signal.processSenderKeyDistributionMessage(
          libAlice,
          Signal.SenderKeyDistributionMessage.deserialize(buf(group.skdm.serialize())),
          libStore,
        );
      }
      await fastForward(group.senderStore, group.distributionId, MAX_FORWARD_JUMPS);
      const atLimit = await group.send('at the limit');
      const overLimit = await group.send('over the limit');

      expect(await group.receive(atLimit)).toBe('at the limit');
      expect(
        new Uint8Array(await Signal.groupDecrypt(libAlice, libStores[0] as Signal.SenderKeyStore, buf(atLimit))),
      ).toEqual(utf8('at the limit'));

      const before = (await farStore.getSenderKey(alice, group.distributionId))?.serialize();
      const error = await groupDecrypt(crypto, alice, farStore, overLimit).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TooFarInFutureError);
      expect(error).toMatchObject({ jump: MAX_FORWARD_JUMPS + 1, limit: MAX_FORWARD_JUMPS });
      expect((await farStore.getSenderKey(alice, group.distributionId))?.serialize()).toEqual(before);
      await expect(
        Signal.groupDecrypt(libAlice, libStores[1] as Signal.SenderKeyStore, buf(overLimit)),
      ).rejects.toThrow(/too far into the future/);
    });
  });

  describe('rejections leave the stored record unchanged', () => {
    /** A receiver that has decrypted iterations 0 and 2 (so 1 is cached), and Alice's message 3. */
    async function setUp() {
      const group = await hushGroup(new ObjectSenderKeyStore());
      const sent = [];
      for (let i = 0; i < 4; i++) sent.push(await group.send(`m${i}`));
      await group.receive(sent[0] as Uint8Array);
      await group.receive(sent[2] as Uint8Array);
      const next = sent[3] as Uint8Array;
      const before = await group.receivedRecord();
      const expectRejected = async (message: Uint8Array, errorClass: new (...args: never[]) => ProtocolError) => {
        const error = await groupDecrypt(crypto, alice, group.receiverStore, message).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(errorClass);
        expect(await group.receivedRecord()).toEqual(before);
      };
      return { group, sent, next, before, expectRejected };
    }

    it('tampered ciphertext and bad signatures: InvalidSignatureError', async () => {
      const { group, sent, next, expectRejected } = await setUp();
      const tamperedCiphertext = next.slice();
      const ciphertextByte = next.length - 64 - 5;
      tamperedCiphertext[ciphertextByte] = (tamperedCiphertext[ciphertextByte] as number) ^ 0x01;
      await expectRejected(tamperedCiphertext, InvalidSignatureError);

      const badSignature = next.slice();
      badSignature[next.length - 10] = (badSignature[next.length - 10] as number) ^ 0x40;
      await expectRejected(badSignature, InvalidSignatureError);

      const zeroSignature = next.slice();
      zeroSignature.fill(0, next.length - 64);
      await expectRejected(zeroSignature, InvalidSignatureError);

      // A low nibble of the version byte other than 3 parses, but is covered by the signature.
      const otherLowNibble = next.slice();
      otherLowNibble[0] = 0x34;
      expect(SenderKeyMessage.deserialize(otherLowNibble).iteration).toBe(3);
      await expectRejected(otherLowNibble, InvalidSignatureError);

      const mallory = await KeyPair.generate(crypto);
      const parsed = SenderKeyMessage.deserialize(next);
      const forged = await SenderKeyMessage.create(
        crypto,
        group.distributionId,
        parsed.chainId,
        parsed.iteration,
        parsed.ciphertext,
        mallory.privateKey,
      );
      await expectRejected(forged.serialize(), InvalidSignatureError);
      // The cached key for the never-delivered iteration 1 survives, too.
      expect(await group.receive(sent[1] as Uint8Array)).toBe('m1');
      expect(await group.receive(next)).toBe('m3');
    });

    it('replays: DuplicatedMessageError', async () => {
      const { group, sent, next, expectRejected } = await setUp();
      await expectRejected(sent[0] as Uint8Array, DuplicatedMessageError);
      await expectRejected(sent[2] as Uint8Array, DuplicatedMessageError);
      expect(await group.receive(next)).toBe('m3');
      const after = await group.receivedRecord();
      await expect(groupDecrypt(crypto, alice, group.receiverStore, next)).rejects.toThrow(DuplicatedMessageError);
      expect(await group.receivedRecord()).toEqual(after);
    });

    it('a jump of more than 25000: TooFarInFutureError', async () => {
      const { group, expectRejected } = await setUp();
      // Signed with Alice's real key, so only the jump can be what is refused.
      const far = await signedMessage(group.senderStore, group.distributionId, {
        iteration: 4 + MAX_FORWARD_JUMPS,
        ciphertext: new Uint8Array(16),
      });
      await expectRejected(far, TooFarInFutureError);
      const farthest = await signedMessage(group.senderStore, group.distributionId, {
        iteration: 0xffffffff,
        ciphertext: new Uint8Array(16),
      });
      await expectRejected(farthest, TooFarInFutureError);
    });

    it('unknown chains and distributions: NoSenderKeyStateError', async () => {
      const { group, expectRejected } = await setUp();
      const state = (await group.senderStore.getSenderKey(alice, group.distributionId))?.currentState();
      const otherChain = await signedMessage(group.senderStore, group.distributionId, {
        chainId: ((state?.chainId as number) + 1) % 2 ** 31,
        iteration: 3,
        ciphertext: new Uint8Array(16),
      });
      await expectRejected(otherChain, NoSenderKeyStateError);

      // Alice re-keyed and the receiver has not seen the new distribution message yet.
      const rekeyed = new InMemorySenderKeyStore();
      await createSenderKeyDistributionMessage(crypto, alice, group.distributionId, rekeyed);
      await expectRejected(
        await groupEncrypt(crypto, alice, group.distributionId, rekeyed, utf8('new')),
        NoSenderKeyStateError,
      );

      const otherDistribution = newDistributionId();
      const stranger = new InMemorySenderKeyStore();
      await createSenderKeyDistributionMessage(crypto, alice, otherDistribution, stranger);
      await expectRejected(
        await groupEncrypt(crypto, alice, otherDistribution, stranger, utf8('?')),
        NoSenderKeyStateError,
      );
    });

    it('validly signed ciphertext that does not decrypt: InvalidMessageError', async () => {
      const { group, next, expectRejected } = await setUp();
      const iteration = 3;
      // Derive the real key for iteration 3 and encrypt a block whose padding byte is 0x00.
      let chainKey = (await processedChain(group.skdm)).chainKey;
      while (chainKey.iteration < iteration) chainKey = await chainKey.next(crypto);
      const { iv, cipherKey } = await senderMessageKeys(crypto, await chainKey.messageKeySeed(crypto));
      const cipher = createCipheriv('aes-256-cbc', cipherKey, iv).setAutoPadding(false);
      const badPadding = new Uint8Array(Buffer.concat([cipher.update(new Uint8Array(16)), cipher.final()]));

      for (const ciphertext of [badPadding, new Uint8Array(15), new Uint8Array(0)]) {
        await expectRejected(
          await signedMessage(group.senderStore, group.distributionId, { iteration, ciphertext }),
          InvalidMessageError,
        );
      }
      expect(await group.receive(next)).toBe('m3');
    });

    it('truncated and garbage bytes: typed decode errors', async () => {
      const { group, next, expectRejected } = await setUp();
      for (let length = 0; length < next.length; length += 7) {
        await expectRejected(next.subarray(0, length), InvalidMessageError);
      }
      const legacy = next.slice();
      legacy[0] = 0x23;
      await expectRejected(legacy, LegacyCiphertextVersionError);
      const future = next.slice();
      future[0] = 0x43;
      await expectRejected(future, UnrecognizedVersionError);
      const random = seededBytes(7);
      for (let i = 0; i < 20; i++) {
        const garbage = random(70 + i * 13);
        garbage[0] = 0x33;
        await expectRejected(garbage, InvalidMessageError);
      }
      expect(await group.receive(next)).toBe('m3');
    });

    /** The chain a receiver gets from `skdm`, as stored. */
    async function processedChain(skdm: SenderKeyDistributionMessage) {
      const store = new InMemorySenderKeyStore();
      await processSenderKeyDistributionMessage(crypto, alice, skdm, store);
      const state = (await store.getSenderKey(alice, skdm.distributionId))?.currentState();
      if (!state) throw new Error('no state');
      return state;
    }
  });

  describe('decoders', () => {
    it('reject every truncation of a SenderKeyMessage, ours and libsignal’s', async () => {
      const group = await hushGroup();
      const ours = await group.send('truncate me');
      const libStore = new LibsignalSenderKeyStore();
      const distributionId = newDistributionId();
      await Signal.SenderKeyDistributionMessage.create(libAlice, distributionId, libStore);
      const theirs = (await Signal.groupEncrypt(libAlice, distributionId, libStore, buf(utf8('and me')))).serialize();
      for (const message of [ours, theirs]) {
        expect(SenderKeyMessage.deserialize(message).serialize()).toEqual(new Uint8Array(message));
        for (let length = 0; length < message.length; length++) {
          expectTypedDecodeError(() => SenderKeyMessage.deserialize(message.subarray(0, length)));
        }
      }
    });

    it('reject every truncation of a SenderKeyDistributionMessage, ours and libsignal’s', async () => {
      const group = await hushGroup();
      const theirs = (
        await Signal.SenderKeyDistributionMessage.create(libAlice, newDistributionId(), new LibsignalSenderKeyStore())
      ).serialize();
      for (const message of [group.skdm.serialize(), theirs]) {
        expect(SenderKeyDistributionMessage.deserialize(message).serialize()).toEqual(new Uint8Array(message));
        for (let length = 0; length < message.length; length++) {
          expectTypedDecodeError(() => SenderKeyDistributionMessage.deserialize(message.subarray(0, length)));
        }
      }
    });

    it('check the version byte: high nibble exactly 3', async () => {
      const group = await hushGroup();
      const message = await group.send('x');
      const skdm = group.skdm.serialize();
      for (const [versionByte, errorClass] of [
        [0x23, LegacyCiphertextVersionError],
        [0x03, LegacyCiphertextVersionError],
        [0x43, UnrecognizedVersionError],
        [0xf3, UnrecognizedVersionError],
      ] as const) {
        const badMessage = message.slice();
        badMessage[0] = versionByte;
        expect(() => SenderKeyMessage.deserialize(badMessage)).toThrow(errorClass);
        const badSkdm = skdm.slice();
        badSkdm[0] = versionByte;
        expect(() => SenderKeyDistributionMessage.deserialize(badSkdm)).toThrow(errorClass);
      }
      const lowNibble = skdm.slice();
      lowNibble[0] = 0x3f;
      expect(SenderKeyDistributionMessage.deserialize(lowNibble).chainId).toBe(group.skdm.chainId);
    });

    it('check SenderKeyDistributionMessage field sizes and presence', async () => {
      const signingKey = (await KeyPair.generate(crypto)).publicKey.serialize();
      const uuid = crypto.randomBytes(16);
      const encode = (fields: {
        uuid?: Uint8Array;
        chainKey?: Uint8Array;
        signingKey?: Uint8Array;
        chainId?: number;
      }) => {
        const writer = new BinaryWriter();
        if (fields.uuid) writer.tag(1, 2).bytes(fields.uuid);
        if (fields.chainId !== undefined) writer.tag(2, 0).uint32(fields.chainId);
        writer.tag(3, 0).uint32(0);
        if (fields.chainKey) writer.tag(4, 2).bytes(fields.chainKey);
        if (fields.signingKey) writer.tag(5, 2).bytes(fields.signingKey);
        const proto = writer.finish();
        const out = new Uint8Array(1 + proto.length);
        out[0] = 0x33;
        out.set(proto, 1);
        return out;
      };
      const good = { uuid, chainKey: new Uint8Array(32), signingKey, chainId: 7 };
      expect(SenderKeyDistributionMessage.deserialize(encode(good)).chainId).toBe(7);
      const wrongKeyType = signingKey.slice();
      wrongKeyType[0] = 0x06;
      for (const bad of [
        { ...good, chainKey: new Uint8Array(31) },
        { ...good, chainKey: new Uint8Array(33) },
        { ...good, signingKey: signingKey.subarray(0, 32) },
        { ...good, signingKey: new Uint8Array([...signingKey, 0]) },
        { ...good, signingKey: wrongKeyType },
        { ...good, uuid: uuid.subarray(0, 15) },
        { ...good, uuid: undefined },
        { ...good, chainId: undefined },
      ]) {
        expect(() => SenderKeyDistributionMessage.deserialize(encode(bad))).toThrow(InvalidMessageError);
      }
    });

    it('reject random garbage with typed errors', () => {
      const random = seededBytes(42);
      for (let i = 0; i < 300; i++) {
        const garbage = random(i % 150);
        // Half the samples get a valid version byte so that the protobuf parser is exercised.
        if (i % 2 === 0 && garbage.length > 0) garbage[0] = 0x33;
        expectTypedDecodeError(() => SenderKeyMessage.deserialize(garbage));
        expectTypedDecodeError(() => SenderKeyDistributionMessage.deserialize(garbage));
        expect(() => SenderKeyRecord.deserialize(garbage)).toThrow(InvalidMessageError);
      }
    });

    it('round-trip records, and reject corrupt ones with InvalidMessageError', async () => {
      const group = await hushGroup();
      const messages = [];
      for (let i = 0; i < 4; i++) messages.push(await group.send(`m${i}`));
      await group.receive(messages[3] as Uint8Array);
      const received = (await group.receivedRecord()) as Uint8Array;
      const sending = (await group.senderStore.getSenderKey(alice, group.distributionId))?.serialize() as Uint8Array;
      expect(SenderKeyRecord.deserialize(sending).currentState()?.signingPrivateKey).toBeInstanceOf(SeededSigningKey);
      expect(SenderKeyRecord.deserialize(received).currentState()?.skippedSeeds.size).toBe(3);
      expect(new SenderKeyRecord().serialize()).toEqual(new Uint8Array([0x08, 0x02]));

      for (const record of [received, sending]) {
        expect(SenderKeyRecord.deserialize(record).serialize()).toEqual(record);
        for (let length = 0; length < record.length; length++) {
          const prefix = record.subarray(0, length);
          // A cut between top-level fields is a valid record with fewer states; any other cut is corrupt.
          let parsed: SenderKeyRecord | undefined;
          try {
            parsed = SenderKeyRecord.deserialize(prefix);
          } catch (error) {
            expect(error).toBeInstanceOf(InvalidMessageError);
          }
          if (parsed) expect(parsed.serialize()).toEqual(prefix);
        }
      }
      const otherVersion = received.slice();
      otherVersion[1] = 0x03;
      expect(() => SenderKeyRecord.deserialize(otherVersion)).toThrow(InvalidMessageError);
      // A sending state with both kinds of private key (fields 5 and 7) is corrupt.
      const seeded = await SeededSigningKey.generate(crypto);
      const bothKeys = handWrittenRecord(2, seeded.publicKey, [
        [5, crypto.randomBytes(32)],
        [7, seeded.privateKey.serialize()],
      ]);
      expect(() => SenderKeyRecord.deserialize(bothKeys)).toThrow(InvalidMessageError);
      const unknownField = new Uint8Array([...received, 0x18, 0x01]);
      expect(() => SenderKeyRecord.deserialize(unknownField)).toThrow(InvalidMessageError);
      const libRecord = new LibsignalSenderKeyStore();
      await Signal.SenderKeyDistributionMessage.create(libAlice, group.distributionId, libRecord);
      const theirs = (await libRecord.getSenderKey(libAlice, group.distributionId))?.serialize() as Uint8Array;
      expect(() => SenderKeyRecord.deserialize(theirs)).toThrow(InvalidMessageError);
    });
  });
});
