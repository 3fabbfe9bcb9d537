import { describe, expect, it } from 'vitest';
import { toHex } from '../src/bytes.ts';
import { InvalidMacError, InvalidMessageError, ProtocolAddress, type ProtocolError } from '../src/index.ts';
import type { SessionState } from '../src/session/state.ts';
import { type SpqrMessage, SpqrMessageType, decodeSpqrMessage, encodeSpqrMessage } from '../src/spqr/message.ts';
import { providers } from './providers.ts';
import { converse, prng, spqrOnWire } from './support/conversation.ts';
import { encryptWithSpqr } from './support/forge.ts';
import { HushPeer, LibsignalPeer, type Peer, type WireMessage } from './support/peers.ts';

/*
 * SPQR failures through the session cipher: a message whose braid payload is bad (tampered chunk,
 * epoch above ours, malformed framing) but whose Double Ratchet MAC is genuine is rejected with a
 * typed error, and the receiver's stored session is byte-for-byte what it was.
 */

const text = new TextEncoder();

async function storedSession(hush: HushPeer, remote: Peer): Promise<string> {
  const record = await hush.stores.sessions.getSession(new ProtocolAddress(remote.name, remote.deviceId));
  return record ? toHex(record.serialize()) : '';
}

async function currentState(hush: HushPeer, remote: Peer): Promise<SessionState> {
  const record = await hush.stores.sessions.getSession(new ProtocolAddress(remote.name, remote.deviceId));
  return record?.currentState() as SessionState;
}

async function expectRejected(
  hush: HushPeer,
  from: Peer,
  message: WireMessage,
  type: new (...args: never[]) => ProtocolError,
  pattern?: RegExp,
): Promise<void> {
  const before = await storedSession(hush, from);
  const error = await hush.decrypt(from, message).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(type);
  if (pattern) expect((error as Error).message).toMatch(pattern);
  expect(await storedSession(hush, from)).toBe(before);
}

function rewrite(bytes: Uint8Array, change: (m: SpqrMessage) => SpqrMessage): Uint8Array {
  return encodeSpqrMessage(change(decodeSpqrMessage(bytes)));
}

const tampered = (m: SpqrMessage): SpqrMessage => {
  const data = (m.chunk as { data: Uint8Array }).data.slice();
  data[0] = (data[0] as number) ^ 0x01;
  return { ...m, chunk: { index: m.chunk?.index as number, data } };
};

async function exchange(from: Peer, to: Peer, label: string): Promise<void> {
  const message = await from.encrypt(to, text.encode(label));
  expect(new TextDecoder().decode(await to.decrypt(from, message))).toBe(label);
}

