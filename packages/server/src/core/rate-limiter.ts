import { RateLimitedError } from './errors.ts';
import type { RateLimitStore } from './ports.ts';

/** Seconds until `resetAt`, at least 1: the Retry-After of a 429. */
export const retryAfterSeconds = (resetAt: number, now: number): number =>
  Math.max(1, Math.ceil((resetAt - now) / 1000));

/**
 * Counts one hit on `key` in the shared RateLimitStore and throws RateLimitedError (429 with
 * Retry-After) once the window holds more than `max` hits.
 */
export async function enforceLimit(
  store: RateLimitStore,
  key: string,
  windowMs: number,
  max: number,
  now: number,
  what: string,
): Promise<void> {
  const { count, resetAt } = await store.hit(key, windowMs, now);
  if (count > max) throw new RateLimitedError(what, retryAfterSeconds(resetAt, now));
}

/**
 * Fixed-window counters in this process's memory, for a limit on the hot path: sends.
 *
 * Why not the RateLimitStore port: on SQLite `hit` is a write of its own on the main connection
 * (an autocommit transaction with its own fsync under synchronous = FULL, outside the writer
 * thread's group commit, and waiting on that thread's write lock), and a write there also drops
 * the storage's cache of device lists. One per send would cost more than the send itself, whose
 * envelopes share one commit with hundreds of others. The standalone server is one process, so a
 * counter in memory sees every send; it forgets its counts on a restart, which for a limit of
 * minutes costs nothing. Limits that must be shared between processes or survive restarts (the
 * verification, link and key-fetch limits) stay on the storage port; a deployment with many
 * instances (AWS Lambda) would hand the core a shared limiter for sends instead.
 *
 * Unlike the port's `hit`, a take that would pass the limit is not counted: a device at its limit
 * can still send a smaller batch, and refused requests do not push the window's count up.
 */
export class LocalRateLimiter {
  private readonly windows = new Map<string, { count: number; resetAt: number }>();
  private nextSweep = 0;

  /**
   * Adds `amount` to `key`'s window (of `windowMs`, starting at its first take) if the count stays
   * at most `max`; returns whether it did and when the window ends.
   */
  take(key: string, amount: number, max: number, windowMs: number, now: number): { ok: boolean; resetAt: number } {
    if (now >= this.nextSweep) this.sweep(now, windowMs);
    let window = this.windows.get(key);
    if (!window || now >= window.resetAt) {
      window = { count: 0, resetAt: now + windowMs };
      this.windows.set(key, window);
    }
    if (window.count + amount > max) return { ok: false, resetAt: window.resetAt };
    window.count += amount;
    return { ok: true, resetAt: window.resetAt };
  }

  /** Windows being counted (for tests). */
  get size(): number {
    return this.windows.size;
  }

  /** Drops ended windows, at most once per window length: memory stays bounded by the active keys. */
  private sweep(now: number, windowMs: number): void {
    for (const [key, window] of this.windows) if (now >= window.resetAt) this.windows.delete(key);
    this.nextSweep = now + windowMs;
  }
}
