import { InvalidArgumentError, InvalidMessageError } from '../errors.ts';
import { gfDiv, gfMul, gfMulAccumulate } from './gf16.ts';

/*
 * SPQR's erasure code (spqr src/encoding/polynomial.rs), which spreads the braid's larger values
 * (Hdr 96 B, Ek 1152 B, Ct1 960 B, Ct2 160 B) over one 32-byte chunk per message.
 *
 * The message is read as big-endian 16-bit symbols s_k over GF(2^16). Symbol k is the point
 * (x = ⌊k/16⌋, y = s_k) of polynomial P_{k mod 16}. Every message here is a multiple of 32 bytes,
 * so all 16 polynomials pass through the same N = len/32 abscissas 0..N−1 and have degree < N.
 * Chunk i is BE16(P_0(i)) ‖ … ‖ BE16(P_15(i)): for i < N that is simply message[32i, 32i+32)
 * (the code is systematic), beyond it is parity. Any N distinct chunks determine the message.
 *
 * Column j of chunk i is the value of P_j at x = i, so a set of chunks is a set of points shared by
 * all 16 polynomials, and one set of Lagrange weights per target x serves every column.
 *
 * There is no integrity check: a corrupt chunk decodes to a wrong message, which the layer above
 * (header MAC, ek hash, ciphertext MAC) rejects.
 */
export const CHUNK_BYTES = 32;
const COLUMNS = CHUNK_BYTES / 2; // one 16-bit symbol per polynomial
const MAX_INDEX = 0xffff; // chunk indices are field elements
const MAX_POINTS = MAX_INDEX + 1;

export interface Chunk {
  /** 0..65535 */
  index: number;
  /** CHUNK_BYTES bytes */
  data: Uint8Array;
}

/** N, the number of points per polynomial, for a message of `length` bytes. */
function pointCount(length: number): number {
  if (!Number.isSafeInteger(length) || length <= 0 || length % CHUNK_BYTES !== 0) {
    throw new InvalidArgumentError(`erasure code: message length ${length} is not a positive multiple of 32`);
  }
  const n = length / CHUNK_BYTES;
  if (n > MAX_POINTS) throw new InvalidArgumentError(`erasure code: message length ${length} is too long`);
  return n;
}

function isIndex(index: number): boolean {
  return Number.isInteger(index) && index >= 0 && index <= MAX_INDEX;
}

/**
 * Evaluates the 16 polynomials through the points (xs[i], ys[i]) at other abscissas.
 *
 * Barycentric form: with d_i = Π_{m≠i} (x_i − x_m) and L(x) = Π_m (x − x_m), the Lagrange weight
 * of point i at x is w_i = L(x) / ((x − x_i)·d_i). The d_i depend only on the xs, so they are
 * computed once (O(N²)); each target then costs O(N) for the weights and 16·N for the sums.
 * In characteristic 2, − is XOR.
 */
class Interpolator {
  private readonly denominators: number[];
  /** The points' y values, as 16 symbols per point. */
  private readonly symbols: Uint16Array[];

  constructor(
    private readonly xs: readonly number[],
    ys: readonly Uint8Array[],
  ) {
    this.denominators = xs.map((xi) => {
      let d = 1;
      for (const xm of xs) if (xm !== xi) d = gfMul(d, xi ^ xm);
      return d;
    });
    this.symbols = ys.map(toSymbols);
  }

  /** Writes the 16 BE16 values at `x` to out[offset, offset+32); `x` must not be one of the xs. */
  evaluateInto(x: number, out: Uint8Array, offset: number): void {
    let l = 1;
    for (const xm of this.xs) l = gfMul(l, x ^ xm);
    const sums = new Uint16Array(COLUMNS);
    for (let i = 0; i < this.xs.length; i++) {
      const w = gfDiv(l, gfMul(x ^ (this.xs[i] as number), this.denominators[i] as number));
      gfMulAccumulate(sums, w, this.symbols[i] as Uint16Array);
    }
    for (let j = 0; j < COLUMNS; j++) {
      const s = sums[j] as number;
      out[offset + 2 * j] = s >>> 8;
      out[offset + 2 * j + 1] = s & 0xff;
    }
  }
}

/** The 16 big-endian symbols of a 32-byte chunk. */
function toSymbols(data: Uint8Array): Uint16Array {
  const symbols = new Uint16Array(COLUMNS);
  for (let j = 0; j < COLUMNS; j++) symbols[j] = ((data[2 * j] as number) << 8) | (data[2 * j + 1] as number);
  return symbols;
}

