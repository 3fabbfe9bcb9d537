import { sha3_256, sha3_512, shake256 } from '@noble/hashes/sha3.js';
import { XOF128, genCrystals } from '@noble/post-quantum/_crystals.js';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { constantTimeEqual } from '../bytes.ts';
import { InvalidArgumentError, InvalidMessageError } from '../errors.ts';

/*
 * Incremental ML-KEM-768 (FIPS 203) for the SPQR braid.
 *
 * The send_ek side publishes its encapsulation key in two parts:
 *
 *   header    = ρ ‖ H(ek)            64 bytes, H = SHA3-256, ek = t̂ ‖ ρ (the standard order)
 *   ek vector = ByteEncode₁₂(t̂)      1152 bytes
 *
 * and the send_ct side encapsulates in two steps. Algorithm 17 (ML-KEM.Encaps_internal) and
 * Algorithm 14 (K-PKE.Encrypt) split cleanly along that line:
 *
 *   Encaps1(header, m):  (K, r) = G(m ‖ H(ek))                    needs H(ek) only
 *                        u = NTT⁻¹(Âᵀ ∘ r̂) + e₁                   needs ρ only
 *                        ct1 = ByteEncode₁₀(Compress₁₀(u))         960 bytes
 *   Encaps2(t̂, m):       v = NTT⁻¹(t̂ᵀ ∘ r̂) + e₂ + Decompress₁(m)
 *                        ct2 = ByteEncode₄(Compress₄(v))           128 bytes
 *
 * ct1 ‖ ct2 is exactly the standard ciphertext of Encaps(ek, m), so key generation, Encaps2 and
 * decapsulation are @noble/post-quantum's ml_kem768. Only Encaps1 needs K-PKE internals that noble
 * does not expose (its encapsulate always hashes the full ek): they are below, built on noble's
 * NTT and bit packing from genCrystals, its SHAKE128 matrix reader XOF128, and @noble/hashes.
 *
 * The caller supplies every random input (the key generation seed and m), so that all functions
 * here are deterministic; state between Encaps1 and Encaps2 is just (header, m).
 * Like noble, this gives no constant-time guarantees beyond those of the JS engine.
 */

export const HEADER_BYTES = 64;
export const EK_VECTOR_BYTES = 1152;
export const CT1_BYTES = 960;
export const CT2_BYTES = 128;
export const DK_BYTES = 2400;
export const SHARED_SECRET_BYTES = 32;
const SEED_BYTES = 64;
const M_BYTES = 32;
const EK_BYTES = EK_VECTOR_BYTES + 32;

// ML-KEM-768 parameters (FIPS 203 Table 2): k = 3, η₁ = η₂ = 2, d_u = 10, d_v = 4.
const N = 256;
const Q = 3329;
const K = 3;
const DU = 10;

// Kyber-mode CRYSTALS helpers, configured exactly as noble's ml-kem.js does: ζ = 17, 7-bit
// bit reversal, inverse NTT scaled by 3303 = 128⁻¹ mod q. Coefficients stay reduced in [0, q).
const crystals = genCrystals({
  newPoly: (n: number) => new Uint16Array(n),
  N,
  Q,
  F: 3303,
  ROOT_OF_UNITY: 17,
  brvBits: 7,
  isKyber: true,
});

// γᵢ = ζ^(2·BitRev₇(i)+1) mod q, i < 128: the moduli X² − γᵢ of the base-case multiply
// (FIPS 203 Algorithm 11, Appendix A).
const GAMMAS = (() => {
  const out = new Uint16Array(N / 2);
  for (let i = 0; i < N / 2; i++) {
    let brv = 0;
    for (let b = 0; b < 7; b++) brv |= ((i >> b) & 1) << (6 - b);
    let g = 1;
    for (let e = 0; e < 2 * brv + 1; e++) g = (g * 17) % Q;
    out[i] = g;
  }
  return out;
})();

// Compress_10 (round(x·2¹⁰/q) mod 2¹⁰) fused with ByteEncode_10, 10-bit little-endian words.
// round(x·1024/q) = ⌊(2048x + q) / 2q⌋; bitsCoder masks the result to 10 bits.
// decode is Decompress_10 (round(y·q/2¹⁰)), unused here but required by the coder shape.
const ct1Coder = crystals.bitsCoder(DU, {
  encode: (x: number) => Math.floor((x * 2048 + Q) / (2 * Q)),
  decode: (y: number) => (y * Q + 512) >>> DU,
});
const POLY_CT1_BYTES = ct1Coder.bytesLen; // 320

