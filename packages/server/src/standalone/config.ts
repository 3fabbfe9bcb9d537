import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { requireVapidKeys, serviceEnvShape, serviceSettings } from '../service-env.ts';

/*
 * Configuration from environment variables, validated once at start. A bad value stops the start
 * with a message that names the variable.
 */
/** The web app's build in this repository (`npx expo export --platform web` in apps/mobile). */
export const DEFAULT_WEB_DIR = fileURLToPath(new URL('../../../../apps/mobile/dist', import.meta.url));

const port = z.coerce.number().int().min(0).max(65535);

const schema = z
  .object({
    HUSH_HOST: z.string().min(1).default('127.0.0.1'),
    HUSH_PORT: port.default(8080),
    HUSH_DATA_DIR: z.string().min(1).default('./data'),
    HUSH_SMS: z.enum(['dev', 'sns']).default('dev'),
    HUSH_SNS_REGION: z.string().min(1).default('us-east-1'),
    HUSH_WEB_DIR: z.string().optional(),
    ...serviceEnvShape,
  })
  .superRefine(requireVapidKeys);

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
    sms: env.HUSH_SMS === 'sns' ? ({ kind: 'sns', region: env.HUSH_SNS_REGION } as const) : ({ kind: 'dev' } as const),
    ...serviceSettings(env),
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
