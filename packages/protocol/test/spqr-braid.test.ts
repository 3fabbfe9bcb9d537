import { WireType } from '@bufbuild/protobuf/wire';
import { describe, expect, it } from 'vitest';
import { toHex } from '../src/bytes.ts';
import type { CryptoProvider } from '../src/crypto/provider.ts';
import { InvalidMacError, InvalidMessageError, type ProtocolError } from '../src/errors.ts';
import { BinaryWriter, readProto } from '../src/proto.ts';
import { BRAID_STATE_KINDS, type BraidStateKind } from '../src/spqr/braid.ts';
import { ChainDirection } from '../src/spqr/chain.ts';
import { type SpqrMessage, SpqrMessageType, decodeSpqrMessage, encodeSpqrMessage } from '../src/spqr/message.ts';
import { type SpqrState, cloneSpqrState, initSpqr, spqrRecv, spqrSend } from '../src/spqr/ratchet.ts';
import { readSpqrState, serializeSpqrState } from '../src/spqr/serialize.ts';
import { providers } from './providers.ts';
import { prng } from './support/conversation.ts';

/*
 * Two Hush SPQR ratchets (braid + chain, no Double Ratchet) driving each other. Every message's
 * key must be the same on both sides; epochs must advance; every state must survive a
 * serialization round trip; a message that fails must leave the receiver as it was.
 */

interface Side {
  name: string;
  state: SpqrState;
}

interface Wire {
  from: Side;
  bytes: Uint8Array;
  key: Uint8Array;
  message: SpqrMessage;
}

async function pair(crypto: CryptoProvider): Promise<[Side, Side]> {
  const authKey = crypto.randomBytes(32);
  return [
    { name: 'A', state: await initSpqr(crypto, authKey, ChainDirection.A2B) },
    { name: 'B', state: await initSpqr(crypto, authKey, ChainDirection.B2A) },
  ];
}

/** Serializes, reads back, and checks that the bytes are stable: the state to go on with. */
function roundTrip(state: SpqrState): SpqrState {
  const bytes = serializeSpqrState(state);
  const read = readSpqrState(bytes);
  expect(toHex(serializeSpqrState(read))).toBe(toHex(bytes));
  return read;
}

class Driver {
  readonly visited = new Set<BraidStateKind>();
  /** Sequence number of the first message carrying each epoch label. */
  readonly firstSeen = new Map<number, number>();
  sent = 0;

  constructor(
    readonly crypto: CryptoProvider,
    readonly roundTrips: boolean,
  ) {}

  private note(side: Side): void {
    this.visited.add(side.state.braid.kind);
    if (this.roundTrips) side.state = roundTrip(side.state);
  }

  async send(from: Side): Promise<Wire> {
    const out = await spqrSend(this.crypto, from.state);
    from.state = out.state;
    this.note(from);
    const message = decodeSpqrMessage(out.message);
    if (!this.firstSeen.has(message.epoch)) this.firstSeen.set(message.epoch, this.sent);
    this.sent++;
    return { from, bytes: out.message, key: out.key, message };
  }

  async deliver(to: Side, wire: Wire): Promise<void> {
    const got = await spqrRecv(this.crypto, to.state, wire.bytes);
    expect(toHex(got.key)).toBe(toHex(wire.key));
    to.state = got.state;
    this.note(to);
  }
}

/** Expects `receive` to fail with `type` (and `pattern`) and to leave `side` exactly as it was. */
async function expectRejected(
  crypto: CryptoProvider,
  side: Side,
  bytes: Uint8Array,
  type: new (...args: never[]) => ProtocolError,
  pattern?: RegExp,
): Promise<void> {
  const before = toHex(serializeSpqrState(side.state));
  const error = await spqrRecv(crypto, side.state, bytes).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(type);
  if (pattern) expect((error as Error).message).toMatch(pattern);
  expect(toHex(serializeSpqrState(side.state))).toBe(before);
}

function tamperChunk(bytes: Uint8Array): Uint8Array {
  const message = decodeSpqrMessage(bytes);
  if (!message.chunk) throw new Error('no chunk to tamper with');
  const data = message.chunk.data.slice();
  data[7] = (data[7] as number) ^ 0x10;
  return encodeSpqrMessage({ ...message, chunk: { index: message.chunk.index, data } });
}

/** Ping-pong from A until `until` says stop (checked after every message), with a limit. */
async function pingPongUntil(
  driver: Driver,
  a: Side,
  b: Side,
  until: (w: Wire) => boolean,
  limit = 400,
): Promise<Wire> {
  let from = a;
  for (let i = 0; i < limit; i++) {
    const wire = await driver.send(from);
    if (until(wire)) return wire;
    await driver.deliver(from === a ? b : a, wire);
    from = from === a ? b : a;
  }
  throw new Error('condition not reached');
}