/** Algorithm 7 (SampleNTT): rejection-sample 12-bit values < q from a SHAKE128(ρ‖j‖i) reader. */
function sampleNTT(read: () => Uint8Array): Uint16Array {
  const a = new Uint16Array(N);
  for (let j = 0; j < N; ) {
    const b = read(); // 168-byte SHAKE128 block, a multiple of 3
    for (let i = 0; j < N && i < b.length; i += 3) {
      const b0 = b[i] as number;
      const b1 = b[i + 1] as number;
      const b2 = b[i + 2] as number;
      const d1 = b0 | ((b1 & 0x0f) << 8);
      const d2 = (b1 >> 4) | (b2 << 4);
      if (d1 < Q) a[j++] = d1;
      if (d2 < Q && j < N) a[j++] = d2;
    }
  }
  return a;
}

/** Algorithm 8 (SamplePolyCBD₂) of PRF₂(r, nonce) = SHAKE256(r ‖ nonce), 128 bytes. */
function sampleCBD2(r: Uint8Array, nonce: number): Uint16Array {
  const input = new Uint8Array(33);
  input.set(r);
  input[32] = nonce;
  const buf = shake256(input, { dkLen: 128 });
  const f = new Uint16Array(N);
  for (let i = 0; i < buf.length; i++) {
    // Sum adjacent bit pairs: 2-bit fields t = (b0+b1, b2+b3, b4+b5, b6+b7).
    const b = buf[i] as number;
    const t = (b & 0x55) + ((b >> 1) & 0x55);
    const c0 = (t & 3) - ((t >> 2) & 3); // x − y for the first 4 bits, in [−2, 2]
    const c1 = ((t >> 4) & 3) - ((t >> 6) & 3);
    f[2 * i] = c0 < 0 ? c0 + Q : c0;
    f[2 * i + 1] = c1 < 0 ? c1 + Q : c1;
  }
  buf.fill(0);
  return f;
}

/** acc += a ∘ b in T_q (Algorithms 10 and 11), unreduced: three products stay below 2³¹. */
function multiplyAccumulate(acc: Int32Array, a: Uint16Array, b: Uint16Array): void {
  for (let i = 0; i < N / 2; i++) {
    const a0 = a[2 * i] as number;
    const a1 = a[2 * i + 1] as number;
    const b0 = b[2 * i] as number;
    const b1 = b[2 * i + 1] as number;
    acc[2 * i] = (acc[2 * i] as number) + a0 * b0 + ((a1 * b1) % Q) * (GAMMAS[i] as number);
    acc[2 * i + 1] = (acc[2 * i + 1] as number) + a0 * b1 + a1 * b0;
  }
}

function checkLength(bytes: Uint8Array, length: number, what: string, error: 'argument' | 'message'): void {
  if (!(bytes instanceof Uint8Array) || bytes.length !== length) {
    const message = `${what} must be ${length} bytes, got ${bytes instanceof Uint8Array ? bytes.length : typeof bytes}`;
    throw error === 'argument' ? new InvalidArgumentError(message) : new InvalidMessageError(message);
  }
}

export interface MlKem768KeyPair {
  /** ρ ‖ SHA3-256(ek), 64 bytes. */
  header: Uint8Array;
  /** ByteEncode₁₂(t̂), the first 1152 bytes of ek. */
  ekVector: Uint8Array;
  /** The standard 2400-byte decapsulation key dkPKE ‖ ek ‖ H(ek) ‖ z. */
  dk: Uint8Array;
}

/** seed = d ‖ z (64 bytes) from the caller's CSPRNG; standard FIPS 203 keygen. header = ρ ‖ SHA3-256(ek), ek = t̂ ‖ ρ. */
export function generateKeyPair(seed: Uint8Array): MlKem768KeyPair {
  checkLength(seed, SEED_BYTES, 'ML-KEM key generation seed', 'argument');
  const { publicKey: ek, secretKey: dk } = ml_kem768.keygen(seed);
  const header = new Uint8Array(HEADER_BYTES);
  header.set(ek.subarray(EK_VECTOR_BYTES)); // ρ
  header.set(dk.subarray(2 * EK_VECTOR_BYTES + 32, 2 * EK_VECTOR_BYTES + 64), 32); // H(ek), stored in dk
  return { header, ekVector: ek.slice(0, EK_VECTOR_BYTES), dk };
}

