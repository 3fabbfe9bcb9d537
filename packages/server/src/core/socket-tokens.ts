import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { AccountStore, Clock, Device, RateLimitStore } from './ports.ts';

const TOKEN_TTL_MS = 60_000;

/**
 * Short-lived, single-use tokens for opening a WebSocket from a browser, which cannot set an
 * Authorization header on the upgrade. A token is `accountId.deviceId.expiresAt.nonce.mac`, MACed
 * under a server secret, so any instance can check it; single use is enforced with the atomic
 * rate-limit counter on its nonce. The device password never appears in a URL.
 */
export class SocketTokens {
  constructor(private readonly deps: { secret: Uint8Array; clock: Clock; store: RateLimitStore & AccountStore }) {}

  private mac(payload: string): string {
    return createHmac('sha256', this.deps.secret).update('hush-socket-token\0').update(payload).digest('base64url');
  }

  issue(device: Device): { token: string; expiresAt: number } {
    const expiresAt = this.deps.clock.now() + TOKEN_TTL_MS;
    const payload = `${device.accountId}.${device.deviceId}.${expiresAt}.${randomBytes(16).toString('base64url')}`;
    return { token: `${payload}.${this.mac(payload)}`, expiresAt };
  }

  /** The device a token was issued to, or null if it is forged, expired or already used. */
  async redeem(token: string): Promise<Device | null> {
    const parts = token.split('.');
    if (parts.length !== 5) return null;
    const [accountId, deviceId, expiresAt, nonce, mac] = parts as [string, string, string, string, string];
    const expected = Buffer.from(this.mac(`${accountId}.${deviceId}.${expiresAt}.${nonce}`));
    const given = Buffer.from(mac);
    if (expected.length !== given.length || !timingSafeEqual(expected, given)) return null;
    const now = this.deps.clock.now();
    if (!(Number(expiresAt) > now)) return null;
    const { count } = await this.deps.store.hit(`socket-token:${nonce}`, TOKEN_TTL_MS, now);
    if (count !== 1) return null;
    return this.deps.store.getDevice(accountId, Number(deviceId));
  }
}
