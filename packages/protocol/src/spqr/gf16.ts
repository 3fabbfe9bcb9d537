import { InvalidArgumentError } from '../errors.ts';

/*
 * GF(2^16) for SPQR's erasure code: polynomial basis, modulus x^16 + x^12 + x^3 + x + 1 (0x1100B).
 * Elements are integers 0..0xffff; addition is XOR (so subtraction is XOR too).
 *
 * Multiplication goes through log/exp tables. x (0x0002) generates the multiplicative group,
 * which has order 65535, so every non-zero a is exp[log a] and a·b = exp[log a + log b].
 * The exp table holds two periods (131070 entries) so that a sum of two logs, or a log plus
 * ORDER minus a log, indexes it directly without a `% 65535`. The tables (about 390 KiB) are built
 * on first use rather than at import.
 *
 * Arguments are not range-checked: callers pass integers in 0..0xffff.
 */
const MODULUS = 0x1100b;
const ORDER = 0xffff; // size of the multiplicative group

let EXP = new Uint16Array(0);
let LOG = new Uint16Array(0);

function ensureTables(): void {
  if (EXP.length !== 0) return;
  const exp = new Uint16Array(2 * ORDER);
  const log = new Uint16Array(ORDER + 1); // log[0] stays 0 and is never read
  let x = 1;
  for (let i = 0; i < ORDER; i++) {
    exp[i] = x;
    exp[i + ORDER] = x;
    log[x] = i;
    x <<= 1; // multiply by the generator x ...
    if (x & 0x10000) x ^= MODULUS; // ... and reduce modulo the field polynomial
  }
  EXP = exp;
  LOG = log;
}

export function gfMul(a: number, b: number): number {
  if (a === 0 || b === 0) return 0;
  ensureTables();
  return EXP[(LOG[a] as number) + (LOG[b] as number)] as number;
}

/** The multiplicative inverse; 0 has none. */
export function gfInv(a: number): number {
  if (a === 0) throw new InvalidArgumentError('GF(2^16): 0 has no inverse');
  ensureTables();
  return EXP[ORDER - (LOG[a] as number)] as number;
}

/** a / b = a · b⁻¹; b must be non-zero. */
export function gfDiv(a: number, b: number): number {
  if (b === 0) throw new InvalidArgumentError('GF(2^16): division by 0');
  if (a === 0) return 0;
  ensureTables();
  return EXP[(LOG[a] as number) + ORDER - (LOG[b] as number)] as number;
}

/**
 * acc[j] ^= c · v[j] for every j (a scaled vector added to another; the erasure code's inner loop).
 * The log of c is looked up once instead of once per element.
 */
export function gfMulAccumulate(acc: Uint16Array, c: number, v: Uint16Array): void {
  if (c === 0) return;
  ensureTables();
  const logC = LOG[c] as number;
  for (let j = 0; j < v.length; j++) {
    const y = v[j] as number;
    if (y !== 0) acc[j] = (acc[j] as number) ^ (EXP[logC + (LOG[y] as number)] as number);
  }
}