/** A serialized SPQR state with some fields of its braid left out. */
function withoutBraidFields(bytes: Uint8Array, drop: number[]): Uint8Array {
  const writer = new BinaryWriter();
  readProto(bytes, 'test', (f) => {
    if (f.no !== 3) {
      writer.tag(f.no, f.wireType);
      if (f.wireType === WireType.Varint) writer.uint64(f.uint64());
      else writer.bytes(f.bytes());
      return;
    }
    const braid = new BinaryWriter();
    readProto(f.bytes(), 'test', (g) => {
      if (drop.includes(g.no)) return;
      braid.tag(g.no, g.wireType);
      if (g.wireType === WireType.Varint) braid.uint64(g.uint64());
      else braid.bytes(g.bytes());
    });
    writer.tag(3, WireType.LengthDelimited).bytes(braid.finish());
  });
  return writer.finish();
}

describe.each(providers)('SPQR braid between two Hush ratchets with the $name provider', (crypto) => {
  it('ping-pong: the same keys on both sides, epochs at libsignal’s pace, states round-trip', async () => {
    const [a, b] = await pair(crypto);
    const driver = new Driver(crypto, true);
    let from = a;
    for (let i = 0; i < 86 + 3 * 87 + 5; i++) {
      await driver.deliver(from === a ? b : a, await driver.send(from));
      from = from === a ? b : a;
    }
    expect([...driver.firstSeen.entries()]).toEqual([
      [1, 0],
      [2, 86],
      [3, 173],
      [4, 260],
      [5, 347],
    ]);
    // Roles swap every epoch: epoch 2's header came from B.
    expect(a.state.braid.epoch).toBe(5);
    expect(b.state.braid.epoch).toBe(5);
  });

  it('random bursts, reordering and loss: all 11 states visited and round-tripped', async () => {
    const [a, b] = await pair(crypto);
    const driver = new Driver(crypto, true);
    const seed = 20250;
    const random = prng(seed);
    for (let turn = 0; driver.sent < 1500; turn++) {
      const from = turn % 2 === 0 ? a : b;
      const to = from === a ? b : a;
      // Long bursts let one side finish sending its ek before ct1 is acknowledged (and the reverse).
      const burst = 1 + Math.floor(random() * (random() < 0.3 ? 45 : 6));
      const wires: Wire[] = [];
      for (let i = 0; i < burst; i++) wires.push(await driver.send(from));
      // Shuffle (one side's labels cannot change within a burst) and lose 10 %.
      for (let i = wires.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [wires[i], wires[j]] = [wires[j] as Wire, wires[i] as Wire];
      }
      for (const wire of wires) if (random() >= 0.1) await driver.deliver(to, wire);
    }
    expect([...driver.visited].sort(), `seed ${seed}`).toEqual([...BRAID_STATE_KINDS].sort());
    expect(Math.min(a.state.braid.epoch, b.state.braid.epoch), `seed ${seed}`).toBeGreaterThanOrEqual(5);
  });

  it('a clone is independent: going on from a clone leaves the original as it was', async () => {
    const [a, b] = await pair(crypto);
    const driver = new Driver(crypto, false);
    await pingPongUntil(driver, a, b, () => b.state.braid.kind === 'Ct1Sampled');
    const before = toHex(serializeSpqrState(b.state));
    const copy: Side = { name: 'B copy', state: cloneSpqrState(b.state) };
    await driver.deliver(copy, await driver.send(a));
    await driver.send(copy);
    expect(toHex(serializeSpqrState(b.state))).toBe(before);
  });

  it('a tampered header chunk fails the header MAC with no state change; a parity chunk then completes the header', async () => {
    const [a, b] = await pair(crypto);
    const driver = new Driver(crypto, false);
    for (let i = 0; i < 2; i++) await driver.deliver(b, await driver.send(a)); // Hdr chunks 0 and 1
    const third = await driver.send(a); // Hdr chunk 2: with it B has enough to decode
    expect(third.message).toMatchObject({ type: SpqrMessageType.Hdr, chunk: { index: 2 } });
    await expectRejected(crypto, b, tamperChunk(third.bytes), InvalidMacError, /MAC verification failed/);
    expect(b.state.braid.kind).toBe('NoHeaderReceived');
    const parity = await driver.send(a); // Hdr chunk 3
    await driver.deliver(b, parity);
    expect(b.state.braid.kind).toBe('HeaderReceived');
    // And the exchange goes on to the next epoch.
    await pingPongUntil(driver, b, a, (w) => w.message.epoch === 2);
  });

  it('a tampered ct2 chunk fails the ciphertext MAC with no state change; a parity chunk then completes the epoch', async () => {
    const [a, b] = await pair(crypto);
    const driver = new Driver(crypto, false);
    // Run until B has sent Ct2 chunks 0–3 (A in EkSentCt1Received, one chunk short).
    const fifth = await pingPongUntil(
      driver,
      a,
      b,
      (w) => w.message.type === SpqrMessageType.Ct2 && w.message.chunk?.index === 4,
    );
    expect(a.state.braid.kind).toBe('EkSentCt1Received');
    await expectRejected(crypto, a, tamperChunk(fifth.bytes), InvalidMacError, /MAC verification failed/);
    expect(a.state.braid).toMatchObject({ kind: 'EkSentCt1Received', epoch: 1 });
    const parity = await driver.send(b); // Ct2 chunk 5
    await driver.deliver(a, parity);
    expect(a.state.braid).toMatchObject({ kind: 'NoHeaderReceived', epoch: 2 });
    expect(a.state.chain.currentEpoch).toBe(1);
  });

  it('a tampered ek chunk is erroneous data with no state change; a later chunk completes the ek', async () => {
    const [a, b] = await pair(crypto);
    const driver = new Driver(crypto, false);
    // A sends EkCt1Ack chunk 35 last in ping-pong: the one that completes B's ek.
    const last = await pingPongUntil(
      driver,
      a,
      b,
      (w) => w.message.type === SpqrMessageType.EkCt1Ack && w.message.chunk?.index === 35,
    );
    expect(b.state.braid.kind).toBe('Ct1Acknowledged');
    await expectRejected(crypto, b, tamperChunk(last.bytes), InvalidMessageError, /erroneous data/);
    expect(b.state.braid.kind).toBe('Ct1Acknowledged');
    await driver.deliver(b, await driver.send(a)); // chunk 36, parity
    expect(b.state.braid.kind).toBe('Ct2Sampled');
  });

  it('an epoch label above the receiver’s is rejected, but for the one that ends Ct2Sampled', async () => {
    const [a, b] = await pair(crypto);
    const driver = new Driver(crypto, false);
    const first = await driver.send(a);
    const relabel = (wire: Wire, epoch: number) => encodeSpqrMessage({ ...wire.message, epoch });
    await expectRejected(crypto, b, relabel(first, 2), InvalidMessageError, /epoch not in valid range: 2/);
    await driver.deliver(b, first);
    // B in Ct2Sampled accepts epoch 2 (A's first message after decapsulating), not epoch 3.
    await pingPongUntil(driver, b, a, () => b.state.braid.kind === 'Ct2Sampled' && a.state.braid.epoch === 2);
    const next = await driver.send(a);
    expect(next.message.epoch).toBe(2);
    await expectRejected(crypto, b, relabel(next, 3), InvalidMessageError, /epoch not in valid range: 3/);
    await driver.deliver(b, next);
    expect(b.state.braid).toMatchObject({ kind: 'KeysUnsampled', epoch: 2 });
  });

  it('malformed framing, a reused index and an unknown version are rejected with no state change', async () => {
    const [a, b] = await pair(crypto);
    const driver = new Driver(crypto, false);
    const first = await driver.send(a);
    const bad = [
      new Uint8Array(0),
      Uint8Array.of(1),
      Uint8Array.of(1, 1, 1),
      Uint8Array.of(1, 0, 1, 0), // epoch 0
      Uint8Array.of(1, 1, 1, 7), // type 7
      Uint8Array.of(1, 1, 1, 1, 0, 1, 2, 3), // Hdr with a short chunk
      Uint8Array.of(2, ...first.bytes.subarray(1)), // version 2
      Uint8Array.of(0, ...first.bytes.subarray(1)), // version 0
    ];
    for (const bytes of bad) await expectRejected(crypto, b, bytes, InvalidMessageError);
    await driver.deliver(b, first);
    await expectRejected(crypto, b, first.bytes, InvalidMessageError, /already requested/);
  });

  it('a stored state that does not fit its braid state is refused when read', async () => {
    const [a, b] = await pair(crypto);
    const driver = new Driver(crypto, false);
    await pingPongUntil(driver, a, b, () => a.state.braid.kind === 'HeaderSent');
    const good = serializeSpqrState(a.state);
    expect(readSpqrState(good).braid.kind).toBe('HeaderSent');
    const bad = [
      good.subarray(0, good.length - 1),
      serializeSpqrState({ ...a.state, braid: { ...a.state.braid, epoch: 0 } }),
      withoutBraidFields(good, [12]), // HeaderSent without its key-pair seed
      withoutBraidFields(good, [10]), // … without its ek encoder
      withoutBraidFields(good, [11]), // … without its ct1 decoder
      serializeSpqrState({ ...a.state, chain: { ...a.state.chain, links: [] } }),
      serializeSpqrState({ ...a.state, chain: { ...a.state.chain, sendEpoch: 4 } }),
    ];
    for (const bytes of bad) expect(() => readSpqrState(bytes)).toThrow(InvalidMessageError);
  });
});
