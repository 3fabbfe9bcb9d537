import { create, equals, toBinary } from '@bufbuild/protobuf';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { describe, expect, it } from 'vitest';
import {
  CONTENT_PADDING_BLOCK,
  CONTENT_VERSION,
  type Content,
  ContentError,
  type ContentErrorReason,
  ContentSchema,
  GroupUpdate_Action,
  ReceiptMessage_Type,
  TypingMessage_Action,
  decodeContent,
  encodeContent,
  expirationTimerContent,
  groupUpdateContent,
  padContent,
  reactionContent,
  receiptContent,
  retryRequestContent,
  senderKeyDistributionContent,
  textContent,
  typingContent,
  unpadContent,
} from '../src/content/content.ts';

const ALICE = '6f1c1a52-4a43-4a3e-9d1c-0d0b8f8c2a11';
const BOB = 'b7d3e0c4-2f0e-4a55-8d2b-5e7c1f9a3b22';
const GROUP_ID = Uint8Array.from({ length: 32 }, (_, i) => i + 1);
const NOW = 1_764_000_000_000;

function roundTrip(content: Content): Content {
  const encoded = encodeContent(content);
  expect(encoded.length % CONTENT_PADDING_BLOCK).toBe(0);
  const decoded = decodeContent(encoded);
  expect(equals(ContentSchema, decoded, content)).toBe(true);
  return decoded;
}

function expectContentError(fn: () => unknown, reason: ContentErrorReason): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(ContentError);
  expect((caught as ContentError).reason).toBe(reason);
}

/** Content bytes written by hand: `version`, then any extra fields. */
function rawContent(version: number, extra?: (w: BinaryWriter) => void): Uint8Array {
  const w = new BinaryWriter();
  if (version !== 0) w.tag(1, 0).uint32(version);
  extra?.(w);
  return w.finish();
}

