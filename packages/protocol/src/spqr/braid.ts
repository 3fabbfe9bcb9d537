import { be64, concatBytes, utf8 } from '../bytes.ts';
import type { CryptoProvider } from '../crypto/provider.ts';
import { InvalidMessageError } from '../errors.ts';
import {
  type Authenticator,
  MAC_BYTES,
  ciphertextMac,
  headerMac,
  updateAuthenticator,
  verifyCiphertextMac,
  verifyHeaderMac,
} from './authenticator.ts';
import { type Chunk, ChunkDecoder, ChunkEncoder } from './erasure.ts';
import {
  CT1_BYTES,
  CT2_BYTES,
  EK_VECTOR_BYTES,
  HEADER_BYTES,
  decaps,
  ekMatchesHeader,
  encaps1,
  encaps2,
  generateKeyPair,
} from './incremental-mlkem768.ts';
import { SpqrMessageType } from './message.ts';

/*
 * The ML-KEM braid (spqr src/v1/chunked): the state machine that, one 32-byte chunk per message,
 * runs an ML-KEM-768 exchange per epoch and outputs one epoch secret per epoch.
 *
 * In epoch e one side is send_ek (owns a fresh key pair), the other send_ct (encapsulates to it):
 *   send_ek: Hdr chunks (header ‖ MAC) … until the first Ct1 chunk arrives; then Ek chunks …, then
 *            EkCt1Ack chunks once ct1 is whole (the same encoder, its index going on); then Ct1Ack.
 *            When ct2 ‖ MAC is whole: decapsulate, the epoch secret, verify the ct MAC → send_ct, e+1.
 *   send_ct: None until the header is whole and its MAC verifies; then at its next send Encaps1
 *            (the epoch secret is output there) and Ct1 chunks; once it has the ek and knows ct1
 *            arrived (EkCt1Ack / Ct1Ack), Encaps2 and Ct2 chunks, until a message labelled e+1
 *            arrives → send_ek, e+1.
 * Every message carries the sender's epoch; one above ours is an error (but for the e+1 that ends
 * Ct2Sampled), one below changes nothing, a payload the state does not expect is ignored.
 *
 * States are immutable values: send and recv return a new state and never touch their input (a
 * decoder is cloned before a chunk goes in), so a message that fails anywhere leaves no trace and
 * a state can be shared between session-state copies. Encoders are deterministic functions of
 * their message and may be shared.
 */

const SCKA_KEY_INFO = utf8('Signal_PQCKA_V1_MLKEM768:SCKA Key');
const ZERO_SALT = new Uint8Array(32);
/** Sizes of the chunked messages: header ‖ MAC, the ek vector, ct1, ct2 ‖ MAC. */
export const HDR_MESSAGE_BYTES = HEADER_BYTES + MAC_BYTES; // 96: 3 chunks
export const EK_MESSAGE_BYTES = EK_VECTOR_BYTES; // 1152: 36 chunks
export const CT1_MESSAGE_BYTES = CT1_BYTES; // 960: 30 chunks
export const CT2_MESSAGE_BYTES = CT2_BYTES + MAC_BYTES; // 160: 5 chunks
/** ML-KEM key generation's randomness d ‖ z. */
export const KEYGEN_SEED_BYTES = 64;

/** An encoder and the index of the next chunk to send (a u32 counter; chunk indices wrap at 2¹⁶). */
export interface Sending {
  readonly encoder: ChunkEncoder;
  readonly next: number;
}

interface Common {
  /** The epoch this state works on, and the label of every message it sends. */
  readonly epoch: number;
  readonly auth: Authenticator;
}

