/** Curve25519 points with a torsion component, for tests of the canonical-key check (via @noble/curves). */
import { invert, mod } from '@noble/curves/abstract/modular.js';
import { ed25519 } from '@noble/curves/ed25519.js';
import { bytesToNumberLE, numberToBytesLE } from '@noble/curves/utils.js';

export const P = 2n ** 255n - 19n;
export const L = ed25519.Point.CURVE().n;
export type EdwardsPoint = InstanceType<typeof ed25519.Point>;

/** One of the two Edwards points with this u-coordinate; throws for a twist point. */
export function edwards(u: Uint8Array): EdwardsPoint {
  const x = bytesToNumberLE(u);
  if (x + 1n === P) throw new Error('u = −1 has no Edwards image');
  return ed25519.Point.fromBytes(numberToBytesLE(mod((x - 1n) * invert(x + 1n, P), P), 32));
}

export const montgomery = (point: EdwardsPoint) => ed25519.utils.toMontgomery(point.toBytes());

/** A point of order exactly 8: the torsion part, [L]R, of some point R. */
export function torsionGenerator(): EdwardsPoint {
  for (let y = 2n; y < 100n; y++) {
    let point: EdwardsPoint;
    try {
      point = ed25519.Point.fromBytes(numberToBytesLE(y, 32));
    } catch {
      continue; // y is not on the curve
    }
    // noble multiplies only by scalars below L: [L]R = [L − 1]R + R.
    const torsion = point.multiplyUnsafe(L - 1n).add(point);
    if (!torsion.multiplyUnsafe(4n).is0()) return torsion;
  }
  throw new Error('no point of order 8 found');
}

/** The u-coordinate of (the point of) `u` plus `multiple` times a point of order 8. */
export function withTorsion(u: Uint8Array, multiple: bigint): Uint8Array {
  return montgomery(edwards(u).add(torsionGenerator().multiplyUnsafe(multiple)));
}
