import { randomUUID } from 'node:crypto';
import { ApiError, PayloadTooLargeError, RateLimitedError, badRequest, notFound } from './errors.ts';
import { DEFAULT_SEND_LIMITS, ENVELOPE_TTL_MS, MAX_FETCH_BATCH, MAX_MESSAGE_BYTES, SEND_WINDOW_MS } from './limits.ts';
import type {
  AccountStore,
  Clock,
  DeliveryNotifier,
  Device,
  Envelope,
  MessageStore,
  PushSender,
  QueuedEnvelope,
} from './ports.ts';
import { LocalRateLimiter, retryAfterSeconds } from './rate-limiter.ts';

/** One ciphertext for one destination device. */
export interface OutgoingMessage {
  deviceId: number;
  registrationId: number;
  type: number;
  content: Uint8Array;
}

/** One ciphertext for many devices of many accounts (sender-key group messages). */
export interface MultiRecipientMessage {
  type: number;
  content: Uint8Array;
  recipients: { accountId: string; devices: { deviceId: number; registrationId: number }[] }[];
  timestamp: number;
  /** Client-chosen id: a retried send with the same id stores nothing twice. */
  id?: string;
}

interface DeviceMismatch {
  accountId: string;
  missingDevices: number[];
  extraDevices: number[];
  staleDevices: number[];
}

export interface MessageMetrics {
  envelopesStored(count: number): void;
}

/**
 * How much one device may send. What is counted is destination envelopes, not requests: they are
 * what a send costs (storage, fan-out, wake-ups), and a request count would let one
 * multi-recipient request of 6,000 envelopes pass as one.
 */
export interface SendLimits {
  envelopesPerDevicePerMinute: number;
}

/** Steps 6-8 of the flow: store ciphertext durably, notify, hand out queues, delete on ack. */
export class MessageService {
  private readonly sendLimits: SendLimits;
  private readonly sendLimiter: LocalRateLimiter;

  constructor(
    private readonly deps: {
      store: MessageStore & AccountStore;
      notifier: DeliveryNotifier;
      push: PushSender;
      clock: Clock;
      metrics?: MessageMetrics;
      sendLimits?: SendLimits;
      /** Counts sends in this process (see LocalRateLimiter for why not in the storage). */
      sendLimiter?: LocalRateLimiter;
    },
  ) {
    this.sendLimits = deps.sendLimits ?? DEFAULT_SEND_LIMITS;
    this.sendLimiter = deps.sendLimiter ?? new LocalRateLimiter();
  }

  /**
   * Counts `envelopes` against the sender's limit, or refuses the send with 429 (and counts
   * nothing). Runs before the device checks, so a refused send costs no reads and stores nothing;
   * HTTP sends and sends over the socket (request frames go through the same routes) count alike.
   */
  private limitSends(sender: Device, envelopes: number): void {
    const now = this.deps.clock.now();
    const { ok, resetAt } = this.sendLimiter.take(
      `${sender.accountId}.${sender.deviceId}`,
      envelopes,
      this.sendLimits.envelopesPerDevicePerMinute,
      SEND_WINDOW_MS,
      now,
    );
    if (!ok) throw new RateLimitedError('messages from this device', retryAfterSeconds(resetAt, now));
  }

  /** Checks a destination's device set as Signal-Server does: 409 for missing/extra, 410 for stale. */
  private async checkDevices(
    sender: Device,
    accountId: string,
    provided: { deviceId: number; registrationId: number }[],
  ): Promise<{ mismatch?: DeviceMismatch; devices: Device[] }> {
    if (new Set(provided.map((m) => m.deviceId)).size !== provided.length) {
      throw badRequest('duplicate_device', `a device of ${accountId} is addressed twice`);
    }
    const all = await this.deps.store.listDevices(accountId);
    if (all.length === 0) throw notFound('account_not_found', `no such account: ${accountId}`);
    // A device never sends to itself; its own other devices are expected like anyone's.
    const expected = all.filter((d) => !(d.accountId === sender.accountId && d.deviceId === sender.deviceId));
    const byId = new Map(expected.map((d) => [d.deviceId, d]));
    const providedIds = new Set(provided.map((m) => m.deviceId));
    const mismatch: DeviceMismatch = {
      accountId,
      missingDevices: expected.filter((d) => !providedIds.has(d.deviceId)).map((d) => d.deviceId),
      extraDevices: provided.filter((m) => !byId.has(m.deviceId)).map((m) => m.deviceId),
      staleDevices: provided
        .filter((m) => byId.has(m.deviceId) && byId.get(m.deviceId)?.registrationId !== m.registrationId)
        .map((m) => m.deviceId),
    };
    const ok = mismatch.missingDevices.length + mismatch.extraDevices.length + mismatch.staleDevices.length === 0;
    return ok ? { devices: expected } : { mismatch, devices: expected };
  }

  private static raiseMismatches(mismatches: DeviceMismatch[], single: boolean): void {
    const structural = mismatches.filter((m) => m.missingDevices.length + m.extraDevices.length > 0);
    if (structural.length > 0) {
      const body = structural.map(({ accountId, missingDevices, extraDevices }) => ({
        accountId,
        missingDevices,
        extraDevices,
      }));
      throw new ApiError(
        409,
        'mismatched_devices',
        'the device list is out of date',
        single ? omitAccount(body[0]) : { accounts: body },
      );
    }
    const stale = mismatches.filter((m) => m.staleDevices.length > 0);
    if (stale.length > 0) {
      const body = stale.map(({ accountId, staleDevices }) => ({ accountId, staleDevices }));
      throw new ApiError(
        410,
        'stale_devices',
        'some devices were re-registered',
        single ? omitAccount(body[0]) : { accounts: body },
      );
    }
  }

