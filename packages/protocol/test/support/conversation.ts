/**
 * Drives a 1:1 conversation between two peers and watches SPQR on the wire: every message's
 * SignalMessage field 5 is decoded, so tests can assert the epoch counter each side sends.
 */
import { expect } from 'vitest';
import { CiphertextMessageType, PreKeySignalMessage, SignalMessage } from '../../src/index.ts';
import { type SpqrMessage, SpqrMessageType, decodeSpqrMessage } from '../../src/spqr/message.ts';
import type { Peer, WireMessage } from './peers.ts';

/** A small seeded PRNG so a failing run can be replayed from its seed. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The SPQR message in a wire message's SignalMessage field 5 (unwrapping a PreKey message). */
export function spqrOnWire(message: WireMessage): SpqrMessage {
  const signal =
    message.type === CiphertextMessageType.PreKey
      ? PreKeySignalMessage.deserialize(message.body).fields.message
      : SignalMessage.deserialize(message.body);
  return decodeSpqrMessage(signal.fields.pqRatchet);
}

export interface Sent {
  from: Peer;
  seq: number;
  message: WireMessage;
  plaintext: Uint8Array;
  spqr: SpqrMessage;
}

export interface ConversationOptions {
  /** Messages to send in all. */
  total: number;
  random: () => number;
  /** Messages in the next turn of one side (default 1: ping-pong). */
  burst?: () => number;
  /** Whether sides take turns strictly (default) or the next sender is random. */
  alternate?: boolean;
  /** After a turn, deliver everything in flight in order (default), or a random part out of order. */
  reorder?: boolean;
  /** Messages for which this returns true are lost (never delivered). */
  drop?: (sent: Sent) => boolean;
}

export interface ConversationResult {
  sent: Sent[];
  delivered: number;
  dropped: number;
  outOfOrder: number;
  /** For each epoch label seen on the wire, the sequence number of the first message that carried it. */
  firstSeen: Map<number, number>;
  /** The highest epoch label each side sent. */
  maxEpoch: Map<Peer, number>;
}

const text = new TextEncoder();

/**
 * Runs the conversation and checks every delivered plaintext, and that each side's epoch labels
 * never go down.
 */
export async function converse(
  initiator: Peer,
  responder: Peer,
  options: ConversationOptions,
): Promise<ConversationResult> {
  const { total, random, burst = () => 1, alternate = true, reorder = false, drop = () => false } = options;
  const other = (p: Peer) => (p === initiator ? responder : initiator);
  const inFlight = new Map<Peer, Sent[]>([
    [initiator, []],
    [responder, []],
  ]);
  const result: ConversationResult = {
    sent: [],
    delivered: 0,
    dropped: 0,
    outOfOrder: 0,
    firstSeen: new Map(),
    maxEpoch: new Map([
      [initiator, 0],
      [responder, 0],
    ]),
  };
  let responderHasSession = false;
  let from = responder;

  const deliver = async (sender: Peer, index: number) => {
    const queue = inFlight.get(sender) as Sent[];
    if (index > 0) result.outOfOrder++;
    const [item] = queue.splice(index, 1) as [Sent];
    const plaintext = await other(sender).decrypt(sender, item.message);
    expect(Buffer.from(plaintext).equals(Buffer.from(item.plaintext)), `message ${item.seq}`).toBe(true);
    result.delivered++;
    if (sender === initiator) responderHasSession = true;
  };

  while (result.sent.length < total) {
    // The responder can only send once a message from the initiator has set up its session.
    const next = alternate ? other(from) : random() < 0.5 ? initiator : responder;
    from = responderHasSession ? next : initiator;
    const count = burst();
    for (let i = 0; i < count && result.sent.length < total; i++) {
      const seq = result.sent.length;
      const plaintext = text.encode(`message ${seq} ${'x'.repeat(Math.floor(random() * 200))}`);
      const message = await from.encrypt(other(from), plaintext);
      const sent: Sent = { from, seq, message, plaintext, spqr: spqrOnWire(message) };
      result.sent.push(sent);
      const epoch = sent.spqr.epoch;
      expect(epoch, `message ${seq}: a side's epoch label went down`).toBeGreaterThanOrEqual(
        result.maxEpoch.get(from) as number,
      );
      result.maxEpoch.set(from, epoch);
      if (!result.firstSeen.has(epoch)) result.firstSeen.set(epoch, seq);
      if (drop(sent)) result.dropped++;
      else (inFlight.get(from) as Sent[]).push(sent);
    }
    for (const sender of [initiator, responder]) {
      const queue = inFlight.get(sender) as Sent[];
      if (!reorder) {
        while (queue.length > 0) await deliver(sender, 0);
        continue;
      }
      // Some of what is in flight arrives, each time one of the three oldest.
      const deliveries = Math.floor(random() * (queue.length + 1));
      for (let i = 0; i < deliveries; i++) await deliver(sender, Math.floor(random() * Math.min(3, queue.length)));
    }
  }
  for (const sender of [initiator, responder]) {
    const queue = inFlight.get(sender) as Sent[];
    while (queue.length > 0) await deliver(sender, 0);
  }
  return result;
}

export function isHdrChunk(sent: Sent, below: number): boolean {
  return sent.spqr.type === SpqrMessageType.Hdr && (sent.spqr.chunk?.index ?? 0) < below;
}