describe('content round trips', () => {
  it('text with quote, attachments, group context and timer', () => {
    const decoded = roundTrip(
      textContent({
        timestamp: NOW,
        body: 'hello 👋 world',
        quote: { id: NOW - 5000, author: BOB, text: 'earlier message' },
        attachments: [
          {
            id: 'a1b2c3',
            key: new Uint8Array(64).fill(7),
            digest: new Uint8Array(32).fill(9),
            size: 123_456,
            contentType: 'image/jpeg',
            fileName: 'cat.jpg',
          },
          { id: 'd4e5f6', key: new Uint8Array(64).fill(1), digest: new Uint8Array(32).fill(2), size: 0n },
        ],
        group: { id: GROUP_ID, revision: 3 },
        expireTimer: 3600,
      }),
    );
    expect(decoded.version).toBe(CONTENT_VERSION);
    expect(decoded.body.case).toBe('dataMessage');
    if (decoded.body.case !== 'dataMessage') return;
    const m = decoded.body.value;
    expect(m.timestamp).toBe(BigInt(NOW));
    expect(m.body).toBe('hello 👋 world');
    expect(m.quote?.id).toBe(BigInt(NOW - 5000));
    expect(m.quote?.author).toBe(BOB);
    expect(m.attachments).toHaveLength(2);
    expect(m.attachments[0]?.key).toEqual(new Uint8Array(64).fill(7));
    expect(m.attachments[0]?.size).toBe(123_456n);
    expect(m.attachments[0]?.fileName).toBe('cat.jpg');
    expect(m.attachments[1]?.contentType).toBe('');
    expect(m.group?.id).toEqual(GROUP_ID);
    expect(m.group?.revision).toBe(3);
    expect(m.expireTimer).toBe(3600);
    expect(m.reaction).toBeUndefined();
  });

  it('plain text has no optional parts', () => {
    const decoded = roundTrip(textContent({ timestamp: NOW, body: 'hi' }));
    if (decoded.body.case !== 'dataMessage') throw new Error('wrong case');
    expect(decoded.body.value.quote).toBeUndefined();
    expect(decoded.body.value.group).toBeUndefined();
    expect(decoded.body.value.attachments).toEqual([]);
    expect(decoded.body.value.expireTimer).toBe(0);
  });

  it('reaction and reaction removal', () => {
    for (const remove of [false, true]) {
      const decoded = roundTrip(
        reactionContent({ timestamp: NOW, emoji: '❤️', targetAuthor: BOB, targetTimestamp: NOW - 1, remove }),
      );
      if (decoded.body.case !== 'dataMessage') throw new Error('wrong case');
      const r = decoded.body.value.reaction;
      expect(r).toMatchObject({ emoji: '❤️', targetAuthor: BOB, targetTimestamp: BigInt(NOW - 1), remove });
      expect(decoded.body.value.body).toBe('');
    }
  });

  it('delivery and read receipts', () => {
    const delivery = roundTrip(receiptContent('delivery', [NOW, NOW + 1, BigInt(NOW + 2)]));
    expect(delivery.body.case).toBe('receiptMessage');
    if (delivery.body.case !== 'receiptMessage') return;
    expect(delivery.body.value.type).toBe(ReceiptMessage_Type.DELIVERY);
    expect(delivery.body.value.timestamps).toEqual([BigInt(NOW), BigInt(NOW + 1), BigInt(NOW + 2)]);
    const read = roundTrip(receiptContent('read', [NOW]));
    if (read.body.case !== 'receiptMessage') throw new Error('wrong case');
    expect(read.body.value.type).toBe(ReceiptMessage_Type.READ);
  });

  it('typing started / stopped, 1:1 and group', () => {
    const started = roundTrip(typingContent('started', NOW));
    if (started.body.case !== 'typingMessage') throw new Error('wrong case');
    expect(started.body.value.action).toBe(TypingMessage_Action.STARTED);
    expect(started.body.value.groupId).toEqual(new Uint8Array(0));
    const stopped = roundTrip(typingContent('stopped', NOW, GROUP_ID));
    if (stopped.body.case !== 'typingMessage') throw new Error('wrong case');
    expect(stopped.body.value.action).toBe(TypingMessage_Action.STOPPED);
    expect(stopped.body.value.groupId).toEqual(GROUP_ID);
  });

  it('group updates of every action, with a sender-key distribution', () => {
    const actions = { create: GroupUpdate_Action.CREATE, add: GroupUpdate_Action.ADD } as const;
    const more = { remove: GroupUpdate_Action.REMOVE, leave: GroupUpdate_Action.LEAVE } as const;
    for (const [action, expected] of Object.entries({ ...actions, ...more })) {
      const skdm = action === 'remove' ? new Uint8Array(150).fill(0x33) : undefined;
      const decoded = roundTrip(
        groupUpdateContent({
          timestamp: NOW,
          groupId: GROUP_ID,
          action: action as keyof typeof actions | keyof typeof more,
          revision: 7,
          name: 'Climbing 🧗',
          members: [ALICE, BOB],
          senderKeyDistribution: skdm,
        }),
      );
      if (decoded.body.case !== 'groupUpdate') throw new Error('wrong case');
      const g = decoded.body.value;
      expect(g.action).toBe(expected);
      expect(g.groupId).toEqual(GROUP_ID);
      expect(g.revision).toBe(7);
      expect(g.name).toBe('Climbing 🧗');
      expect(g.members).toEqual([ALICE, BOB]);
      expect(g.senderKeyDistribution).toEqual(skdm ?? new Uint8Array(0));
    }
  });

  it('expiration timer update, 1:1 and group', () => {
    const direct = roundTrip(expirationTimerContent(NOW, 86_400));
    if (direct.body.case !== 'expirationTimerUpdate') throw new Error('wrong case');
    expect(direct.body.value.expireTimer).toBe(86_400);
    expect(direct.body.value.group).toBeUndefined();
    const off = roundTrip(expirationTimerContent(NOW, 0, { id: GROUP_ID, revision: 2 }));
    if (off.body.case !== 'expirationTimerUpdate') throw new Error('wrong case');
    expect(off.body.value.expireTimer).toBe(0);
    expect(off.body.value.group?.id).toEqual(GROUP_ID);
  });

  it('retry request', () => {
    const ratchetKey = Uint8Array.from({ length: 33 }, (_, i) => (i === 0 ? 5 : i));
    const decoded = roundTrip(
      retryRequestContent({ originalTimestamp: NOW, originalType: 3, originalDeviceId: 2, ratchetKey }),
    );
    if (decoded.body.case !== 'retryRequest') throw new Error('wrong case');
    expect(decoded.body.value).toMatchObject({
      originalTimestamp: BigInt(NOW),
      originalType: 3,
      originalDeviceId: 2,
      ratchetKey,
    });
    const senderKey = roundTrip(retryRequestContent({ originalTimestamp: NOW, originalType: 7, originalDeviceId: 1 }));
    if (senderKey.body.case !== 'retryRequest') throw new Error('wrong case');
    expect(senderKey.body.value.ratchetKey).toEqual(new Uint8Array(0));
  });

  it('sender-key distribution', () => {
    const distribution = Uint8Array.from({ length: 140 }, (_, i) => (i * 31) & 0xff);
    const decoded = roundTrip(senderKeyDistributionContent(GROUP_ID, distribution));
    if (decoded.body.case !== 'senderKeyDistribution') throw new Error('wrong case');
    expect(decoded.body.value.groupId).toEqual(GROUP_ID);
    expect(decoded.body.value.distribution).toEqual(distribution);
  });

  it('decoded bytes fields do not alias the input buffer', () => {
    const encoded = encodeContent(senderKeyDistributionContent(GROUP_ID, new Uint8Array(40).fill(0x55)));
    const decoded = decodeContent(encoded);
    encoded.fill(0);
    if (decoded.body.case !== 'senderKeyDistribution') throw new Error('wrong case');
    expect(decoded.body.value.groupId).toEqual(GROUP_ID);
    expect(decoded.body.value.distribution).toEqual(new Uint8Array(40).fill(0x55));
  });

  it('encodeContent writes the current version when none is set', () => {
    const content = create(ContentSchema, { body: { case: 'typingMessage', value: { timestamp: 1n } } });
    expect(content.version).toBe(0);
    expect(decodeContent(encodeContent(content)).version).toBe(CONTENT_VERSION);
    expect(content.version).toBe(0); // not mutated
  });

  it('builders reject timestamps that are not uint64', () => {
    expect(() => typingContent('started', -1)).toThrow(RangeError);
    expect(() => typingContent('started', 1.5)).toThrow(RangeError);
    expect(() => receiptContent('read', [2n ** 64n])).toThrow(RangeError);
  });
});

