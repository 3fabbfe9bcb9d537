import { randomInt, randomUUID } from 'node:crypto';
import { parsePhoneNumberWithError } from 'libphonenumber-js/max';
import { hashVerificationCode, sameHash } from './credentials.ts';
import { ApiError, RateLimitedError, badRequest, notFound } from './errors.ts';
import { MAX_WRONG_CODES, VERIFICATION_CODE_TTL_MS } from './limits.ts';
import type { Clock, RateLimitStore, SmsSender, VerificationSession, VerificationStore } from './ports.ts';

export interface VerificationLimits {
  /** Minimum time between two codes sent to one number. */
  resendCooldownMs: number;
  /** Sessions per number per hour. */
  perNumberPerHour: number;
  /** Sessions per client address per hour. */
  perClientPerHour: number;
}

const HOUR = 60 * 60 * 1000;

/** Parses any common way of writing a phone number into E.164, or fails with 400 invalid_number. */
export function toE164(raw: string): string {
  try {
    const parsed = parsePhoneNumberWithError(raw);
    if (parsed.isValid()) return parsed.number;
  } catch {
    // fall through to the typed error
  }
  throw badRequest('invalid_number', 'not a valid phone number in international format (E.164, e.g. +14155550123)');
}

/** Step 2 of the flow: prove control of a phone number with a six-digit SMS code. */
export class VerificationService {
  constructor(
    private readonly deps: {
      store: VerificationStore & RateLimitStore;
      sms: SmsSender;
      clock: Clock;
      codeSecret: Uint8Array;
      limits: VerificationLimits;
    },
  ) {}

  private async limit(key: string, windowMs: number, max: number, what: string): Promise<void> {
    const now = this.deps.clock.now();
    const { count, resetAt } = await this.deps.store.hit(key, windowMs, now);
    if (count > max) throw new RateLimitedError(what, Math.max(1, Math.ceil((resetAt - now) / 1000)));
  }

  async startSession(rawNumber: string, clientAddress: string) {
    const number = toE164(rawNumber);
    const { limits } = this.deps;
    await this.limit(
      `verify:client:${clientAddress}`,
      HOUR,
      limits.perClientPerHour,
      'verification requests from this address',
    );
    await this.limit(`verify:number:${number}`, HOUR, limits.perNumberPerHour, 'verification requests for this number');
    await this.limit(`verify:cooldown:${number}`, limits.resendCooldownMs, 1, 'codes for this number in a short time');

    const now = this.deps.clock.now();
    const id = randomUUID();
    const code = randomInt(0, 1_000_000).toString().padStart(6, '0');
    const session: VerificationSession = {
      id,
      number,
      codeHash: hashVerificationCode(this.deps.codeSecret, id, code),
      createdAt: now,
      expiresAt: now + VERIFICATION_CODE_TTL_MS,
      failedAttempts: 0,
      verified: false,
      consumed: false,
    };
    await this.deps.store.insertVerificationSession(session);
    await this.deps.sms.sendVerificationCode(number, code);
    return { id, number, expiresAt: session.expiresAt };
  }

  async submitCode(sessionId: string, code: string) {
    const session = await this.deps.store.getVerificationSession(sessionId);
    if (!session) throw notFound('verification_session_not_found', 'no such verification session');
    if (session.verified) return { id: session.id, number: session.number, verified: true };
    const now = this.deps.clock.now();
    if (now > session.expiresAt) throw new ApiError(410, 'code_expired', 'the code has expired; start a new session');
    // The counter is atomic, so parallel guesses cannot exceed the limit.
    const { count } = await this.deps.store.hit(`verify:attempt:${session.id}`, VERIFICATION_CODE_TTL_MS, now);
    if (count > MAX_WRONG_CODES) {
      throw new RateLimitedError(
        'wrong codes for this session',
        Math.max(1, Math.ceil((session.expiresAt - now) / 1000)),
      );
    }
    if (
      !/^\d{6}$/.test(code) ||
      !sameHash(hashVerificationCode(this.deps.codeSecret, session.id, code), session.codeHash)
    ) {
      await this.deps.store.updateVerificationSession({ ...session, failedAttempts: session.failedAttempts + 1 });
      throw new ApiError(400, 'invalid_code', 'the code is wrong', {
        attemptsLeft: Math.max(0, MAX_WRONG_CODES - count),
      });
    }
    await this.deps.store.updateVerificationSession({ ...session, verified: true });
    return { id: session.id, number: session.number, verified: true };
  }
}
