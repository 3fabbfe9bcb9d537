import type { Context, ScheduledEvent } from 'aws-lambda';
import { loadAwsConfig } from './config.ts';
import { type AwsRuntime, type RuntimeOptions, createAwsRuntime } from './runtime.ts';

/*
 * The scheduled sweep (EventBridge rule, e.g. hourly): what DynamoDB's TTL and the bucket's
 * lifecycle rule do not do by themselves. `storage.deleteExpired` runs the DynamoDB adapter's
 * purge records (queues and keys of removed devices and replaced accounts) and deletes what expired
 * (TTL deletes the same items, up to two days late; HUSH_SWEEP=purges runs only the purge records and
 * leaves expiry to TTL, saving an hourly scan of the tables); the attachment sweep is a backstop
 * for the lifecycle rule. Connection rows expire by TTL.
 */

export interface SweepResult {
  envelopes: number;
  attachments: number;
}

export function createSweepHandler(
  runtime: AwsRuntime,
): (event?: ScheduledEvent, context?: Context) => Promise<SweepResult> {
  return async () => {
    const now = Date.now();
    const [envelopes, attachments] = await Promise.all([
      runtime.config.sweep === 'purges'
        ? runtime.storage.runPurges().then(() => 0)
        : runtime.storage.deleteExpired(now),
      runtime.attachments.deleteExpired(now),
    ]);
    runtime.logger.info({ envelopes, attachments }, 'expired data removed');
    return { envelopes, attachments };
  };
}

let cached: ReturnType<typeof createSweepHandler> | undefined;

export function sweepRuntime(options: RuntimeOptions = {}): ReturnType<typeof createSweepHandler> {
  cached ??= createSweepHandler(createAwsRuntime(loadAwsConfig(), options));
  return cached;
}

export const handler = (event: ScheduledEvent, context: Context): Promise<SweepResult> =>
  sweepRuntime()(event, context);
