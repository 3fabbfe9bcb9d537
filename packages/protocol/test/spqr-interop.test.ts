import { describe, expect, it } from 'vitest';
import { SpqrMessageType } from '../src/spqr/message.ts';
import { providers } from './providers.ts';
import { converse, isHdrChunk, prng } from './support/conversation.ts';
import { HushPeer, LibsignalPeer, type Peer } from './support/peers.ts';

/*
 * The Triple Ratchet against libsignal-client 0.103 (spqr 1.6.0) with the ML-KEM braid running:
 * epochs must advance, as read from SignalMessage field 5 on the wire. Every run is seeded; a
 * failure names its seed.
 */

const seedOf = (label: string) => [...label].reduce((h, c) => (Math.imul(h, 31) + c.charCodeAt(0)) >>> 0, 7);

describe.each(providers)('SPQR braid interop with the $name provider', (crypto) => {
  const pairings: [string, () => Promise<[Peer, Peer]>][] = [
    ['Hush initiator, libsignal responder', async () => [await HushPeer.create(crypto), new LibsignalPeer()]],
    ['libsignal initiator, Hush responder', async () => [new LibsignalPeer(), await HushPeer.create(crypto)]],
  ];

  for (const [label, make] of pairings) {
    it(`${label}: ping-pong, 450 messages, an epoch every 87 messages`, async () => {
      const [a, b] = await make();
      await a.startSession(b);
      const result = await converse(a, b, { total: 450, random: prng(seedOf(label)) });
      // As libsignal with itself: epoch 1 lasts 86 messages (0–85), every later epoch 87.
      expect(result.firstSeen.get(2)).toBe(86);
      for (let e = 3; e <= 5; e++) expect(result.firstSeen.get(e), `epoch ${e}`).toBe(86 + 87 * (e - 2));
      expect(Math.max(...result.maxEpoch.values())).toBeGreaterThanOrEqual(5);
    });

    it(`${label}: bursts with reordering`, async () => {
      const [a, b] = await make();
      await a.startSession(b);
      const seed = seedOf(`${label} bursts`);
      const random = prng(seed);
      const result = await converse(a, b, {
        total: 700,
        random,
        alternate: false,
        burst: () => 1 + Math.floor(random() * 12),
        reorder: true,
      });
      expect(result.outOfOrder, `seed ${seed}`).toBeGreaterThan(50);
      expect(Math.min(...result.maxEpoch.values()), `seed ${seed}`).toBeGreaterThanOrEqual(3);
    });

    it(`${label}: 25 % of messages lost`, async () => {
      const [a, b] = await make();
      await a.startSession(b);
      const seed = seedOf(`${label} loss`);
      const random = prng(seed);
      const result = await converse(a, b, {
        total: 600,
        random,
        burst: () => 1 + Math.floor(random() * 3),
        drop: () => random() < 0.25,
      });
      expect(result.dropped, `seed ${seed}`).toBeGreaterThan(100);
      expect(Math.min(...result.maxEpoch.values()), `seed ${seed}`).toBeGreaterThanOrEqual(3);
    });

    it(`${label}: headers decoded from parity chunks only (Hdr chunks 0–2 never arrive)`, async () => {
      const [a, b] = await make();
      await a.startSession(b);
      const result = await converse(a, b, {
        total: 330,
        random: prng(seedOf(`${label} parity`)),
        drop: (sent) => isHdrChunk(sent, 3),
      });
      // Epoch 1's header went from the initiator, epoch 2's from the responder, epoch 3's from the
      // initiator again: each side decoded a header from chunks 3, 4 and 5.
      expect(Math.min(...result.maxEpoch.values())).toBeGreaterThanOrEqual(4);
      for (const peer of [a, b]) {
        const hdr = result.sent.filter((s) => s.from === peer && s.spqr.type === SpqrMessageType.Hdr);
        expect(hdr.some((s) => s.spqr.chunk?.index === 5)).toBe(true);
      }
    });
  }
});
