import { InvalidMessageError } from '../errors.ts';
import { BinaryWriter, type ProtoField, readProto, requireField } from '../proto.ts';
import { type Authenticator, initAuthenticatorSync } from './authenticator.ts';
import {
  BRAID_STATE_KINDS,
  type BraidState,
  type BraidStateKind,
  CT1_MESSAGE_BYTES,
  CT2_MESSAGE_BYTES,
  EK_MESSAGE_BYTES,
  HDR_MESSAGE_BYTES,
  KEYGEN_SEED_BYTES,
  type Sending,
  initialBraidState,
} from './braid.ts';
import { ChainDirection, type ChainHalf, type ChainLink, type SkippedKey, type SpqrChainState } from './chain.ts';
import { CHUNK_BYTES, type Chunk, ChunkDecoder, ChunkEncoder } from './erasure.ts';
import { CT1_BYTES, EK_VECTOR_BYTES, HEADER_BYTES } from './incremental-mlkem768.ts';
import type { SpqrState } from './ratchet.ts';

/*
 * The SPQR state in Hush's session records (a protobuf of our own, not spqr's PqRatchetState):
 *
 *   SpqrState  1 format (= 1) · 2 Chain · 3 Braid
 *   Chain      1 direction · 2 current epoch · 3 send epoch · 4 next root · 5 Link*
 *   Link       1 send Half · 2 recv Half
 *   Half       1 ctr · 2 next (32 bytes, or empty once unusable) · 3 skipped keys (BE32 ctr ‖ key)*
 *   Braid      1 state (1–11 in spqr's order) · 2 epoch · 3 auth root key · 4 auth MAC key
 *              · 6 ek vector · 7 header · 8 ct1 (unless it is the Sending's message) · 9 m
 *              · 10 Sending · 11 Receiving · 12 ML-KEM key-pair seed (5, the dk, is retired)
 *   Sending    1 encoded message · 2 next chunk index
 *   Receiving  1 message length · 2 chunks (BE16 index ‖ 32 bytes)*
 *
 * Every field a state needs is checked on reading (presence and length), so a record that loads
 * is one the braid can run on.
 */
const WHAT = 'SpqrState';
const FORMAT = 1;
const SKIPPED_ENTRY = 4 + 32;
const CHUNK_ENTRY = 2 + CHUNK_BYTES;

// ---- writing ----

function writeHalf(writer: BinaryWriter, half: ChainHalf): void {
  const skipped = new Uint8Array(half.skipped.length * SKIPPED_ENTRY);
  const view = new DataView(skipped.buffer);
  half.skipped.forEach((s, i) => {
    view.setUint32(i * SKIPPED_ENTRY, s.ctr);
    skipped.set(s.key, i * SKIPPED_ENTRY + 4);
  });
  writer.fork().tag(1, 0).uint32(half.ctr).tag(2, 2).bytes(half.next);
  if (skipped.length > 0) writer.tag(3, 2).bytes(skipped);
  writer.join();
}

function writeChain(writer: BinaryWriter, chain: SpqrChainState): void {
  writer
    .fork()
    .tag(1, 0)
    .uint32(chain.direction)
    .tag(2, 0)
    .uint64(chain.currentEpoch)
    .tag(3, 0)
    .uint64(chain.sendEpoch)
    .tag(4, 2)
    .bytes(chain.nextRoot);
  for (const link of chain.links) {
    writer.tag(5, 2).fork().tag(1, 2);
    writeHalf(writer, link.send);
    writer.tag(2, 2);
    writeHalf(writer, link.recv);
    writer.join();
  }
  writer.join();
}

interface BraidParts {
  seed?: Uint8Array;
  ekVector?: Uint8Array;
  header?: Uint8Array;
  ct1?: Uint8Array;
  m?: Uint8Array;
  sending?: Sending;
  receiving?: ChunkDecoder;
}

/** What each state holds beyond its epoch and authenticator (buildBraid below is the inverse). */
function parts(s: BraidState): BraidParts {
  switch (s.kind) {
    case 'KeysUnsampled':
      return {};
    case 'KeysSampled':
      return { seed: s.seed, sending: s.sendingHdr };
    case 'HeaderSent':
      return { seed: s.seed, sending: s.sendingEk, receiving: s.receivingCt1 };
    case 'Ct1Received':
      return { seed: s.seed, ct1: s.ct1, sending: s.sendingEk };
    case 'EkSentCt1Received':
      return { seed: s.seed, ct1: s.ct1, receiving: s.receivingCt2 };
    case 'NoHeaderReceived':
      return { receiving: s.receivingHdr };
    case 'HeaderReceived':
      return { header: s.header, receiving: s.receivingEk };
    case 'Ct1Sampled':
      // ct1 is what the ct1 encoder sends: stored once, as the encoder's message.
      return { header: s.header, m: s.m, sending: s.sendingCt1, receiving: s.receivingEk };
    case 'EkReceivedCt1Sampled':
      return { header: s.header, m: s.m, ekVector: s.ekVector, sending: s.sendingCt1 };
    case 'Ct1Acknowledged':
      return { header: s.header, m: s.m, ct1: s.ct1, receiving: s.receivingEk };
    case 'Ct2Sampled':
      return { sending: s.sendingCt2 };
  }
}

