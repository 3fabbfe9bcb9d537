import { appendFile, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { PushSender } from '../core/ports.ts';
import type { PushLogger } from './web-push-sender.ts';

/** One recorded wake-up: who was woken and when, nothing else. */
export interface DevWake {
  accountId: string;
  deviceId: number;
  /** ms since the epoch. */
  at: number;
}

export interface DevPushSenderOptions {
  /** Also append each wake-up as a JSON line to this file (parent folders are created). */
  file?: string;
  /** Defaults to `Date.now`. */
  now?: () => number;
  /** Where a failed file append is reported; `wake` itself never throws. */
  logger?: PushLogger;
}

/**
 * The development push sender: records wake-ups in memory (`wakes`) and optionally in a JSON-lines
 * file, with only the account id, device id and time. It sends nothing anywhere.
 */
export class DevPushSender implements PushSender {
  readonly wakes: DevWake[] = [];
  private readonly now: () => number;
  private dirReady: Promise<unknown> | undefined;
  private tail: Promise<void> = Promise.resolve();

  constructor(private readonly options: DevPushSenderOptions = {}) {
    this.now = options.now ?? Date.now;
  }

  async wake(device: { accountId: string; deviceId: number; pushSubscription?: string }): Promise<void> {
    // Copy the two ids only: the subscription and anything else on the device stay out.
    const wake: DevWake = { accountId: device.accountId, deviceId: device.deviceId, at: this.now() };
    this.wakes.push(wake);
    const { file } = this.options;
    if (!file) return;
    const write = this.tail.then(async () => {
      this.dirReady ??= mkdir(dirname(file), { recursive: true });
      await this.dirReady;
      await appendFile(file, `${JSON.stringify(wake)}\n`, { encoding: 'utf8', flag: 'a' });
    });
    this.tail = write.catch((error: unknown) => {
      this.dirReady = undefined;
      this.options.logger?.warn(
        {
          accountId: wake.accountId,
          deviceId: wake.deviceId,
          err: error instanceof Error ? error.message : String(error),
        },
        'dev push: appending the wake-up to the file failed',
      );
    });
    await this.tail;
  }

  /** The wake-ups of one device, oldest first. */
  wakesFor(accountId: string, deviceId: number): DevWake[] {
    return this.wakes.filter((w) => w.accountId === accountId && w.deviceId === deviceId);
  }

  clear(): void {
    this.wakes.length = 0;
  }
}
