import { AccountService } from './accounts.ts';
import { DeviceService } from './devices.ts';
import { KeyService } from './keys.ts';
import { type MessageMetrics, MessageService } from './messages.ts';
import type { Clock, DeliveryNotifier, PushSender, SmsSender, Storage } from './ports.ts';
import { type VerificationLimits, VerificationService } from './verification.ts';

export * from './errors.ts';
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
    keys: new KeyService({ store: storage }),
    messages: new MessageService({
      store: storage,
      notifier: deps.notifier,
      push: deps.push,
      clock,
      ...(deps.metrics ? { metrics: deps.metrics } : {}),
    }),
    storage,
    clock,
  };
}

export type Core = ReturnType<typeof createCore>;