// send_ek role. The epoch's ML-KEM key pair is kept as its 64-byte key-generation seed (d ‖ z;
// FIPS 203 key generation is deterministic): session records are read and written on every
// message, and the seed is 64 bytes where dk and ek are 3.5 KB. The ek vector and dk are derived
// again where they are needed, once each per epoch.
export interface KeysUnsampled extends Common {
  readonly kind: 'KeysUnsampled';
}
export interface KeysSampled extends Common {
  readonly kind: 'KeysSampled';
  readonly seed: Uint8Array;
  readonly sendingHdr: Sending;
}
export interface HeaderSent extends Common {
  readonly kind: 'HeaderSent';
  readonly seed: Uint8Array;
  readonly sendingEk: Sending;
  readonly receivingCt1: ChunkDecoder;
}
export interface Ct1Received extends Common {
  readonly kind: 'Ct1Received';
  readonly seed: Uint8Array;
  readonly ct1: Uint8Array;
  readonly sendingEk: Sending;
}
export interface EkSentCt1Received extends Common {
  readonly kind: 'EkSentCt1Received';
  readonly seed: Uint8Array;
  readonly ct1: Uint8Array;
  readonly receivingCt2: ChunkDecoder;
}
// send_ct role
export interface NoHeaderReceived extends Common {
  readonly kind: 'NoHeaderReceived';
  readonly receivingHdr: ChunkDecoder;
}
export interface HeaderReceived extends Common {
  readonly kind: 'HeaderReceived';
  readonly header: Uint8Array;
  readonly receivingEk: ChunkDecoder;
}
/** What Encaps2 needs later: the header, the randomness m (r is rederived from it) and ct1 for the MAC. */
interface Encapsulating {
  readonly header: Uint8Array;
  readonly m: Uint8Array;
  readonly ct1: Uint8Array;
}
export interface Ct1Sampled extends Common, Encapsulating {
  readonly kind: 'Ct1Sampled';
  readonly sendingCt1: Sending;
  readonly receivingEk: ChunkDecoder;
}
export interface EkReceivedCt1Sampled extends Common, Encapsulating {
  readonly kind: 'EkReceivedCt1Sampled';
  readonly ekVector: Uint8Array;
  readonly sendingCt1: Sending;
}
export interface Ct1Acknowledged extends Common, Encapsulating {
  readonly kind: 'Ct1Acknowledged';
  readonly receivingEk: ChunkDecoder;
}
export interface Ct2Sampled extends Common {
  readonly kind: 'Ct2Sampled';
  readonly sendingCt2: Sending;
}

export type BraidState =
  | KeysUnsampled
  | KeysSampled
  | HeaderSent
  | Ct1Received
  | EkSentCt1Received
  | NoHeaderReceived
  | HeaderReceived
  | Ct1Sampled
  | EkReceivedCt1Sampled
  | Ct1Acknowledged
  | Ct2Sampled;

export type BraidStateKind = BraidState['kind'];

/** The 11 states in spqr's order (its V1State oneof numbers them 1–11 so). */
export const BRAID_STATE_KINDS: readonly BraidStateKind[] = [
  'KeysUnsampled',
  'KeysSampled',
  'HeaderSent',
  'Ct1Received',
  'EkSentCt1Received',
  'NoHeaderReceived',
  'HeaderReceived',
  'Ct1Sampled',
  'EkReceivedCt1Sampled',
  'Ct1Acknowledged',
  'Ct2Sampled',
];

/** What one message of the braid carries (the chain index is added by the caller). */
export interface BraidMessage {
  epoch: number;
  type: SpqrMessageType;
  chunk?: Chunk;
}

/** The secret of epoch `epoch`, for the chain's Add Epoch. */
export interface EpochSecret {
  epoch: number;
  secret: Uint8Array;
}

export interface BraidStep {
  state: BraidState;
  epochSecret?: EpochSecret;
}

/** The initiator (PQXDH sender) starts as send_ek, the responder as send_ct; both in epoch 1. */
export function initialBraidState(auth: Authenticator, initiator: boolean): BraidState {
  return initiator
    ? { kind: 'KeysUnsampled', epoch: 1, auth }
    : { kind: 'NoHeaderReceived', epoch: 1, auth, receivingHdr: new ChunkDecoder(HDR_MESSAGE_BYTES) };
}

