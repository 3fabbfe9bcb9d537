import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fromHex, toHex } from '../src/bytes.ts';
import { InvalidArgumentError, InvalidMessageError } from '../src/errors.ts';
import { CHUNK_BYTES, type Chunk, ChunkDecoder, ChunkEncoder } from '../src/spqr/erasure.ts';
import { gfDiv, gfInv, gfMul, gfMulAccumulate } from '../src/spqr/gf16.ts';

// Self-check vectors for SPQR (not Signal's; produced by a model that interoperated with 0.103).
const spqrVectors = JSON.parse(
  readFileSync(resolve(import.meta.dirname, '../../../../shared/vectors/spqr-model-vectors.json'), 'utf8'),
) as {
  gf16_mul: { a: string; b: string; a_times_b: string; a_div_b: string }[];
  erasure_96_bytes_0_to_95: { index: number; data: string }[];
};

/** The braid's chunked sizes: Hdr‖MAC, Ct2‖MAC, Ct1, Ek. */
const SIZES = [96, 160, 960, 1152];

/** Deterministic PRNG (mulberry32), so a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

function randomBytes(random: () => number, length: number): Uint8Array {
  return Uint8Array.from({ length }, () => Math.floor(random() * 256));
}

function shuffle<T>(random: () => number, items: T[]): T[] {
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/** Independent reference: shift-and-add multiplication reduced by 0x1100B, no tables. */
function clmulReference(a: number, b: number): number {
  let product = 0;
  for (let bit = 0; bit < 16; bit++) if ((b >>> bit) & 1) product ^= a << bit;
  for (let bit = 30; bit >= 16; bit--) if ((product >>> bit) & 1) product ^= 0x1100b << (bit - 16);
  return product;
}

function gfPow(a: number, e: number): number {
  let result = 1;
  let base = a;
  for (let k = e; k > 0; k >>>= 1) {
    if (k & 1) result = gfMul(result, base);
    base = gfMul(base, base);
  }
  return result;
}

/**
 * Independent reference for one chunk: plain Lagrange interpolation, symbol by symbol, straight
 * from the definition (no shared weights, no barycentric form).
 */
function referenceChunk(message: Uint8Array, x: number): Uint8Array {
  const n = message.length / 32;
  const out = new Uint8Array(32);
  for (let j = 0; j < 16; j++) {
    let value = 0;
    for (let i = 0; i < n; i++) {
      let weight = 1;
      for (let m = 0; m < n; m++) if (m !== i) weight = gfMul(weight, gfDiv(x ^ m, i ^ m));
      const y = ((message[32 * i + 2 * j] as number) << 8) | (message[32 * i + 2 * j + 1] as number);
      value ^= gfMul(weight, y);
    }
    out[2 * j] = value >>> 8;
    out[2 * j + 1] = value & 0xff;
  }
  return out;
}

/** Adds the chunks in order; expects undefined until the last one, and returns what that one gave. */
function decodeExactly(decoder: ChunkDecoder, chunks: Chunk[]): Uint8Array | undefined {
  for (const [k, chunk] of chunks.entries()) {
    const result = decoder.add(chunk);
    if (k < chunks.length - 1) expect(result).toBeUndefined();
    else return result;
  }
  return undefined;
}

function chunksAt(encoder: ChunkEncoder, indices: number[]): Chunk[] {
  return indices.map((index) => ({ index, data: encoder.chunk(index) }));
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, k) => from + k);

