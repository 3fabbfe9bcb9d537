import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { DEFAULT_KEY_FETCH_LIMITS, DEFAULT_SEND_LIMITS } from '../core/limits.ts';

/*
 * Configuration from environment variables, validated once at start. A bad value stops the start
 * with a message that names the variable.
 */
/** The web app's build in this repository (`npx expo export --platform web` in apps/mobile). */
export const DEFAULT_WEB_DIR = fileURLToPath(new URL('../../../../apps/mobile/dist', import.meta.url));

const port = z.coerce.number().int().min(0).max(65535);
const positive = z.coerce.number().int().min(1);
/** A count for a rate limit: at least 1 (0 would refuse everything), at most a billion. */
const limit = positive.max(1_000_000_000);

const schema = z
  .object({
    HUSH_HOST: z.string().min(1).default('127.0.0.1'),
    HUSH_PORT: port.default(8080),
    HUSH_DATA_DIR: z.string().min(1).default('./data'),
    HUSH_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    HUSH_SMS: z.enum(['dev', 'sns']).default('dev'),
    HUSH_SNS_REGION: z.string().min(1).default('us-east-1'),
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
    HUSH_WEB_DIR: z.string().optional(),
  })
  .superRefine((env, ctx) => {
    if (env.HUSH_PUSH === 'webpush') {
      for (const key of ['HUSH_VAPID_SUBJECT', 'HUSH_VAPID_PUBLIC_KEY', 'HUSH_VAPID_PRIVATE_KEY'] as const) {
        if (!env[key]) ctx.addIssue({ code: 'custom', path: [key], message: 'required when HUSH_PUSH=webpush' });
      }
    }
  });

export type ServerConfig = ReturnType<typeof toConfig>;

function toConfig(env: z.infer<typeof schema>) {
  const dataDir = resolve(env.HUSH_DATA_DIR);
  return {
    host: env.HUSH_HOST,
    port: env.HUSH_PORT,
    dataDir,
    databasePath: resolve(dataDir, 'hush.sqlite'),
    attachmentsDir: resolve(dataDir, 'attachments'),
    devSmsFile: resolve(dataDir, 'dev-sms.log'),
    devPushFile: resolve(dataDir, 'dev-push.log'),
    secretFile: resolve(dataDir, 'server-secret.key'),
    logLevel: env.HUSH_LOG_LEVEL,
    sms: env.HUSH_SMS === 'sns' ? ({ kind: 'sns', region: env.HUSH_SNS_REGION } as const) : ({ kind: 'dev' } as const),
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
    // `none` turns the web app off; a directory without index.html serves nothing either.
    webDir: env.HUSH_WEB_DIR === 'none' ? undefined : resolve(env.HUSH_WEB_DIR ?? DEFAULT_WEB_DIR),
  };
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Reads and validates the configuration; throws ConfigError naming every bad variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): ServerConfig {
  // An empty or blank variable (`HUSH_PORT=` in an env file) means unset: it must not coerce to 0.
  const parsed = schema.safeParse(Object.fromEntries(Object.entries(env).filter(([, value]) => value?.trim() !== '')));
  if (!parsed.success) {
    const lines = parsed.error.issues.map(
      (i) => `  ${String(i.path[0] ?? '?')}: ${i.message} (got ${JSON.stringify(env[String(i.path[0])])})`,
    );
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  return toConfig(parsed.data);
}