describe('padding', () => {
  it('pads to a multiple of 160 with 0x80 then zeros, always at least one byte', () => {
    for (const length of [0, 1, 100, 158, 159, 160, 161, 319, 320, 1000]) {
      const bytes = new Uint8Array(length).fill(0x41);
      const padded = padContent(bytes);
      expect(padded.length).toBe(Math.ceil((length + 1) / 160) * 160);
      expect(padded.length % 160).toBe(0);
      expect(padded.length).toBeGreaterThan(length);
      expect(padded[length]).toBe(0x80);
      expect(padded.subarray(length + 1).every((b) => b === 0)).toBe(true);
      expect(unpadContent(padded)).toEqual(bytes);
    }
  });

  it('encoded contents are multiples of 160 bytes and hide lengths within a bucket', () => {
    const sizes = new Map<number, number>();
    for (let n = 0; n <= 700; n++) {
      const encoded = encodeContent(textContent({ timestamp: NOW, body: 'x'.repeat(n) }));
      expect(encoded.length % CONTENT_PADDING_BLOCK).toBe(0);
      sizes.set(encoded.length, (sizes.get(encoded.length) ?? 0) + 1);
    }
    // 701 different texts land in only a handful of sizes, each shared by many lengths.
    expect(sizes.size).toBeLessThanOrEqual(6);
    expect([...sizes.keys()].sort((a, b) => a - b).slice(0, 3)).toEqual([160, 320, 480]);
    expect(Math.min(...[...sizes.values()].slice(0, -1))).toBeGreaterThanOrEqual(140);
    // Two short texts of different lengths are indistinguishable by size.
    expect(encodeContent(textContent({ timestamp: NOW, body: 'ok' })).length).toBe(
      encodeContent(textContent({ timestamp: NOW, body: 'a somewhat longer reply, still short' })).length,
    );
  });

  it('keeps protobuf bytes that end in zeros (the marker comes after them)', () => {
    const bytes = Uint8Array.of(0x0a, 0x02, 0x00, 0x00);
    expect(unpadContent(padContent(bytes))).toEqual(bytes);
    const skdm = new Uint8Array(40); // all-zero bytes field at the very end of the protobuf
    const decoded = decodeContent(encodeContent(senderKeyDistributionContent(GROUP_ID, skdm)));
    if (decoded.body.case !== 'senderKeyDistribution') throw new Error('wrong case');
    expect(decoded.body.value.distribution).toEqual(skdm);
  });

  it('accepts a valid marker at a length that is not a multiple of 160 (other clients may pad differently)', () => {
    const proto = toBinary(ContentSchema, typingContent('started', NOW));
    const unusual = new Uint8Array(proto.length + 7);
    unusual.set(proto);
    unusual[proto.length] = 0x80;
    expect(decodeContent(unusual).body.case).toBe('typingMessage');
  });

  it('rejects missing or bad padding with ContentError(padding)', () => {
    expectContentError(() => decodeContent(new Uint8Array(0)), 'padding');
    expectContentError(() => decodeContent(new Uint8Array(160)), 'padding');
    // The unpadded protobuf (its last byte is not 0x80).
    const proto = toBinary(ContentSchema, textContent({ timestamp: NOW, body: 'hello' }));
    expectContentError(() => decodeContent(proto), 'padding');
    // Marker replaced by another byte.
    const encoded = encodeContent(textContent({ timestamp: NOW, body: 'hello' }));
    const bad = encoded.slice();
    bad[proto.length] = 0x81;
    expectContentError(() => decodeContent(bad), 'padding');
    // Junk after the marker.
    const junk = encoded.slice();
    junk[junk.length - 1] = 0x01;
    expectContentError(() => decodeContent(junk), 'padding');
  });
});

