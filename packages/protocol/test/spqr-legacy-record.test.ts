import { WireType } from '@bufbuild/protobuf/wire';
import { describe, expect, it, vi } from 'vitest';
import type { CryptoProvider } from '../src/crypto/provider.ts';
import { ProtocolAddress, SessionRecord } from '../src/index.ts';
import { BinaryWriter, readProto } from '../src/proto.ts';
import { ChainDirection, initSpqrChain } from '../src/spqr/chain.ts';
import { SpqrMessageType, decodeSpqrMessage, encodeSpqrMessage } from '../src/spqr/message.ts';
import { readSpqrState } from '../src/spqr/serialize.ts';
import { providers } from './providers.ts';
import { converse, prng } from './support/conversation.ts';
import { encryptWithSpqr } from './support/forge.ts';
import { HushPeer, LibsignalPeer, type Peer } from './support/peers.ts';

/*
 * Sessions stored before the braid (record format 1, "SPQR-lite": SessionState field 12 with the
 * epoch-0 chain and the PQXDH SPQR secret) must load, start the braid, and advance epochs with
 * libsignal. The old record is built here the way the old serializer wrote it, from a session
 * whose Hush side sent what SPQR-lite sent (epoch 1, type None) while libsignal ran its braid.
 */

// The SPQR secret of each new session, which SPQR-lite kept in its records (the braid does not).
const captured = vi.hoisted(() => ({ authKeys: [] as Uint8Array[] }));
vi.mock('../src/spqr/ratchet.ts', async (importOriginal) => {
  const original = await importOriginal<typeof import('../src/spqr/ratchet.ts')>();
  return {
    ...original,
    initSpqr: (crypto: CryptoProvider, authKey: Uint8Array, direction: ChainDirection) => {
      captured.authKeys.push(authKey.slice());
      return original.initSpqr(crypto, authKey, direction);
    },
  };
});

function copyField(writer: BinaryWriter, f: Parameters<Parameters<typeof readProto>[2]>[0]): void {
  writer.tag(f.no, f.wireType);
  if (f.wireType === WireType.Varint) writer.uint64(f.uint64());
  else writer.bytes(f.bytes());
}

/** The SessionState as SPQR-lite wrote it: field 13 (the SPQR state) replaced by field 12. */
async function liteState(crypto: CryptoProvider, bytes: Uint8Array, authKey: Uint8Array): Promise<Uint8Array> {
  const writer = new BinaryWriter();
  let spqrBytes: Uint8Array | undefined;
  readProto(bytes, 'SessionState', (f) => {
    if (f.no === 13) spqrBytes = f.bytes();
    else copyField(writer, f);
  });
  const { chain } = readSpqrState(spqrBytes as Uint8Array);
  // SPQR-lite only ever used chain epoch 0 (a braid running underneath may have added epoch 1).
  expect(chain.sendEpoch).toBe(0);
  const link = chain.links[chain.links.length - 1 - chain.currentEpoch];
  const start = await initSpqrChain(crypto, authKey, chain.direction);
  if (!link) throw new Error('no epoch-0 link');
  writer
    .tag(12, WireType.LengthDelimited)
    .fork()
    .tag(1, WireType.Varint)
    .uint32(chain.direction)
    .tag(2, WireType.LengthDelimited)
    .bytes(start.nextRoot)
    .tag(3, WireType.LengthDelimited)
    .bytes(authKey)
    .tag(4, WireType.LengthDelimited)
    .bytes(link.send.next)
    .tag(5, WireType.Varint)
    .uint32(link.send.ctr)
    .tag(6, WireType.LengthDelimited)
    .bytes(link.recv.next)
    .tag(7, WireType.Varint)
    .uint32(link.recv.ctr);
  for (const s of link.recv.skipped) {
    writer.tag(8, WireType.LengthDelimited).fork().tag(1, WireType.Varint).uint32(s.ctr).tag(2, 2).bytes(s.key).join();
  }
  writer.join();
  return writer.finish();
}

/** A record in format 1 with every session state written as SPQR-lite did. */
async function liteRecord(crypto: CryptoProvider, record: SessionRecord, authKey: Uint8Array): Promise<Uint8Array> {
  const writer = new BinaryWriter();
  const states: [number, Uint8Array][] = [];
  readProto(record.serialize(), 'SessionRecord', (f) => {
    if (f.no === 1) {
      expect(f.uint32()).toBe(2);
      writer.tag(1, WireType.Varint).uint32(1);
    } else if (f.no === 2 || f.no === 3) states.push([f.no, f.bytes()]);
  });
  for (const [no, bytes] of states) {
    writer.tag(no, WireType.LengthDelimited).bytes(await liteState(crypto, bytes, authKey));
  }
  return writer.finish();
}

const text = new TextEncoder();

describe.each(providers)('SPQR-lite session records with the $name provider', (crypto) => {
  for (const hushInitiates of [true, false]) {
    it(`an old record (Hush ${hushInitiates ? 'initiator' : 'responder'}) loads, starts the braid and advances epochs with libsignal`, async () => {
      const hush = await HushPeer.create(crypto);
      const signal = new LibsignalPeer();
      const [initiator, responder]: [Peer, Peer] = hushInitiates ? [hush, signal] : [signal, hush];
      await initiator.startSession(responder);
      const send = async (from: Peer, label: string) => {
        const to = from === hush ? signal : hush;
        // What SPQR-lite sent: epoch 1, type None, the chain-0 index.
        const message =
          from === hush
            ? await encryptWithSpqr(hush, signal, text.encode(label), (b) =>
                encodeSpqrMessage({ epoch: 1, index: decodeSpqrMessage(b).index, type: SpqrMessageType.None }),
              )
            : await signal.encrypt(hush, text.encode(label));
        expect(new TextDecoder().decode(await to.decrypt(from, message))).toBe(label);
      };
      for (let i = 0; i < 6; i++) {
        await send(initiator, `to responder ${i}`);
        await send(responder, `to initiator ${i}`);
      }
      const authKey = captured.authKeys.at(-1) as Uint8Array;
      const address = new ProtocolAddress(signal.name, signal.deviceId);
      const current = (await hush.stores.sessions.getSession(address)) as SessionRecord;
      const link0 = current.currentState()?.spqr.chain.links[0];

      const old = await liteRecord(crypto, current, authKey);
      const loaded = SessionRecord.deserialize(old);
      const state = loaded.currentState();
      expect(state?.spqr.braid).toMatchObject(
        hushInitiates ? { kind: 'KeysUnsampled', epoch: 1 } : { kind: 'NoHeaderReceived', epoch: 1 },
      );
      expect(state?.spqr.chain).toMatchObject({
        direction: hushInitiates ? ChainDirection.A2B : ChainDirection.B2A,
        currentEpoch: 0,
        sendEpoch: 0,
      });
      expect(state?.spqr.chain.links[0]?.send.ctr).toBe(link0?.send.ctr);
      expect(state?.spqr.chain.links[0]?.recv.ctr).toBe(link0?.recv.ctr);
      await hush.stores.sessions.saveSession(address, loaded);

      // From here on Hush runs the braid; libsignal had been waiting (for a header, or for ct1).
      const result = await converse(initiator, responder, { total: 300, random: prng(hushInitiates ? 1 : 2) });
      expect(result.sent[0]?.spqr.epoch).toBe(1);
      expect(Math.min(...result.maxEpoch.values())).toBeGreaterThanOrEqual(3);
      const reloaded = (await hush.stores.sessions.getSession(address)) as SessionRecord;
      expect(reloaded.currentState()?.spqr.braid.epoch).toBeGreaterThanOrEqual(3);
    });
  }
});
