import type { Agent } from 'node:https';
import webpush, { type PushSubscription } from 'web-push';
import type { PushSender } from '../core/ports.ts';

/** The part of a pino logger the push senders use (a pino `Logger` fits). */
export interface PushLogger {
  warn(obj: object, msg: string): void;
}

export interface VapidDetails {
  /** A `mailto:` or `https:` URL the push service can contact. */
  subject: string;
  /** URL-safe base64, as `generateVapidKeys()` returns it. */
  publicKey: string;
  privateKey: string;
}

export interface WebPushSenderOptions {
  vapid: VapidDetails;
  /**
   * Called when the push service answers 404 or 410: the subscription is gone for good and the
   * server should delete it. Errors it throws are logged, not passed on.
   */
  onSubscriptionGone?: (accountId: string, deviceId: number) => void | Promise<void>;
  logger?: PushLogger;
  /** How long the push service keeps an undelivered wake-up. Default: 7 days. */
  ttlSeconds?: number;
  /** Socket timeout of one request to the push service. Default: 5000 ms. */
  timeoutMs?: number;
  /**
   * Which endpoints may be contacted (subscriptions come from clients). Only `https:` URLs ever
   * reach this check; the default allows every such URL. Narrow it to known push services to
   * keep clients from pointing the server at other hosts.
   */
  allowEndpoint?: (endpoint: URL) => boolean;
  /** An https.Agent for the requests (e.g. to trust a private CA). */
  agent?: Agent;
}

/** The body of every wake-up: it says only "you have mail"; the device fetches its queue. */
export const WAKE_PAYLOAD = '{"type":"wake"}';
/** Pending wake-ups for one subscription collapse into one at the push service. */
const WAKE_TOPIC = 'hush-wake';
const DEFAULT_TTL_SECONDS = 7 * 24 * 60 * 60;
const DEFAULT_TIMEOUT_MS = 5000;

/** A stored subscription string parsed and checked, or null when it is not a usable Web Push subscription. */
export function parsePushSubscription(json: string): PushSubscription | null {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const { endpoint, keys } = value as { endpoint?: unknown; keys?: { p256dh?: unknown; auth?: unknown } };
  if (typeof endpoint !== 'string' || typeof keys !== 'object' || keys === null) return null;
  const { p256dh, auth } = keys;
  if (typeof p256dh !== 'string' || typeof auth !== 'string') return null;
  // An uncompressed P-256 point is 65 bytes, the auth secret 16 (RFC 8291).
  if (!isBase64Url(p256dh, 65) || !isBase64Url(auth, 16)) return null;
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    return null;
  }
  if (url.protocol !== 'https:') return null;
  return { endpoint, keys: { p256dh, auth } };
}

function isBase64Url(s: string, bytes: number): boolean {
  return /^[A-Za-z0-9_-]+={0,2}$/.test(s) && Buffer.from(s, 'base64url').length === bytes;
}

/** A new VAPID key pair (URL-safe base64), for configuration tooling. */
export function generateVapidKeys(): { publicKey: string; privateKey: string } {
  const { publicKey, privateKey } = webpush.generateVAPIDKeys();
  return { publicKey, privateKey };
}

/**
 * Wakes devices through the Web Push protocol (RFC 8030) with VAPID (RFC 8292) and an
 * aes128gcm-encrypted payload (RFC 8291) that carries no message content. Never throws: a
 * device without a subscription is skipped, a gone subscription is reported through
 * `onSubscriptionGone`, any other failure is logged.
 */
export class WebPushSender implements PushSender {
  private readonly options: WebPushSenderOptions;

  constructor(options: WebPushSenderOptions) {
    // Fails early on a malformed key pair or subject instead of on the first wake-up.
    webpush.getVapidHeaders(
      'https://push.example',
      options.vapid.subject,
      options.vapid.publicKey,
      options.vapid.privateKey,
      'aes128gcm',
    );
    this.options = options;
  }

  async wake(device: { accountId: string; deviceId: number; pushSubscription?: string }): Promise<void> {
    if (!device.pushSubscription) return;
    const { accountId, deviceId } = device;
    const log = (fields: object, msg: string) => this.options.logger?.warn({ accountId, deviceId, ...fields }, msg);

    const subscription = parsePushSubscription(device.pushSubscription);
    if (!subscription) return log({}, 'push subscription is not usable; wake-up skipped');
    if (this.options.allowEndpoint && !this.options.allowEndpoint(new URL(subscription.endpoint))) {
      return log({}, 'push endpoint is not allowed; wake-up skipped');
    }

    try {
      await webpush.sendNotification(subscription, WAKE_PAYLOAD, {
        vapidDetails: this.options.vapid,
        TTL: this.options.ttlSeconds ?? DEFAULT_TTL_SECONDS,
        urgency: 'high',
        topic: WAKE_TOPIC,
        contentEncoding: 'aes128gcm',
        timeout: this.options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        ...(this.options.agent && { agent: this.options.agent }),
      });
    } catch (error) {
      const statusCode = error instanceof webpush.WebPushError ? error.statusCode : undefined;
      if (statusCode === 404 || statusCode === 410) {
        try {
          await this.options.onSubscriptionGone?.(accountId, deviceId);
        } catch (callbackError) {
          log({ err: describe(callbackError) }, 'removing a gone push subscription failed');
        }
        return;
      }
      // Only the status and the error's message: the endpoint is a capability URL, keep it out of logs.
      log({ statusCode, err: describe(error) }, 'web push wake-up failed');
    }
  }
}

function describe(error: unknown): string {
  if (error instanceof webpush.WebPushError) return `push service answered ${error.statusCode}`;
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}