describe('decoding failures', () => {
  it('a truncated protobuf inside valid padding is malformed', () => {
    const proto = toBinary(ContentSchema, textContent({ timestamp: NOW, body: 'hello there' }));
    for (const cut of [1, 3, 5]) {
      expectContentError(() => decodeContent(padContent(proto.subarray(0, proto.length - cut))), 'malformed');
    }
  });

  it('a truncated padded message (marker cut off) is a padding error', () => {
    const encoded = encodeContent(textContent({ timestamp: NOW, body: 'hello there' }));
    const proto = toBinary(ContentSchema, textContent({ timestamp: NOW, body: 'hello there' }));
    expectContentError(() => decodeContent(encoded.subarray(0, proto.length)), 'padding');
  });

  it('garbage is malformed', () => {
    expectContentError(() => decodeContent(padContent(Uint8Array.of(0xff, 0xff, 0xff))), 'malformed');
    expectContentError(() => decodeContent(padContent(Uint8Array.of(0x07))), 'malformed'); // wire type 7
    expectContentError(() => decodeContent(padContent(Uint8Array.of(0x12, 0x7f, 0x01))), 'malformed'); // overlong length
  });

  it('random bytes only ever produce a Content or a ContentError', () => {
    let state = 0x12345678;
    const next = () => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return state >>> 24;
    };
    for (let i = 0; i < 2000; i++) {
      const bytes = Uint8Array.from({ length: next() }, next);
      const input = i % 2 === 0 ? bytes : padContent(bytes);
      try {
        const content = decodeContent(input);
        expect(content.version).toBe(CONTENT_VERSION);
      } catch (e) {
        expect(e).toBeInstanceOf(ContentError);
      }
    }
  });

  it('rejects an unknown or missing major version with ContentError(version)', () => {
    const v2 = create(ContentSchema, { ...textContent({ timestamp: NOW, body: 'from the future' }), version: 2 });
    expectContentError(() => decodeContent(encodeContent(v2)), 'version');
    expectContentError(() => decodeContent(padContent(rawContent(0))), 'version');
    expectContentError(() => decodeContent(padContent(rawContent(0xffff_ffff))), 'version');
  });

  it('rejects uint64 values that a number cannot hold exactly, so Number(timestamp) is safe', () => {
    const max = BigInt(Number.MAX_SAFE_INTEGER);
    expect(decodeContent(encodeContent(receiptContent('read', [max]))).body.value).toMatchObject({ timestamps: [max] });
    expectContentError(() => decodeContent(encodeContent(receiptContent('read', [1n, max + 1n]))), 'malformed');
    expectContentError(() => decodeContent(encodeContent(typingContent('started', 2n ** 64n - 1n))), 'malformed');
    const quote = { id: max + 1n, author: BOB, text: '' };
    expectContentError(() => decodeContent(encodeContent(textContent({ timestamp: 1, body: '', quote }))), 'malformed');
    const attachment = { id: 'x', key: new Uint8Array(64), digest: new Uint8Array(32), size: 2n ** 60n };
    expectContentError(
      () => decodeContent(encodeContent(textContent({ timestamp: 1, body: '', attachments: [attachment] }))),
      'malformed',
    );
  });

  it('a body kind from a later minor revision decodes with no case (to be ignored)', () => {
    const bytes = rawContent(CONTENT_VERSION, (w) => w.tag(99, 2).bytes(Uint8Array.of(1, 2, 3)));
    const content = decodeContent(padContent(bytes));
    expect(content.version).toBe(CONTENT_VERSION);
    expect(content.body.case).toBeUndefined();
  });
});