/** A copy sharing no mutable object with `state` (decoders cloned; bytes and encoders are never mutated). */
export function cloneBraidState(state: BraidState): BraidState {
  const copy: Record<string, unknown> = { ...state };
  for (const [key, value] of Object.entries(copy)) {
    if (value instanceof ChunkDecoder) copy[key] = value.clone();
  }
  return copy as unknown as BraidState;
}

function startSending(message: Uint8Array): Sending {
  return { encoder: new ChunkEncoder(message), next: 0 };
}

/** The next chunk of `sending`, and the sending state after it. */
function nextChunk(sending: Sending): [Chunk, Sending] {
  const index = sending.next & 0xffff;
  return [
    { index, data: sending.encoder.chunk(index) },
    { encoder: sending.encoder, next: (sending.next + 1) >>> 0 },
  ];
}

/** Adds a chunk to a copy of `decoder`: the original is left as it was if what follows fails. */
function receive(decoder: ChunkDecoder, chunk: Chunk): { decoder: ChunkDecoder; message: Uint8Array | undefined } {
  const copy = decoder.clone();
  return { decoder: copy, message: copy.add(chunk) };
}

export async function deriveEpochSecret(
  crypto: CryptoProvider,
  epoch: number,
  sharedSecret: Uint8Array,
): Promise<Uint8Array> {
  return crypto.hkdfSha256(sharedSecret, ZERO_SALT, concatBytes(SCKA_KEY_INFO, be64(epoch)), 32);
}

/** The message to send in `state`, and the state after sending it. Randomness from `crypto.randomBytes`. */
export async function braidSend(
  crypto: CryptoProvider,
  state: BraidState,
): Promise<BraidStep & { message: BraidMessage }> {
  const { epoch } = state;
  const out = (next: BraidState, type: SpqrMessageType, chunk?: Chunk, secret?: EpochSecret) => ({
    state: next,
    message: chunk ? { epoch, type, chunk } : { epoch, type },
    ...(secret ? { epochSecret: secret } : {}),
  });
  switch (state.kind) {
    case 'KeysUnsampled': {
      const seed = crypto.randomBytes(KEYGEN_SEED_BYTES);
      const { header } = generateKeyPair(seed);
      const mac = await headerMac(crypto, state.auth, epoch, header);
      const [chunk, sendingHdr] = nextChunk(startSending(concatBytes(header, mac)));
      const next: KeysSampled = { ...common(state), kind: 'KeysSampled', seed, sendingHdr };
      return out(next, SpqrMessageType.Hdr, chunk);
    }
    case 'KeysSampled': {
      const [chunk, sendingHdr] = nextChunk(state.sendingHdr);
      return out({ ...state, sendingHdr }, SpqrMessageType.Hdr, chunk);
    }
    case 'HeaderSent': {
      const [chunk, sendingEk] = nextChunk(state.sendingEk);
      return out({ ...state, sendingEk }, SpqrMessageType.Ek, chunk);
    }
    case 'Ct1Received': {
      // The ek encoder started in HeaderSent goes on: its index is not reset.
      const [chunk, sendingEk] = nextChunk(state.sendingEk);
      return out({ ...state, sendingEk }, SpqrMessageType.EkCt1Ack, chunk);
    }
    case 'EkSentCt1Received':
      return out(state, SpqrMessageType.Ct1Ack);
    case 'NoHeaderReceived':
    case 'Ct1Acknowledged':
      return out(state, SpqrMessageType.None);
    case 'HeaderReceived': {
      const m = crypto.randomBytes(32);
      const { ct1, sharedSecret } = encaps1(state.header, m);
      const secret = await deriveEpochSecret(crypto, epoch, sharedSecret);
      const auth = await updateAuthenticator(crypto, state.auth, epoch, secret);
      const [chunk, sendingCt1] = nextChunk(startSending(ct1));
      const next: Ct1Sampled = {
        kind: 'Ct1Sampled',
        epoch,
        auth,
        header: state.header,
        m,
        ct1,
        sendingCt1,
        receivingEk: state.receivingEk,
      };
      return out(next, SpqrMessageType.Ct1, chunk, { epoch, secret });
    }
    case 'Ct1Sampled':
    case 'EkReceivedCt1Sampled': {
      const [chunk, sendingCt1] = nextChunk(state.sendingCt1);
      return out({ ...state, sendingCt1 }, SpqrMessageType.Ct1, chunk);
    }
    case 'Ct2Sampled': {
      const [chunk, sendingCt2] = nextChunk(state.sendingCt2);
      return out({ ...state, sendingCt2 }, SpqrMessageType.Ct2, chunk);
    }
  }
}