describe.each(providers)('SPQR failures through the session cipher with the $name provider', (crypto) => {
  it('a tampered header chunk fails the SPQR MAC, the session is unchanged, a parity chunk completes the header', async () => {
    const alice = await HushPeer.create(crypto);
    const bob = await HushPeer.create(crypto);
    await alice.startSession(bob);
    await exchange(alice, bob, 'Hdr chunk 0');
    await exchange(bob, alice, 'ack');
    await exchange(alice, bob, 'Hdr chunk 1');
    const bad = await encryptWithSpqr(alice, bob, text.encode('Hdr chunk 2'), (b) => rewrite(b, tampered));
    expect(spqrOnWire(bad)).toMatchObject({ type: SpqrMessageType.Hdr, chunk: { index: 2 } });
    await expectRejected(bob, alice, bad, InvalidMacError, /MAC verification failed/);
    expect((await currentState(bob, alice)).spqr.braid.kind).toBe('NoHeaderReceived');
    await exchange(alice, bob, 'Hdr chunk 3');
    expect((await currentState(bob, alice)).spqr.braid.kind).toBe('HeaderReceived');
    const result = await converse(alice, bob, { total: 200, random: prng(5) });
    expect(Math.min(...result.maxEpoch.values())).toBeGreaterThanOrEqual(3);
  });

  it('libsignal, too, rejects the tampered header chunk and decodes the header with the parity chunk', async () => {
    const hush = await HushPeer.create(crypto);
    const signal = new LibsignalPeer();
    await hush.startSession(signal);
    await exchange(hush, signal, 'Hdr chunk 0');
    await exchange(signal, hush, 'ack');
    await exchange(hush, signal, 'Hdr chunk 1');
    const bad = await encryptWithSpqr(hush, signal, text.encode('Hdr chunk 2'), (b) => rewrite(b, tampered));
    await expect(signal.decrypt(hush, bad)).rejects.toThrow();
    await exchange(hush, signal, 'Hdr chunk 3');
    const reply = await signal.encrypt(hush, text.encode('ct1'));
    expect(spqrOnWire(reply)).toMatchObject({ epoch: 1, type: SpqrMessageType.Ct1, chunk: { index: 0 } });
    await hush.decrypt(signal, reply);
    const result = await converse(hush, signal, { total: 200, random: prng(6) });
    expect(Math.min(...result.maxEpoch.values())).toBeGreaterThanOrEqual(3);
  });

  it('a tampered ct2 chunk fails the SPQR MAC, the session is unchanged, a parity chunk completes the epoch', async () => {
    const alice = await HushPeer.create(crypto);
    const bob = await HushPeer.create(crypto);
    await alice.startSession(bob);
    await exchange(alice, bob, 'first');
    let rejected = false;
    for (let i = 0; i < 120 && (await currentState(alice, bob)).spqr.braid.epoch === 1; i++) {
      let isTarget = false;
      const message = await encryptWithSpqr(bob, alice, text.encode(`b${i}`), (b) => {
        const m = decodeSpqrMessage(b);
        isTarget = !rejected && m.type === SpqrMessageType.Ct2 && m.chunk?.index === 4;
        return isTarget ? encodeSpqrMessage(tampered(m)) : b;
      });
      if (isTarget) {
        expect((await currentState(alice, bob)).spqr.braid.kind).toBe('EkSentCt1Received');
        await expectRejected(alice, bob, message, InvalidMacError, /MAC verification failed/);
        rejected = true;
      } else {
        await alice.decrypt(bob, message);
      }
      await exchange(alice, bob, `a${i}`);
    }
    expect(rejected).toBe(true);
    expect((await currentState(alice, bob)).spqr.braid).toMatchObject({ kind: 'NoHeaderReceived', epoch: 2 });
  });

  it('an epoch label above the receiver’s is rejected with the session unchanged', async () => {
    // The victim is send_ct in epoch 1: no message of its peer can be labelled 2 (or 7) yet.
    const spoofer = await HushPeer.create(crypto);
    const victim = await HushPeer.create(crypto);
    await spoofer.startSession(victim);
    await exchange(spoofer, victim, 'first');
    await exchange(victim, spoofer, 'ack');
    for (const epoch of [2, 7]) {
      const bad = await encryptWithSpqr(spoofer, victim, text.encode('ahead'), (b) =>
        rewrite(b, (m) => ({ ...m, epoch })),
      );
      await expectRejected(victim, spoofer, bad, InvalidMessageError, new RegExp(`epoch not in valid range: ${epoch}`));
    }
    await exchange(spoofer, victim, 'still fine');
  });

  it('malformed SPQR framing is rejected with the session unchanged; trailing bytes are accepted as spqr does', async () => {
    const alice = await HushPeer.create(crypto);
    const bob = await HushPeer.create(crypto);
    await alice.startSession(bob);
    await exchange(alice, bob, 'first');
    await exchange(bob, alice, 'ack');
    const malformed: ((b: Uint8Array) => Uint8Array)[] = [
      () => new Uint8Array(0), // no field 5: a peer without SPQR
      () => Uint8Array.of(1),
      () => Uint8Array.of(1, 1, 2, 9), // type 9
      (b) => Uint8Array.of(2, ...b.subarray(1)), // version 2
      (b) => b.subarray(0, b.length - 1), // chunk one byte short
      (b) => Uint8Array.of(1, 0, ...b.subarray(2)), // epoch 0
    ];
    for (const change of malformed) {
      const bad = await encryptWithSpqr(alice, bob, text.encode('bad'), change);
      await expectRejected(bob, alice, bad, InvalidMessageError);
    }
    const padded = await encryptWithSpqr(alice, bob, text.encode('padded'), (b) => Uint8Array.of(...b, 0xee, 0xee));
    expect(new TextDecoder().decode(await bob.decrypt(alice, padded))).toBe('padded');
  });
});
