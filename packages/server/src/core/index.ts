import { AccountService } from './accounts.ts';
import { DeviceService } from './devices.ts';
import { type KeyFetchLimits, KeyService } from './keys.ts';
import { type MessageMetrics, MessageService, type SendLimits } from './messages.ts';
import type { Clock, DeliveryNotifier, PushSender, SmsSender, Storage } from './ports.ts';
import { LocalRateLimiter } from './rate-limiter.ts';
import { type VerificationLimits, VerificationService } from './verification.ts';

export * from './errors.ts';
export type { KeyFetchLimits } from './keys.ts';
export type { SendLimits } from './messages.ts';
export type * from './ports.ts';
export type { VerificationLimits } from './verification.ts';

export interface CoreDeps {
  storage: Storage;
  sms: SmsSender;
  push: PushSender;
  notifier: DeliveryNotifier;
  clock: Clock;
  /** Keys the verification-code hashes; kept outside the database. */
  codeSecret: Uint8Array;
  verificationLimits: VerificationLimits;
  /** Default: DEFAULT_KEY_FETCH_LIMITS (core/limits.ts). */
  keyFetchLimits?: KeyFetchLimits;
  /** Default: DEFAULT_SEND_LIMITS (core/limits.ts). */
  sendLimits?: SendLimits;
  /**
   * Where sends are counted. Default: a LocalRateLimiter of this core, right for one process (the
   * standalone server); see LocalRateLimiter.
   */
  sendLimiter?: LocalRateLimiter;
  metrics?: MessageMetrics;
}

/** The service core: the same for the standalone server and the AWS deployment. */
export function createCore(deps: CoreDeps) {
  const { storage, clock } = deps;
  return {
    verification: new VerificationService({
      store: storage,
      sms: deps.sms,
      clock,
      codeSecret: deps.codeSecret,
      limits: deps.verificationLimits,
    }),
    accounts: new AccountService({ store: storage, clock }),
    devices: new DeviceService({ store: storage, notifier: deps.notifier, clock }),
    keys: new KeyService({
      store: storage,
      clock,
      ...(deps.keyFetchLimits ? { limits: deps.keyFetchLimits } : {}),
    }),
    messages: new MessageService({
      store: storage,
      notifier: deps.notifier,
      push: deps.push,
      clock,
      ...(deps.metrics ? { metrics: deps.metrics } : {}),
      ...(deps.sendLimits ? { sendLimits: deps.sendLimits } : {}),
      sendLimiter: deps.sendLimiter ?? new LocalRateLimiter(),
    }),
    storage,
    clock,
  };
}

export type Core = ReturnType<typeof createCore>;