describe('GF(2^16) with modulus 0x1100B', () => {
  it('multiplies and divides as the model vectors say', () => {
    expect(spqrVectors.gf16_mul.length).toBeGreaterThan(0);
    for (const v of spqrVectors.gf16_mul) {
      const a = Number.parseInt(v.a, 16);
      const b = Number.parseInt(v.b, 16);
      expect(gfMul(a, b).toString(16)).toBe(v.a_times_b);
      expect(gfMul(b, a).toString(16)).toBe(v.a_times_b);
      expect(gfDiv(a, b).toString(16)).toBe(v.a_div_b);
    }
  });

  it('agrees with table-free shift-and-add multiplication', () => {
    const random = rng(1);
    for (let k = 0; k < 5000; k++) {
      const a = Math.floor(random() * 0x10000);
      const b = Math.floor(random() * 0x10000);
      expect(gfMul(a, b)).toBe(clmulReference(a, b));
    }
    for (const a of [0, 1, 2, 0x8000, 0xffff]) {
      for (const b of [0, 1, 2, 0x8000, 0xffff]) expect(gfMul(a, b)).toBe(clmulReference(a, b));
    }
  });

  it('obeys the field laws on random elements', () => {
    const random = rng(2);
    const element = () => Math.floor(random() * 0x10000);
    for (let k = 0; k < 2000; k++) {
      const [a, b, c] = [element(), element(), element()];
      expect(gfMul(a, b ^ c)).toBe(gfMul(a, b) ^ gfMul(a, c)); // distributive
      expect(gfMul(gfMul(a, b), c)).toBe(gfMul(a, gfMul(b, c))); // associative
      expect(gfMul(a, 1)).toBe(a);
      expect(gfMul(a, 0)).toBe(0);
      if (a !== 0) {
        expect(gfMul(a, gfInv(a))).toBe(1);
        expect(gfInv(a)).toBe(gfPow(a, 0xfffe)); // a^(2^16 − 2)
        expect(gfDiv(gfMul(b, a), a)).toBe(b);
        expect(gfDiv(b, a)).toBe(gfMul(b, gfInv(a)));
      }
    }
    expect(gfInv(1)).toBe(1);
    expect(gfDiv(0, 7)).toBe(0);
  });

  it('has x = 2 as a generator of order 65535', () => {
    expect(gfPow(2, 0xffff)).toBe(1);
    for (const p of [3, 5, 17, 257]) expect(gfPow(2, 0xffff / p)).not.toBe(1); // 65535 = 3·5·17·257
  });

  it('multiply-accumulates a vector', () => {
    const random = rng(3);
    const acc = Uint16Array.from({ length: 16 }, () => Math.floor(random() * 0x10000));
    const v = Uint16Array.from({ length: 16 }, (_, j) => (j === 3 ? 0 : Math.floor(random() * 0x10000)));
    const expected = acc.map((a, j) => a ^ gfMul(0x1234, v[j] as number));
    gfMulAccumulate(acc, 0x1234, v);
    expect([...acc]).toEqual([...expected]);
    gfMulAccumulate(acc, 0, v);
    expect([...acc]).toEqual([...expected]);
  });

  it('rejects 0 as a divisor', () => {
    expect(() => gfInv(0)).toThrow(InvalidArgumentError);
    expect(() => gfDiv(5, 0)).toThrow(InvalidArgumentError);
    expect(() => gfDiv(0, 0)).toThrow(InvalidArgumentError);
  });
});

describe('erasure code vectors (the 96 bytes 0x00..0x5f)', () => {
  const message = Uint8Array.from(range(0, 96));
  const vectors = spqrVectors.erasure_96_bytes_0_to_95;

  it('encodes the vector chunks, systematic and parity (including 100 and 65535)', () => {
    const encoder = new ChunkEncoder(message);
    expect(vectors.map((v) => v.index)).toEqual(expect.arrayContaining([0, 1, 2, 3, 100, 65535]));
    for (const v of vectors) expect(toHex(encoder.chunk(v.index))).toBe(v.data);
    // The facts' worked example: with 3 points, P(3) = y0 ⊕ y1 ⊕ y2.
    expect(encoder.chunk(3)).toEqual(
      message.subarray(0, 32).map((b, k) => b ^ (message[32 + k] as number) ^ (message[64 + k] as number)),
    );
  });

  it('decodes the message from vector chunks only, parity included', () => {
    const byIndex = new Map(vectors.map((v) => [v.index, fromHex(v.data)]));
    for (const indices of [
      [100, 65535, 3],
      [65535, 1, 100],
      [4, 5, 0],
    ]) {
      const decoder = new ChunkDecoder(96);
      const chunks = indices.map((index) => ({ index, data: byIndex.get(index) as Uint8Array }));
      expect(toHex(decodeExactly(decoder, chunks) as Uint8Array)).toBe(toHex(message));
    }
  });

  it('matches a plain Lagrange reference at other sizes', () => {
    const random = rng(4);
    for (const size of [160, 960]) {
      const msg = randomBytes(random, size);
      const encoder = new ChunkEncoder(msg);
      for (const index of [size / 32, size / 32 + 7, 1000, 65535]) {
        expect(toHex(encoder.chunk(index))).toBe(toHex(referenceChunk(msg, index)));
      }
    }
  });
});