function writeBraid(writer: BinaryWriter, state: BraidState): void {
  writer
    .fork()
    .tag(1, 0)
    .uint32(BRAID_STATE_KINDS.indexOf(state.kind) + 1)
    .tag(2, 0)
    .uint64(state.epoch)
    .tag(3, 2)
    .bytes(state.auth.rootKey)
    .tag(4, 2)
    .bytes(state.auth.macKey);
  const p = parts(state);
  for (const [no, value] of [
    [12, p.seed],
    [6, p.ekVector],
    [7, p.header],
    [8, p.ct1],
    [9, p.m],
  ] as const) {
    if (value) writer.tag(no, 2).bytes(value);
  }
  const { sending, receiving } = p;
  if (sending) {
    writer.tag(10, 2).fork().tag(1, 2).bytes(sending.encoder.message).tag(2, 0).uint32(sending.next).join();
  }
  if (receiving) {
    const chunks = receiving.chunks();
    const packed = new Uint8Array(chunks.length * CHUNK_ENTRY);
    chunks.forEach((c, i) => {
      packed[i * CHUNK_ENTRY] = c.index >> 8;
      packed[i * CHUNK_ENTRY + 1] = c.index & 0xff;
      packed.set(c.data, i * CHUNK_ENTRY + 2);
    });
    writer.tag(11, 2).fork().tag(1, 0).uint32(receiving.messageLength);
    if (packed.length > 0) writer.tag(2, 2).bytes(packed);
    writer.join();
  }
  writer.join();
}

/** Writes the fields of `state` (the caller frames them, e.g. as a length-delimited field). */
export function writeSpqrState(writer: BinaryWriter, state: SpqrState): void {
  writer.tag(1, 0).uint32(FORMAT).tag(2, 2);
  writeChain(writer, state.chain);
  writer.tag(3, 2);
  writeBraid(writer, state.braid);
}

export function serializeSpqrState(state: SpqrState): Uint8Array {
  const writer = new BinaryWriter();
  writeSpqrState(writer, state);
  return writer.finish();
}

// ---- reading ----

function fail(message: string): never {
  throw new InvalidMessageError(`${WHAT}: ${message}`);
}

function sized(value: Uint8Array | undefined, length: number, name: string): Uint8Array {
  const v = requireField(value, WHAT, name);
  if (v.length !== length) fail(`${name} must be ${length} bytes`);
  return v;
}

function epochNumber(f: ProtoField): number {
  const value = f.uint64();
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) fail('epoch out of range');
  return Number(value);
}

function readHalf(bytes: Uint8Array): ChainHalf {
  let ctr = 0;
  let next: Uint8Array | undefined;
  const skipped: SkippedKey[] = [];
  readProto(bytes, WHAT, (f) => {
    if (f.no === 1) ctr = f.uint32();
    else if (f.no === 2) next = f.bytes();
    else if (f.no === 3) {
      const packed = f.bytes();
      if (packed.length % SKIPPED_ENTRY !== 0) fail('skipped keys malformed');
      const view = new DataView(packed.buffer, packed.byteOffset, packed.length);
      for (let at = 0; at < packed.length; at += SKIPPED_ENTRY) {
        skipped.push({ ctr: view.getUint32(at), key: packed.slice(at + 4, at + SKIPPED_ENTRY) });
      }
    }
  });
  const n = requireField(next, WHAT, 'chain key');
  if (n.length !== 32 && n.length !== 0) fail('chain key must be 32 bytes or empty');
  return { ctr, next: n, skipped };
}

function readLink(bytes: Uint8Array): ChainLink {
  let send: ChainHalf | undefined;
  let recv: ChainHalf | undefined;
  readProto(bytes, WHAT, (f) => {
    if (f.no === 1) send = readHalf(f.bytes());
    else if (f.no === 2) recv = readHalf(f.bytes());
  });
  return { send: requireField(send, WHAT, 'sending half'), recv: requireField(recv, WHAT, 'receiving half') };
}