/** Systematic polynomial code: chunk i < N is message[32i, 32i+32), later ones are parity. */
export class ChunkEncoder {
  /** A private copy of the message; do not mutate. */
  readonly message: Uint8Array;
  private readonly n: number;
  private interpolator: Interpolator | undefined; // built on the first parity chunk

  /** `message` must be a positive multiple of 32 bytes long (InvalidArgumentError otherwise). */
  constructor(message: Uint8Array) {
    this.n = pointCount(message.length);
    this.message = message.slice();
  }

  /** Chunk `index` (0..65535, InvalidArgumentError otherwise): deterministic, a fresh array. */
  chunk(index: number): Uint8Array {
    if (!isIndex(index)) throw new InvalidArgumentError(`erasure code: chunk index ${index} out of range`);
    if (index < this.n) return this.message.slice(index * CHUNK_BYTES, (index + 1) * CHUNK_BYTES);
    if (this.interpolator === undefined) {
      const xs = Array.from({ length: this.n }, (_, i) => i);
      const ys = xs.map((i) => this.message.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES));
      this.interpolator = new Interpolator(xs, ys);
    }
    const out = new Uint8Array(CHUNK_BYTES);
    this.interpolator.evaluateInto(index, out, 0);
    return out;
  }
}

/** Collects chunks of a message of known length; decodes from any N distinct indices. */
export class ChunkDecoder {
  readonly messageLength: number;
  private readonly n: number;
  /** Chunk data by index. Never handed out by reference, so it may be shared between clones. */
  private held = new Map<number, Uint8Array>();
  private decoded: Uint8Array | undefined;

  /** `messageLength` must be a positive multiple of 32 (InvalidArgumentError otherwise). */
  constructor(messageLength: number) {
    this.n = pointCount(messageLength);
    this.messageLength = messageLength;
  }

  /**
   * Adds one chunk (InvalidMessageError if its index is outside 0..65535 or its data is not 32
   * bytes). A repeated index is ignored, whatever its data: the first copy wins. Returns the decoded
   * message (a fresh copy) once N distinct chunks are held, otherwise undefined. After that the
   * decoder is complete and frozen: further chunks are validated, not stored, and the same message
   * is returned again.
   *
   * spqr stores a point only if x < N or fewer than N points are held, then decodes from the N
   * smallest x. Here decoding runs as soon as N are held, so before completion every new index is
   * stored, and the N held are exactly the N to decode from.
   */
  add(chunk: Chunk): Uint8Array | undefined {
    if (!isIndex(chunk.index)) throw new InvalidMessageError(`erasure code: chunk index ${chunk.index} out of range`);
    if (!(chunk.data instanceof Uint8Array) || chunk.data.length !== CHUNK_BYTES) {
      throw new InvalidMessageError('erasure code: chunk data is not 32 bytes');
    }
    if (this.decoded === undefined && !this.held.has(chunk.index)) {
      this.held.set(chunk.index, chunk.data.slice());
      if (this.held.size === this.n) this.decoded = this.decode();
    }
    return this.decoded?.slice();
  }

  /** The chunks held, ascending by index, for serialization (copies). */
  chunks(): Chunk[] {
    return [...this.held.entries()].sort(([a], [b]) => a - b).map(([index, data]) => ({ index, data: data.slice() }));
  }

  /**
   * Rebuilds a decoder from `chunks()` output. The chunks are added in ascending index order, so
   * if more than N are given the N smallest indices are the ones used.
   */
  static restore(messageLength: number, chunks: Chunk[]): ChunkDecoder {
    const decoder = new ChunkDecoder(messageLength);
    for (const chunk of [...chunks].sort((a, b) => a.index - b.index)) decoder.add(chunk);
    return decoder;
  }

  clone(): ChunkDecoder {
    const copy = new ChunkDecoder(this.messageLength);
    copy.held = new Map(this.held);
    copy.decoded = this.decoded;
    return copy;
  }

  /** Requires exactly N held chunks. */
  private decode(): Uint8Array {
    const xs = [...this.held.keys()].sort((a, b) => a - b);
    const out = new Uint8Array(this.messageLength);
    let interpolator: Interpolator | undefined;
    for (let x = 0; x < this.n; x++) {
      const systematic = this.held.get(x);
      if (systematic !== undefined) {
        out.set(systematic, x * CHUNK_BYTES);
        continue;
      }
      interpolator ??= new Interpolator(
        xs,
        xs.map((i) => this.held.get(i) as Uint8Array),
      );
      interpolator.evaluateInto(x, out, x * CHUNK_BYTES);
    }
    return out;
  }
}