describe.each(SIZES)('erasure code round trips, %i bytes', (size) => {
  const n = size / CHUNK_BYTES;
  const random = rng(size);
  const message = randomBytes(random, size);
  const encoder = new ChunkEncoder(message);

  it('is systematic, and deterministic', () => {
    for (let i = 0; i < n; i++) expect(encoder.chunk(i)).toEqual(message.subarray(32 * i, 32 * i + 32));
    expect(encoder.chunk(n + 3)).toEqual(new ChunkEncoder(message.slice()).chunk(n + 3));
    expect(encoder.chunk(n + 3)).toHaveLength(CHUNK_BYTES);
    expect(encoder.message).toEqual(message);
  });

  it('decodes from all systematic chunks', () => {
    expect(decodeExactly(new ChunkDecoder(size), chunksAt(encoder, range(0, n)))).toEqual(message);
  });

  it('decodes from parity chunks only', () => {
    expect(decodeExactly(new ChunkDecoder(size), chunksAt(encoder, range(n, 2 * n)))).toEqual(message);
    expect(
      decodeExactly(new ChunkDecoder(size), chunksAt(encoder, shuffle(random, range(n + 100, 2 * n + 100)))),
    ).toEqual(message);
  });

  it('decodes from indices near 65535', () => {
    const top = range(65536 - n, 65536);
    expect(decodeExactly(new ChunkDecoder(size), chunksAt(encoder, top.reverse()))).toEqual(message);
    // Mixed with systematic ones (the one at 0 is used directly, the rest interpolated).
    const mixed = [0, ...range(65536 - (n - 1), 65536)];
    expect(decodeExactly(new ChunkDecoder(size), chunksAt(encoder, shuffle(random, mixed)))).toEqual(message);
  });

  it('decodes from random N-subsets of 0..N+40, with duplicates interleaved', () => {
    for (let trial = 0; trial < 20; trial++) {
      const indices = shuffle(random, range(0, n + 41)).slice(0, n);
      const decoder = new ChunkDecoder(size);
      let result: Uint8Array | undefined;
      for (const [k, index] of indices.entries()) {
        result = decoder.add({ index, data: encoder.chunk(index) });
        if (k < n - 1) {
          expect(result).toBeUndefined();
          // Re-send an already held chunk, sometimes with garbage: ignored either way.
          const again = indices[Math.floor(random() * (k + 1))] as number;
          const data = random() < 0.5 ? encoder.chunk(again) : randomBytes(random, 32);
          expect(decoder.add({ index: again, data })).toBeUndefined();
        }
      }
      expect(result).toEqual(message);
      expect(decoder.chunks().map((c) => c.index)).toEqual(indices.slice().sort((a, b) => a - b));
    }
  });

  it('adds incrementally: undefined until N distinct, then the same message every time', () => {
    const decoder = new ChunkDecoder(size);
    const indices = shuffle(random, range(0, 2 * n));
    for (let k = 0; k < n - 1; k++) {
      expect(decoder.add({ index: indices[k] as number, data: encoder.chunk(indices[k] as number) })).toBeUndefined();
      expect(decoder.chunks()).toHaveLength(k + 1);
    }
    const last = indices[n - 1] as number;
    const decoded = decoder.add({ index: last, data: encoder.chunk(last) });
    expect(decoded).toEqual(message);
    (decoded as Uint8Array).fill(0); // the caller's copy; the decoder keeps its own
    const extra = indices[n] as number;
    expect(decoder.add({ index: extra, data: randomBytes(random, 32) })).toEqual(message);
    expect(decoder.add({ index: last, data: encoder.chunk(last) })).toEqual(message);
    expect(decoder.chunks()).toHaveLength(n); // frozen once complete
  });

  it('restores and clones to the same results', () => {
    const indices = shuffle(random, range(0, n + 40)).slice(0, n);
    const chunks = chunksAt(encoder, indices);
    const partial = new ChunkDecoder(size);
    for (const chunk of chunks.slice(0, n - 1)) partial.add(chunk);

    const held = partial.chunks();
    expect(held.map((c) => c.index)).toEqual(
      indices
        .slice(0, n - 1)
        .slice()
        .sort((a, b) => a - b),
    );
    const restored = ChunkDecoder.restore(size, held);
    const cloned = partial.clone();
    expect(restored.messageLength).toBe(size);
    expect(restored.chunks()).toEqual(held);
    expect(cloned.chunks()).toEqual(held);

    const lastChunk = chunks[n - 1] as Chunk;
    expect(restored.add(lastChunk)).toEqual(message);
    expect(cloned.add(lastChunk)).toEqual(message);
    // The clone is independent: the original is still one short.
    expect(partial.chunks()).toHaveLength(n - 1);
    // A wrong last chunk in the original does not reach the clone's result.
    expect(partial.add({ index: lastChunk.index, data: randomBytes(random, 32) })).not.toEqual(message);
    expect(cloned.add(lastChunk)).toEqual(message);

    // A complete decoder restores and clones complete.
    const full = cloned.clone();
    expect(full.add(chunks[0] as Chunk)).toEqual(message);
    const fullRestored = ChunkDecoder.restore(size, cloned.chunks());
    expect(fullRestored.add(chunks[0] as Chunk)).toEqual(message);
  });

  it('restores from more than N chunks using the N smallest indices', () => {
    // A bad chunk at a larger index than the N smallest must not be used.
    const good = chunksAt(encoder, range(n + 1, 2 * n + 1));
    const bad = { index: 2 * n + 5, data: randomBytes(random, 32) };
    const decoder = ChunkDecoder.restore(size, [bad, ...good.reverse()]);
    expect(decoder.add({ index: 0, data: encoder.chunk(0) })).toEqual(message);
  });

  it('copies chunks in and out', () => {
    const decoder = new ChunkDecoder(size);
    const chunks = chunksAt(encoder, range(n, 2 * n));
    for (const chunk of chunks.slice(0, n - 1)) {
      decoder.add(chunk);
      chunk.data.fill(0xaa); // the caller reuses its buffer
    }
    for (const chunk of decoder.chunks()) chunk.data.fill(0x55);
    expect(decoder.add(chunks[n - 1] as Chunk)).toEqual(message);

    const input = message.slice();
    const ownEncoder = new ChunkEncoder(input);
    const parity = ownEncoder.chunk(n);
    input.fill(0);
    expect(ownEncoder.chunk(n)).toEqual(parity);
    ownEncoder.chunk(0).fill(0);
    expect(ownEncoder.chunk(0)).toEqual(message.subarray(0, 32));
  });

  it('decodes a wrong chunk to a different message, without an error (no integrity check)', () => {
    const indices = range(n, 2 * n); // parity only, so the damage spreads by interpolation
    const chunks = chunksAt(encoder, indices);
    const corrupt = (chunks[1] as Chunk).data;
    corrupt[5] = (corrupt[5] as number) ^ 0x01;
    const decoded = decodeExactly(new ChunkDecoder(size), chunks) as Uint8Array;
    expect(decoded).toHaveLength(size);
    expect(decoded).not.toEqual(message);

    // A wrong systematic chunk is copied straight through: exactly that chunk's bytes differ.
    const systematic = chunksAt(encoder, range(0, n));
    (systematic[0] as Chunk).data[0] = ((systematic[0] as Chunk).data[0] as number) ^ 0xff;
    const direct = decodeExactly(new ChunkDecoder(size), systematic) as Uint8Array;
    expect(direct[0]).toBe((message[0] as number) ^ 0xff);
    expect(direct.subarray(1)).toEqual(message.subarray(1));
  });
});