function readChain(bytes: Uint8Array): SpqrChainState {
  let direction: number | undefined;
  let currentEpoch = 0;
  let sendEpoch = 0;
  let nextRoot: Uint8Array | undefined;
  const links: ChainLink[] = [];
  readProto(bytes, WHAT, (f) => {
    if (f.no === 1) direction = f.uint32();
    else if (f.no === 2) currentEpoch = epochNumber(f);
    else if (f.no === 3) sendEpoch = epochNumber(f);
    else if (f.no === 4) nextRoot = f.bytes();
    else if (f.no === 5) links.push(readLink(f.bytes()));
  });
  if (direction !== ChainDirection.A2B && direction !== ChainDirection.B2A) fail('chain direction invalid');
  if (links.length === 0 || links.length > currentEpoch + 1) fail('chain links inconsistent with its epoch');
  if (sendEpoch > currentEpoch || sendEpoch < currentEpoch - links.length + 1) fail('chain send epoch out of range');
  return { direction, currentEpoch, sendEpoch, links, nextRoot: sized(nextRoot, 32, 'next root') };
}

interface RawBraid {
  kind?: number;
  epoch?: number;
  rootKey?: Uint8Array;
  macKey?: Uint8Array;
  seed?: Uint8Array;
  ekVector?: Uint8Array;
  header?: Uint8Array;
  ct1?: Uint8Array;
  m?: Uint8Array;
  sending?: { message?: Uint8Array; next: number };
  receiving?: { length?: number; chunks: Chunk[] };
}

function readSending(bytes: Uint8Array): RawBraid['sending'] {
  const sending: NonNullable<RawBraid['sending']> = { next: 0 };
  readProto(bytes, WHAT, (f) => {
    if (f.no === 1) sending.message = f.bytes();
    else if (f.no === 2) sending.next = f.uint32();
  });
  return sending;
}

function readReceiving(bytes: Uint8Array): RawBraid['receiving'] {
  const receiving: NonNullable<RawBraid['receiving']> = { chunks: [] };
  readProto(bytes, WHAT, (f) => {
    if (f.no === 1) receiving.length = f.uint32();
    else if (f.no === 2) {
      const packed = f.bytes();
      if (packed.length % CHUNK_ENTRY !== 0) fail('decoder chunks malformed');
      for (let at = 0; at < packed.length; at += CHUNK_ENTRY) {
        const index = ((packed[at] as number) << 8) | (packed[at + 1] as number);
        receiving.chunks.push({ index, data: packed.slice(at + 2, at + CHUNK_ENTRY) });
      }
    }
  });
  return receiving;
}

function readBraid(bytes: Uint8Array): BraidState {
  const raw: RawBraid = {};
  readProto(bytes, WHAT, (f) => {
    switch (f.no) {
      case 1:
        raw.kind = f.uint32();
        break;
      case 2:
        raw.epoch = epochNumber(f);
        break;
      case 3:
        raw.rootKey = f.bytes();
        break;
      case 4:
        raw.macKey = f.bytes();
        break;
      case 12:
        raw.seed = f.bytes();
        break;
      case 6:
        raw.ekVector = f.bytes();
        break;
      case 7:
        raw.header = f.bytes();
        break;
      case 8:
        raw.ct1 = f.bytes();
        break;
      case 9:
        raw.m = f.bytes();
        break;
      case 10:
        raw.sending = readSending(f.bytes());
        break;
      case 11:
        raw.receiving = readReceiving(f.bytes());
        break;
    }
  });
  const kind = BRAID_STATE_KINDS[(raw.kind ?? 0) - 1];
  if (!kind) fail('braid state unknown');
  const epoch = requireField(raw.epoch, WHAT, 'epoch');
  if (epoch < 1) fail('braid epoch must be at least 1');
  const auth: Authenticator = {
    rootKey: sized(raw.rootKey, 32, 'authenticator root key'),
    macKey: sized(raw.macKey, 32, 'authenticator MAC key'),
  };
  return buildBraid(kind, { epoch, auth }, raw);
}

