import { describe, expect, it } from 'vitest';
import { CiphertextMessageType } from '../src/index.ts';
import { providers } from './providers.ts';
import { HushPeer, LibsignalPeer, type Peer, type WireMessage } from './support/peers.ts';

const text = new TextEncoder();

/** A small seeded PRNG so a failing interleaving can be replayed from its seed. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface InFlight {
  message: WireMessage;
  plaintext: Uint8Array;
}

/**
 * Runs `total` messages between initiator and responder in a random interleaving of direction,
 * with bursts and out-of-order delivery (each delivery picks one of the three oldest messages in
 * flight), and checks every plaintext on arrival. Returns how many messages were delivered out of
 * order and how many direction changes (DH ratchet steps) happened.
 */
async function converse(initiator: Peer, responder: Peer, total: number, seed: number) {
  const random = prng(seed);
  const queues = new Map<Peer, InFlight[]>([
    [initiator, []],
    [responder, []],
  ]);
  const other = (p: Peer) => (p === initiator ? responder : initiator);
  let sent = 0;
  let outOfOrder = 0;
  let turns = 0;
  let lastSender: Peer | undefined;
  let responderHasSession = false;

  const deliverOne = async (from: Peer) => {
    const queue = queues.get(from) as InFlight[];
    const index = Math.floor(random() * Math.min(3, queue.length));
    if (index > 0) outOfOrder++;
    const [item] = queue.splice(index, 1) as [InFlight];
    const plaintext = await other(from).decrypt(from, item.message);
    expect(Buffer.from(plaintext).equals(Buffer.from(item.plaintext))).toBe(true);
    if (from === initiator) responderHasSession = true;
  };

  while (sent < total) {
    // The responder can only send once a message from the initiator created its session.
    const from = !responderHasSession || random() < 0.5 ? initiator : responder;
    if (from !== lastSender) turns++;
    lastSender = from;
    const burst = 1 + Math.floor(random() * 4);
    for (let i = 0; i < burst && sent < total; i++) {
      const plaintext = text.encode(
        `message ${sent} from ${from === initiator ? 'initiator' : 'responder'} ${'x'.repeat(Math.floor(random() * 300))}`,
      );
      const message = await from.encrypt(other(from), plaintext);
      (queues.get(from) as InFlight[]).push({ message, plaintext });
      sent++;
    }
    for (const sender of [initiator, responder]) {
      const queue = queues.get(sender) as InFlight[];
      const deliveries = Math.floor(random() * (queue.length + 1));
      for (let i = 0; i < deliveries; i++) await deliverOne(sender);
    }
  }
  for (const sender of [initiator, responder]) {
    while ((queues.get(sender) as InFlight[]).length > 0) await deliverOne(sender);
  }
  return { outOfOrder, turns };
}

describe.each(providers)('1:1 sessions with the $name provider', (crypto) => {
  const pairings: [string, () => Promise<[Peer, Peer]>][] = [
    ['Hush → libsignal', async () => [await HushPeer.create(crypto), new LibsignalPeer()]],
    ['libsignal → Hush', async () => [new LibsignalPeer(), await HushPeer.create(crypto)]],
    ['Hush → Hush', async () => [await HushPeer.create(crypto), await HushPeer.create(crypto)]],
  ];

  for (const [label, make] of pairings) {
    for (const oneTimePreKey of [true, false]) {
      it(`${label} session setup ${oneTimePreKey ? 'with' : 'without'} a one-time prekey`, async () => {
        const [a, b] = await make();
        await a.startSession(b, { oneTimePreKey });
        const first = await a.encrypt(b, text.encode('first'));
        expect(first.type).toBe(CiphertextMessageType.PreKey);
        // Until the responder answers, every message is PreKey-wrapped.
        const second = await a.encrypt(b, text.encode('second'));
        expect(second.type).toBe(CiphertextMessageType.PreKey);
        expect(new TextDecoder().decode(await b.decrypt(a, second))).toBe('second');
        expect(new TextDecoder().decode(await b.decrypt(a, first))).toBe('first');
        const reply = await b.encrypt(a, text.encode('reply'));
        expect(reply.type).toBe(CiphertextMessageType.Whisper);
        expect(new TextDecoder().decode(await a.decrypt(b, reply))).toBe('reply');
        const after = await a.encrypt(b, text.encode('after'));
        expect(after.type).toBe(CiphertextMessageType.Whisper);
        expect(new TextDecoder().decode(await b.decrypt(a, after))).toBe('after');
      });
    }

    it(`${label}: 1,000 messages, random interleaving, bursts, out-of-order delivery`, async () => {
      const [a, b] = await make();
      await a.startSession(b);
      const seed = Math.floor(Math.random() * 2 ** 31);
      const { outOfOrder, turns } = await converse(a, b, 1000, seed);
      // The run must actually exercise skipped keys and DH ratchet steps.
      expect(outOfOrder, `seed ${seed}`).toBeGreaterThan(50);
      expect(turns, `seed ${seed}`).toBeGreaterThan(50);
    });
  }

  it('replies on two sessions decrypt in either order (archived state promoted, then the other found)', async () => {
    for (const [label, make] of pairings) {
      const [alice, bob] = await make();
      await bob.startSession(alice);
      const m1 = await bob.encrypt(alice, text.encode('m1'));
      await bob.startSession(alice); // a second session; the first is archived
      const m2 = await bob.encrypt(alice, text.encode('m2'));
      await alice.decrypt(bob, m1);
      const r1 = await alice.encrypt(bob, text.encode('reply on 1'));
      await alice.decrypt(bob, m2);
      const r2 = await alice.encrypt(bob, text.encode('reply on 2'));
      expect(new TextDecoder().decode(await bob.decrypt(alice, r1)), label).toBe('reply on 1');
      expect(new TextDecoder().decode(await bob.decrypt(alice, r2)), label).toBe('reply on 2');
    }
  });

  it('Hush ↔ libsignal: both sides initiate at once, and both sessions keep working', async () => {
    const hush = await HushPeer.create(crypto);
    const signal = new LibsignalPeer();
    await hush.startSession(signal);
    await signal.startSession(hush);
    const fromHush = await hush.encrypt(signal, text.encode('from hush'));
    const fromSignal = await signal.encrypt(hush, text.encode('from signal'));
    expect(new TextDecoder().decode(await signal.decrypt(hush, fromHush))).toBe('from hush');
    expect(new TextDecoder().decode(await hush.decrypt(signal, fromSignal))).toBe('from signal');
    for (let i = 0; i < 6; i++) {
      const x = await hush.encrypt(signal, text.encode(`h${i}`));
      expect(new TextDecoder().decode(await signal.decrypt(hush, x))).toBe(`h${i}`);
      const y = await signal.encrypt(hush, text.encode(`s${i}`));
      expect(new TextDecoder().decode(await hush.decrypt(signal, y))).toBe(`s${i}`);
    }
  });
});