describe('erasure code input validation', () => {
  it('rejects message lengths that are not positive multiples of 32', () => {
    for (const length of [0, 31, 33, 95, 32 * 65537]) {
      expect(() => new ChunkEncoder(new Uint8Array(length))).toThrow(InvalidArgumentError);
    }
    for (const length of [0, -32, 31, 33, 1.5, Number.NaN, 32 * 65537]) {
      expect(() => new ChunkDecoder(length)).toThrow(InvalidArgumentError);
      expect(() => ChunkDecoder.restore(length, [])).toThrow(InvalidArgumentError);
    }
  });

  it('rejects encoder indices outside 0..65535', () => {
    const encoder = new ChunkEncoder(new Uint8Array(96));
    for (const index of [-1, 65536, 1.5, Number.NaN]) expect(() => encoder.chunk(index)).toThrow(InvalidArgumentError);
    expect(encoder.chunk(65535)).toHaveLength(32);
  });

  it('rejects chunks with a bad index or data length, and keeps nothing of them', () => {
    const decoder = new ChunkDecoder(96);
    const good = new Uint8Array(32);
    for (const index of [-1, 65536, 2.5, Number.NaN]) {
      expect(() => decoder.add({ index, data: good })).toThrow(InvalidMessageError);
    }
    for (const length of [0, 31, 33, 64]) {
      expect(() => decoder.add({ index: 1, data: new Uint8Array(length) })).toThrow(InvalidMessageError);
    }
    expect(() => decoder.add({ index: 1, data: [...good] as unknown as Uint8Array })).toThrow(InvalidMessageError);
    expect(decoder.chunks()).toEqual([]);
    expect(() => ChunkDecoder.restore(96, [{ index: 70000, data: good }])).toThrow(InvalidMessageError);
    // Validation still applies after completion.
    const message = Uint8Array.from(range(0, 96));
    const encoder = new ChunkEncoder(message);
    for (const i of [0, 1]) decoder.add({ index: i, data: encoder.chunk(i) });
    expect(decoder.add({ index: 2, data: encoder.chunk(2) })).toEqual(message);
    expect(() => decoder.add({ index: 3, data: new Uint8Array(31) })).toThrow(InvalidMessageError);
  });
});
