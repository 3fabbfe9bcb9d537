import { z } from 'zod';
import { DEFAULT_KEY_FETCH_LIMITS, DEFAULT_SEND_LIMITS } from './core/limits.ts';

/*
 * The environment variables both deployments share (standalone/config.ts, aws/config.ts): log level,
 * wake-up pushes and the service's limits. Each deployment adds its own variables around these.
 */

const positive = z.coerce.number().int().min(1);
/** A count for a rate limit: at least 1 (0 would refuse everything), at most a billion. */
const limit = positive.max(1_000_000_000);

export const serviceEnvShape = {
  HUSH_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  HUSH_PUSH: z.enum(['dev', 'webpush']).default('dev'),
  HUSH_VAPID_SUBJECT: z.string().optional(),
  HUSH_VAPID_PUBLIC_KEY: z.string().optional(),
  HUSH_VAPID_PRIVATE_KEY: z.string().optional(),
  HUSH_VERIFY_RESEND_COOLDOWN_SECONDS: z.coerce.number().int().min(0).default(30),
  HUSH_VERIFY_PER_NUMBER_PER_HOUR: positive.default(10),
  HUSH_VERIFY_PER_CLIENT_PER_HOUR: positive.default(50),
  HUSH_KEY_FETCHES_PER_TARGET_PER_10_MINUTES: limit.default(DEFAULT_KEY_FETCH_LIMITS.perTargetPer10Minutes),
  HUSH_KEY_FETCHES_PER_ACCOUNT_PER_HOUR: limit.default(DEFAULT_KEY_FETCH_LIMITS.perAccountPerHour),
  // Envelopes. Below 6,000 (1,000 accounts × 6 devices), the largest multi-recipient sends never pass.
  HUSH_SEND_ENVELOPES_PER_DEVICE_PER_MINUTE: limit.default(DEFAULT_SEND_LIMITS.envelopesPerDevicePerMinute),
};

type ServiceEnv = z.infer<z.ZodObject<typeof serviceEnvShape>>;

/** For `superRefine`: Web Push needs all three VAPID variables. */
export function requireVapidKeys(env: ServiceEnv, ctx: z.RefinementCtx): void {
  if (env.HUSH_PUSH !== 'webpush') return;
  for (const key of ['HUSH_VAPID_SUBJECT', 'HUSH_VAPID_PUBLIC_KEY', 'HUSH_VAPID_PRIVATE_KEY'] as const) {
    if (!env[key]) ctx.addIssue({ code: 'custom', path: [key], message: 'required when HUSH_PUSH=webpush' });
  }
}

/** The shared part of a deployment's configuration. */
export function serviceSettings(env: ServiceEnv) {
  return {
    logLevel: env.HUSH_LOG_LEVEL,
    push:
      env.HUSH_PUSH === 'webpush'
        ? ({
            kind: 'webpush',
            subject: env.HUSH_VAPID_SUBJECT as string,
            publicKey: env.HUSH_VAPID_PUBLIC_KEY as string,
            privateKey: env.HUSH_VAPID_PRIVATE_KEY as string,
          } as const)
        : ({ kind: 'dev' } as const),
    verificationLimits: {
      resendCooldownMs: env.HUSH_VERIFY_RESEND_COOLDOWN_SECONDS * 1000,
      perNumberPerHour: env.HUSH_VERIFY_PER_NUMBER_PER_HOUR,
      perClientPerHour: env.HUSH_VERIFY_PER_CLIENT_PER_HOUR,
    },
    keyFetchLimits: {
      perTargetPer10Minutes: env.HUSH_KEY_FETCHES_PER_TARGET_PER_10_MINUTES,
      perAccountPerHour: env.HUSH_KEY_FETCHES_PER_ACCOUNT_PER_HOUR,
    },
    sendLimits: { envelopesPerDevicePerMinute: env.HUSH_SEND_ENVELOPES_PER_DEVICE_PER_MINUTE },
  };
}