function common(state: Common): Common {
  return { epoch: state.epoch, auth: state.auth };
}

/** Encaps2 and the ciphertext MAC (with the authenticator already updated by the epoch secret). */
async function sampleCt2(
  crypto: CryptoProvider,
  state: Common & Encapsulating,
  ekVector: Uint8Array,
): Promise<Ct2Sampled> {
  const ct2 = encaps2(state.header, ekVector, state.m);
  const mac = await ciphertextMac(crypto, state.auth, state.epoch, state.ct1, ct2);
  return { ...common(state), kind: 'Ct2Sampled', sendingCt2: startSending(concatBytes(ct2, mac)) };
}

function checkEk(header: Uint8Array, ekVector: Uint8Array): void {
  // spqr: "Erroneous data received from remote party" (the ek's hash or modulus check failed).
  if (!ekMatchesHeader(header, ekVector)) {
    throw new InvalidMessageError('SPQR: erroneous data received from remote party (ek does not match its header)');
  }
}

/**
 * Processes the braid part of a received message. Throws a ProtocolError (InvalidMessageError for
 * an epoch out of range or a bad ek, InvalidMacError for a bad header or ciphertext MAC) and then
 * `state` is still the state to use.
 */
export async function braidRecv(crypto: CryptoProvider, state: BraidState, message: BraidMessage): Promise<BraidStep> {
  const { epoch } = state;
  if (message.epoch > epoch) {
    // The peer's first message of the next epoch tells the send_ct side that ct2 arrived.
    if (state.kind === 'Ct2Sampled' && message.epoch === epoch + 1) {
      return { state: { kind: 'KeysUnsampled', epoch: epoch + 1, auth: state.auth } };
    }
    throw new InvalidMessageError(`SPQR: epoch not in valid range: ${message.epoch}`);
  }
  const { type, chunk } = message;
  if (message.epoch < epoch || !chunk) {
    // Ct1Ack carries no chunk but ends EkReceivedCt1Sampled; everything else chunkless is a no-op.
    if (message.epoch === epoch && state.kind === 'EkReceivedCt1Sampled' && type === SpqrMessageType.Ct1Ack) {
      return { state: await sampleCt2(crypto, state, state.ekVector) };
    }
    return { state };
  }
  const ekChunk = type === SpqrMessageType.Ek || type === SpqrMessageType.EkCt1Ack;
  const ct1Acknowledged = type === SpqrMessageType.EkCt1Ack;

  switch (state.kind) {
    case 'KeysSampled': {
      if (type !== SpqrMessageType.Ct1) break;
      // The first Ct1 chunk means the header arrived: stop sending it, start on the ek.
      const receivingCt1 = new ChunkDecoder(CT1_MESSAGE_BYTES);
      receivingCt1.add(chunk);
      const next: HeaderSent = {
        ...common(state),
        kind: 'HeaderSent',
        seed: state.seed,
        sendingEk: startSending(generateKeyPair(state.seed).ekVector),
        receivingCt1,
      };
      return { state: next };
    }
    case 'HeaderSent': {
      if (type !== SpqrMessageType.Ct1) break;
      const { decoder, message: ct1 } = receive(state.receivingCt1, chunk);
      if (!ct1) return { state: { ...state, receivingCt1: decoder } };
      const next: Ct1Received = {
        ...common(state),
        kind: 'Ct1Received',
        seed: state.seed,
        ct1,
        sendingEk: state.sendingEk,
      };
      return { state: next };
    }
    case 'Ct1Received': {
      if (type !== SpqrMessageType.Ct2) break;
      const receivingCt2 = new ChunkDecoder(CT2_MESSAGE_BYTES);
      receivingCt2.add(chunk);
      const next: EkSentCt1Received = {
        ...common(state),
        kind: 'EkSentCt1Received',
        seed: state.seed,
        ct1: state.ct1,
        receivingCt2,
      };
      return { state: next };
    }
    case 'EkSentCt1Received': {
      if (type !== SpqrMessageType.Ct2) break;
      const { decoder, message: ct2AndMac } = receive(state.receivingCt2, chunk);
      if (!ct2AndMac) return { state: { ...state, receivingCt2: decoder } };
      const ct2 = ct2AndMac.subarray(0, CT2_BYTES);
      const secret = await deriveEpochSecret(crypto, epoch, decaps(generateKeyPair(state.seed).dk, state.ct1, ct2));
      const auth = await updateAuthenticator(crypto, state.auth, epoch, secret);
      await verifyCiphertextMac(crypto, auth, epoch, state.ct1, ct2, ct2AndMac.subarray(CT2_BYTES));
      const next: NoHeaderReceived = {
        kind: 'NoHeaderReceived',
        epoch: epoch + 1,
        auth,
        receivingHdr: new ChunkDecoder(HDR_MESSAGE_BYTES),
      };
      return { state: next, epochSecret: { epoch, secret } };
    }
    case 'NoHeaderReceived': {
      if (type !== SpqrMessageType.Hdr) break;
      const { decoder, message: hdrAndMac } = receive(state.receivingHdr, chunk);
      if (!hdrAndMac) return { state: { ...state, receivingHdr: decoder } };
      const header = hdrAndMac.slice(0, HEADER_BYTES);
      await verifyHeaderMac(crypto, state.auth, epoch, header, hdrAndMac.subarray(HEADER_BYTES));
      const next: HeaderReceived = {
        ...common(state),
        kind: 'HeaderReceived',
        header,
        receivingEk: new ChunkDecoder(EK_MESSAGE_BYTES),
      };
      return { state: next };
    }
    case 'Ct1Sampled': {
      if (!ekChunk) break;
      const { decoder, message: ekVector } = receive(state.receivingEk, chunk);
      const { auth, header, m, ct1 } = state;
      if (ekVector) {
        checkEk(header, ekVector);
        if (ct1Acknowledged) return { state: await sampleCt2(crypto, state, ekVector) };
        const next: EkReceivedCt1Sampled = {
          kind: 'EkReceivedCt1Sampled',
          epoch,
          auth,
          header,
          m,
          ct1,
          ekVector,
          sendingCt1: state.sendingCt1,
        };
        return { state: next };
      }
      if (ct1Acknowledged) {
        const next: Ct1Acknowledged = { kind: 'Ct1Acknowledged', epoch, auth, header, m, ct1, receivingEk: decoder };
        return { state: next };
      }
      return { state: { ...state, receivingEk: decoder } };
    }
    case 'EkReceivedCt1Sampled': {
      if (!ct1Acknowledged) break;
      return { state: await sampleCt2(crypto, state, state.ekVector) };
    }
    case 'Ct1Acknowledged': {
      if (!ekChunk) break;
      const { decoder, message: ekVector } = receive(state.receivingEk, chunk);
      if (!ekVector) return { state: { ...state, receivingEk: decoder } };
      checkEk(state.header, ekVector);
      return { state: await sampleCt2(crypto, state, ekVector) };
    }
    case 'KeysUnsampled':
    case 'HeaderReceived':
    case 'Ct2Sampled':
      break;
  }
  return { state };
}
