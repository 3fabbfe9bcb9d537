import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/*
 * Device passwords are random and high-entropy (clients generate at least 20 characters from a
 * CSPRNG), so a salted SHA-256 is enough to keep them out of the database and cheap enough to
 * check on every request, as Signal-Server does. Verification codes have only six digits, so they
 * are stored as an HMAC under a server secret that never enters the database.
 */

export function hashPassword(
  password: string,
  salt: Uint8Array = randomBytes(16),
): { hash: Uint8Array; salt: Uint8Array } {
  const hash = createHash('sha256').update(salt).update(password, 'utf8').digest();
  return { hash, salt };
}

export function passwordMatches(password: string, hash: Uint8Array, salt: Uint8Array): boolean {
  const candidate = createHash('sha256').update(salt).update(password, 'utf8').digest();
  return candidate.length === hash.length && timingSafeEqual(candidate, hash);
}

export function hashVerificationCode(secret: Uint8Array, sessionId: string, code: string): Uint8Array {
  return createHmac('sha256', secret).update(sessionId).update('\0').update(code).digest();
}

export function sameHash(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