/** Encaps1: m = 32 random bytes from the caller. Returns ct1 and the ML-KEM shared secret K. */
export function encaps1(header: Uint8Array, m: Uint8Array): { ct1: Uint8Array; sharedSecret: Uint8Array } {
  checkLength(header, HEADER_BYTES, 'ML-KEM header', 'message');
  checkLength(m, M_BYTES, 'ML-KEM encapsulation randomness', 'argument');
  const rho = header.subarray(0, 32);
  // (K, r) ← G(m ‖ H(ek)); FIPS 203 does not hash m first (Kyber round 3 did).
  const kr = sha3_512.create().update(m).update(header.subarray(32)).digest();
  const r = kr.subarray(32);
  const rHat: Uint16Array[] = [];
  for (let i = 0; i < K; i++) rHat.push(crystals.NTT.encode(sampleCBD2(r, i)));
  const ct1 = new Uint8Array(CT1_BYTES);
  const xof = XOF128(rho);
  const acc = new Int32Array(N);
  for (let i = 0; i < K; i++) {
    // u[i] = NTT⁻¹(Σⱼ Â[j][i] ∘ r̂[j]) + e₁[i], where Â[j][i] = SampleNTT(ρ ‖ i ‖ j).
    acc.fill(0);
    for (let j = 0; j < K; j++) multiplyAccumulate(acc, sampleNTT(xof.get(i, j)), rHat[j] as Uint16Array);
    const u = new Uint16Array(N);
    for (let c = 0; c < N; c++) u[c] = (acc[c] as number) % Q;
    crystals.NTT.decode(u);
    const e1 = sampleCBD2(r, K + i);
    for (let c = 0; c < N; c++) u[c] = ((u[c] as number) + (e1[c] as number)) % Q;
    ct1.set(ct1Coder.encode(u), i * POLY_CT1_BYTES);
    u.fill(0);
    e1.fill(0);
  }
  xof.clean();
  acc.fill(0);
  for (const p of rHat) p.fill(0);
  const sharedSecret = kr.slice(0, SHARED_SECRET_BYTES);
  kr.fill(0);
  return { ct1, sharedSecret };
}

/** True when SHA3-256(ekVector ‖ ρ) equals the header's hash and every 12-bit coefficient is < 3329. Constant-time compare for the hash. */
export function ekMatchesHeader(header: Uint8Array, ekVector: Uint8Array): boolean {
  if (header.length !== HEADER_BYTES || ekVector.length !== EK_VECTOR_BYTES) return false;
  // FIPS 203 §7.2 modulus check: ByteEncode₁₂(ByteDecode₁₂(ek)) = ek, i.e. every 12-bit word < q.
  let overflow = 0;
  for (let i = 0; i < EK_VECTOR_BYTES; i += 3) {
    const b0 = ekVector[i] as number;
    const b1 = ekVector[i + 1] as number;
    const b2 = ekVector[i + 2] as number;
    overflow |= Q - 1 - (b0 | ((b1 & 0x0f) << 8)); // negative when the word is ≥ q
    overflow |= Q - 1 - ((b1 >> 4) | (b2 << 4));
  }
  const hash = sha3_256.create().update(ekVector).update(header.subarray(0, 32)).digest();
  const hashOk = constantTimeEqual(hash, header.subarray(32));
  return hashOk && overflow >= 0;
}

/** Encaps2: ct2 for the same m. Throws InvalidMessageError (../errors.ts) when the ek vector does not match the header. */
export function encaps2(header: Uint8Array, ekVector: Uint8Array, m: Uint8Array): Uint8Array {
  checkLength(header, HEADER_BYTES, 'ML-KEM header', 'message');
  checkLength(ekVector, EK_VECTOR_BYTES, 'ML-KEM ek vector', 'message');
  checkLength(m, M_BYTES, 'ML-KEM encapsulation randomness', 'argument');
  if (!ekMatchesHeader(header, ekVector)) {
    throw new InvalidMessageError('ML-KEM ek vector does not match its header (hash or modulus check)');
  }
  // With H(t̂ ‖ ρ) checked, noble's deterministic encapsulate is Encaps(ek, m): its first 960 bytes
  // are the ct1 that encaps1 gave, the last 128 are ct2.
  const ek = new Uint8Array(EK_BYTES);
  ek.set(ekVector);
  ek.set(header.subarray(0, 32), EK_VECTOR_BYTES);
  const { cipherText, sharedSecret } = ml_kem768.encapsulate(ek, m);
  sharedSecret.fill(0);
  return cipherText.slice(CT1_BYTES);
}

/** Standard ML-KEM-768 decapsulation (implicit rejection) of ct1 ‖ ct2. */
export function decaps(dk: Uint8Array, ct1: Uint8Array, ct2: Uint8Array): Uint8Array {
  checkLength(dk, DK_BYTES, 'ML-KEM decapsulation key', 'argument');
  checkLength(ct1, CT1_BYTES, 'ML-KEM ct1', 'message');
  checkLength(ct2, CT2_BYTES, 'ML-KEM ct2', 'message');
  // FIPS 203 §7.3 hash check on dk = dkPKE ‖ ek ‖ H(ek) ‖ z (noble would throw a plain Error).
  const ek = dk.subarray(EK_VECTOR_BYTES, EK_VECTOR_BYTES + EK_BYTES);
  const storedHash = dk.subarray(EK_VECTOR_BYTES + EK_BYTES, EK_VECTOR_BYTES + EK_BYTES + 32);
  if (!constantTimeEqual(sha3_256(ek), storedHash)) {
    throw new InvalidArgumentError('ML-KEM decapsulation key fails its hash check');
  }
  const ct = new Uint8Array(CT1_BYTES + CT2_BYTES);
  ct.set(ct1);
  ct.set(ct2, CT1_BYTES);
  return ml_kem768.decapsulate(ct, dk);
}
