import { InvalidMessageError } from '../errors.ts';

/*
 * SPQR's per-message framing (SignalMessage field 5, spqr src/v1/chunked/states/serialize.rs):
 *   0x01 ‖ varint(epoch ≥ 1) ‖ varint(index) ‖ type ‖ [varint(chunk index ≤ 65535) ‖ 32 bytes]
 * Types 1 (Hdr), 2 (Ek), 3 (EkCt1Ack), 5 (Ct1) and 6 (Ct2) carry a chunk; 0 (None) and 4 (Ct1Ack) do not.
 * The index is the sender's chain counter in chain epoch `epoch − 1`.
 *
 * As in spqr 1.6.0, bytes after a complete message are ignored (spqr keeps that room for later
 * protocol versions; field 5 is covered by the Double Ratchet MAC, so only the peer can put them
 * there) and overlong varints are read. Unlike it, any version byte but 0x01 is rejected: 0.103
 * reads a version ≥ 2 as V1 before negotiation and rejects it after, and a Hush session never
 * negotiates down, so there is nothing to gain from accepting it.
 */
export const SPQR_VERSION_V1 = 0x01;

export enum SpqrMessageType {
  None = 0,
  Hdr = 1,
  Ek = 2,
  EkCt1Ack = 3,
  Ct1Ack = 4,
  Ct1 = 5,
  Ct2 = 6,
}

export interface SpqrChunk {
  index: number;
  data: Uint8Array;
}

export interface SpqrMessage {
  epoch: number;
  index: number;
  type: SpqrMessageType;
  chunk?: SpqrChunk;
}

const CHUNK_LENGTH = 32;

function hasChunk(type: SpqrMessageType): boolean {
  return type !== SpqrMessageType.None && type !== SpqrMessageType.Ct1Ack;
}

function writeVarint(out: number[], value: number): void {
  let v = value;
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

export function encodeSpqrMessage(message: SpqrMessage): Uint8Array {
  const out: number[] = [SPQR_VERSION_V1];
  writeVarint(out, message.epoch);
  writeVarint(out, message.index);
  out.push(message.type);
  if (hasChunk(message.type)) {
    if (!message.chunk || message.chunk.data.length !== CHUNK_LENGTH)
      throw new InvalidMessageError('SPQR chunk missing');
    writeVarint(out, message.chunk.index);
    out.push(...message.chunk.data);
  }
  return Uint8Array.from(out);
}

export function decodeSpqrMessage(bytes: Uint8Array): SpqrMessage {
  if (bytes.length === 0) throw new InvalidMessageError('post-quantum ratchet message missing (peer without SPQR)');
  if (bytes[0] !== SPQR_VERSION_V1) throw new InvalidMessageError(`SPQR message version ${bytes[0]} not supported`);
  let pos = 1;
  const readVarint = (max: number): number => {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      const b = bytes[pos++];
      if (b === undefined) throw new InvalidMessageError('SPQR message truncated');
      value += (b & 0x7f) * scale;
      if (value > max) throw new InvalidMessageError('SPQR varint out of range');
      if ((b & 0x80) === 0) return value;
      scale *= 128;
    }
    throw new InvalidMessageError('SPQR varint too long');
  };
  const epoch = readVarint(Number.MAX_SAFE_INTEGER);
  const index = readVarint(0xffffffff);
  const type = bytes[pos++];
  if (type === undefined || type > SpqrMessageType.Ct2) throw new InvalidMessageError('SPQR message type invalid');
  if (epoch < 1) throw new InvalidMessageError('SPQR epoch must be at least 1');
  const message: SpqrMessage = { epoch, index, type };
  if (hasChunk(type)) {
    const chunkIndex = readVarint(0xffff);
    if (bytes.length - pos < CHUNK_LENGTH) throw new InvalidMessageError('SPQR chunk truncated');
    message.chunk = { index: chunkIndex, data: bytes.slice(pos, pos + CHUNK_LENGTH) };
  }
  return message;
}