function buildBraid(kind: BraidStateKind, common: { epoch: number; auth: Authenticator }, raw: RawBraid): BraidState {
  const seed = () => sized(raw.seed, KEYGEN_SEED_BYTES, 'key pair seed');
  const ekVector = () => sized(raw.ekVector, EK_VECTOR_BYTES, 'ek vector');
  const header = () => sized(raw.header, HEADER_BYTES, 'header');
  const ct1 = () => sized(raw.ct1, CT1_BYTES, 'ct1');
  const m = () => sized(raw.m, 32, 'm');
  const sending = (length: number): Sending => {
    const s = requireField(raw.sending, WHAT, 'encoder');
    return { encoder: new ChunkEncoder(sized(s.message, length, 'encoded message')), next: s.next };
  };
  const receiving = (length: number): ChunkDecoder => {
    const r = requireField(raw.receiving, WHAT, 'decoder');
    if (r.length !== length) fail('decoder length does not fit its state');
    // A decoder holding enough chunks to decode would have moved the state on.
    if (r.chunks.length >= length / CHUNK_BYTES) fail('decoder already complete');
    return ChunkDecoder.restore(length, r.chunks);
  };
  switch (kind) {
    case 'KeysUnsampled':
      return { kind, ...common };
    case 'KeysSampled':
      return { kind, ...common, seed: seed(), sendingHdr: sending(HDR_MESSAGE_BYTES) };
    case 'HeaderSent':
      return {
        kind,
        ...common,
        seed: seed(),
        sendingEk: sending(EK_MESSAGE_BYTES),
        receivingCt1: receiving(CT1_MESSAGE_BYTES),
      };
    case 'Ct1Received':
      return { kind, ...common, seed: seed(), ct1: ct1(), sendingEk: sending(EK_MESSAGE_BYTES) };
    case 'EkSentCt1Received':
      return { kind, ...common, seed: seed(), ct1: ct1(), receivingCt2: receiving(CT2_MESSAGE_BYTES) };
    case 'NoHeaderReceived':
      return { kind, ...common, receivingHdr: receiving(HDR_MESSAGE_BYTES) };
    case 'HeaderReceived':
      return { kind, ...common, header: header(), receivingEk: receiving(EK_MESSAGE_BYTES) };
    case 'Ct1Sampled': {
      const sendingCt1 = sending(CT1_MESSAGE_BYTES);
      const ct1 = sendingCt1.encoder.message;
      return { kind, ...common, header: header(), m: m(), ct1, sendingCt1, receivingEk: receiving(EK_MESSAGE_BYTES) };
    }
    case 'EkReceivedCt1Sampled': {
      const sendingCt1 = sending(CT1_MESSAGE_BYTES);
      const ct1 = sendingCt1.encoder.message;
      return { kind, ...common, header: header(), m: m(), ct1, ekVector: ekVector(), sendingCt1 };
    }
    case 'Ct1Acknowledged':
      return { kind, ...common, header: header(), m: m(), ct1: ct1(), receivingEk: receiving(EK_MESSAGE_BYTES) };
    case 'Ct2Sampled':
      return { kind, ...common, sendingCt2: sending(CT2_MESSAGE_BYTES) };
  }
}

export function readSpqrState(bytes: Uint8Array): SpqrState {
  let format: number | undefined;
  let chain: SpqrChainState | undefined;
  let braid: BraidState | undefined;
  readProto(bytes, WHAT, (f) => {
    if (f.no === 1) format = f.uint32();
    else if (f.no === 2) chain = readChain(f.bytes());
    else if (f.no === 3) braid = readBraid(f.bytes());
  });
  if (format !== FORMAT) fail(`unknown format ${format}`);
  return { chain: requireField(chain, WHAT, 'chain'), braid: requireField(braid, WHAT, 'braid') };
}

/** What an SPQR-lite record (Hush before the braid) stored: the epoch-0 chain and the PQXDH SPQR secret. */
export interface SpqrLiteState {
  direction: ChainDirection;
  nextRoot: Uint8Array;
  authKey: Uint8Array;
  send: { next: Uint8Array; ctr: number };
  recv: { next: Uint8Array; ctr: number };
  skipped: SkippedKey[];
}

/**
 * Upgrades an SPQR-lite session: it only ever sent epoch 1 with no braid payload, so its braid is
 * where it would have started (the initiator about to sample keys, the responder waiting for a
 * header), its chain is chain epoch 0 as it stands, and the authenticator comes from the stored
 * SPQR secret, which is then dropped. A peer that already sent header chunks the lite session
 * ignored goes on sending more (parity past the third), so the header still decodes.
 */
export function upgradeSpqrLite(lite: SpqrLiteState): SpqrState {
  const chain: SpqrChainState = {
    direction: lite.direction,
    currentEpoch: 0,
    sendEpoch: 0,
    nextRoot: lite.nextRoot,
    links: [
      {
        send: { ctr: lite.send.ctr, next: lite.send.next, skipped: [] },
        recv: { ctr: lite.recv.ctr, next: lite.recv.next, skipped: lite.skipped },
      },
    ],
  };
  const auth = initAuthenticatorSync(lite.authKey);
  return { chain, braid: initialBraidState(auth, lite.direction === ChainDirection.A2B) };
}