  private checkContent(content: Uint8Array): void {
    if (content.length === 0) throw badRequest('empty_message', 'a message needs content');
    if (content.length > MAX_MESSAGE_BYTES) throw new PayloadTooLargeError(MAX_MESSAGE_BYTES);
  }

  private envelope(
    sender: Device,
    accountId: string,
    deviceId: number,
    type: number,
    content: Uint8Array,
    timestamp: number,
  ): Envelope {
    const now = this.deps.clock.now();
    return {
      guid: randomUUID(),
      type,
      sourceAccountId: sender.accountId,
      sourceDeviceId: sender.deviceId,
      destinationAccountId: accountId,
      destinationDeviceId: deviceId,
      timestamp,
      serverTimestamp: now,
      content,
      expiresAt: now + ENVELOPE_TTL_MS,
    };
  }

  /** Stores every envelope in one transaction, then tells each device (socket, else a wake-up push). */
  private async store(sender: Device, envelopes: Envelope[], id: string | undefined): Promise<{ duplicate: boolean }> {
    const receipt = id
      ? {
          sourceAccountId: sender.accountId,
          sourceDeviceId: sender.deviceId,
          messageId: id,
          expiresAt: this.deps.clock.now() + ENVELOPE_TTL_MS,
        }
      : undefined;
    const stored = await this.deps.store.insertEnvelopes(envelopes, receipt);
    if (!stored) return { duplicate: true };
    this.deps.metrics?.envelopesStored(envelopes.length);
    // The envelopes are durable now; telling the devices is best effort and must not hold up the
    // sender's answer (a slow push service would). Push senders log their own failures.
    for (const e of envelopes) this.wake(e.destinationAccountId, e.destinationDeviceId).catch(() => {});
    return { duplicate: false };
  }

  private async wake(accountId: string, deviceId: number): Promise<void> {
    if (await this.deps.notifier.notify(accountId, deviceId)) return;
    const device = await this.deps.store.getDevice(accountId, deviceId);
    if (device) await this.deps.push.wake(device);
  }

  async send(
    sender: Device,
    accountId: string,
    request: { messages: OutgoingMessage[]; timestamp: number; id?: string },
  ) {
    for (const m of request.messages) this.checkContent(m.content);
    this.limitSends(sender, request.messages.length);
    const { mismatch } = await this.checkDevices(sender, accountId, request.messages);
    if (mismatch) MessageService.raiseMismatches([mismatch], true);
    if (request.messages.length === 0) throw badRequest('no_recipients', 'the account has no other device to send to');
    const envelopes = request.messages.map((m) =>
      this.envelope(sender, accountId, m.deviceId, m.type, m.content, request.timestamp),
    );
    return this.store(sender, envelopes, request.id);
  }

  async sendMulti(sender: Device, request: MultiRecipientMessage) {
    this.checkContent(request.content);
    if (request.recipients.length === 0) throw badRequest('no_recipients', 'no recipients');
    if (new Set(request.recipients.map((r) => r.accountId)).size !== request.recipients.length) {
      throw badRequest('duplicate_recipient', 'an account is listed twice');
    }
    let count = 0;
    for (const r of request.recipients) count += r.devices.length;
    this.limitSends(sender, count);
    const mismatches: DeviceMismatch[] = [];
    for (const r of request.recipients) {
      const { mismatch } = await this.checkDevices(sender, r.accountId, r.devices);
      if (mismatch) mismatches.push(mismatch);
    }
    MessageService.raiseMismatches(mismatches, false);
    const envelopes = request.recipients.flatMap((r) =>
      r.devices.map((d) =>
        this.envelope(sender, r.accountId, d.deviceId, request.type, request.content, request.timestamp),
      ),
    );
    if (envelopes.length === 0) throw badRequest('no_recipients', 'no recipient devices');
    return this.store(sender, envelopes, request.id);
  }

  /** The device's queue, oldest first. */
  async fetch(
    device: Device,
    limit = MAX_FETCH_BATCH,
    afterCursor?: string,
  ): Promise<{ messages: QueuedEnvelope[]; more: boolean }> {
    const batch = Math.min(Math.max(1, limit), MAX_FETCH_BATCH);
    const page = await this.deps.store.fetchQueue(
      device.accountId,
      device.deviceId,
      batch + 1,
      this.deps.clock.now(),
      afterCursor,
    );
    return { messages: page.slice(0, batch), more: page.length > batch };
  }

  /** Deletes an envelope from the device's own queue (after the client stored the decrypted message). */
  async acknowledge(device: Device, guid: string): Promise<void> {
    if (!(await this.deps.store.deleteEnvelope(device.accountId, device.deviceId, guid))) {
      throw notFound('message_not_found', 'no such message in this device’s queue');
    }
  }
}

function omitAccount<T extends { accountId: string }>(value: T | undefined): Omit<T, 'accountId'> {
  const { accountId: _, ...rest } = value as T;
  return rest;
}
