import { z } from 'zod';
import { requireVapidKeys, serviceEnvShape, serviceSettings } from '../service-env.ts';
import { ConfigError } from '../standalone/config.ts';

/*
 * Configuration of the Lambda handlers (http-handler, ws-handler, sweep-handler), from environment
 * variables, validated once per cold start. The CDK app sets the same variables on every function.
 * A bad value fails the cold start with a message that names the variable (never its value when it
 * is the secret).
 */

const url = z.url({ protocol: /^(https?|wss?)$/ });

const schema = z
  .object({
    /** Prefix of the DynamoDB table names (`<prefix>main`, `keys`, `messages`, `connections`). */
    HUSH_TABLE_PREFIX: z.string().min(1),
    /** The S3 bucket of encrypted attachment blobs (a lifecycle rule expires them after 31 days). */
    HUSH_ATTACHMENTS_BUCKET: z.string().min(3),
    /** The @connections endpoint of the WebSocket API: https://{api}.execute-api.{region}.amazonaws.com/{stage}. */
    HUSH_WS_CALLBACK_URL: url,
    /** base64 of 32 random bytes: keys verification-code hashes and socket tokens (same for every function). */
    HUSH_SECRET: z.string().refine((v) => Buffer.from(v, 'base64').length === 32, 'must be base64 of exactly 32 bytes'),
    /**
     * What the scheduled sweep does: `full` (storage.deleteExpired: scans for expired items, then the
     * purge records) or `purges` (only the purge records; DynamoDB's TTL deletes what expired,
     * without an hourly scan of every table).
     */
    HUSH_SWEEP: z.enum(['full', 'purges']).default('full'),
    HUSH_SMS: z.enum(['dev', 'sns']).default('sns'),
    /** Where the dev SMS sender appends codes (HUSH_SMS=dev only; never in production). */
    HUSH_DEV_SMS_FILE: z.string().min(1).default('/tmp/hush-dev-sms.log'),
    HUSH_SMS_SENDER_ID: z.string().optional(),
    /** SNS's region for SMS (default AWS_REGION). */
    HUSH_SNS_REGION: z.string().min(1).optional(),
    /**
     * The function that delivers a new connection's backlog (ws-handler invokes itself
     * asynchronously after $connect). Default: the running function (AWS_LAMBDA_FUNCTION_NAME).
     */
    HUSH_WS_FUNCTION_NAME: z.string().min(1).optional(),
    AWS_LAMBDA_FUNCTION_NAME: z.string().min(1).optional(),
    AWS_REGION: z.string().min(1).default('us-east-1'),
    // Set by the Lambda runtime; locally the tests pass their own. Without them the SDK's default chain.
    AWS_ACCESS_KEY_ID: z.string().optional(),
    AWS_SECRET_ACCESS_KEY: z.string().optional(),
    AWS_SESSION_TOKEN: z.string().optional(),
    // Endpoint overrides (the SDK's own variables), for DynamoDB Local, s3rver and the local gateway.
    AWS_ENDPOINT_URL_DYNAMODB: url.optional(),
    AWS_ENDPOINT_URL_S3: url.optional(),
    AWS_ENDPOINT_URL_LAMBDA: url.optional(),
    ...serviceEnvShape,
  })
  .superRefine(requireVapidKeys);

/** The variables the CDK app sets (the rest have defaults or come from the Lambda runtime). */
export const AWS_REQUIRED_ENV = [
  'HUSH_TABLE_PREFIX',
  'HUSH_ATTACHMENTS_BUCKET',
  'HUSH_WS_CALLBACK_URL',
  'HUSH_SECRET',
] as const;

export type AwsConfig = ReturnType<typeof toConfig>;

function toConfig(env: z.infer<typeof schema>) {
  const credentials =
    env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY
      ? {
          accessKeyId: env.AWS_ACCESS_KEY_ID,
          secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
          ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}),
        }
      : undefined;
  return {
    tablePrefix: env.HUSH_TABLE_PREFIX,
    attachmentsBucket: env.HUSH_ATTACHMENTS_BUCKET,
    wsCallbackUrl: env.HUSH_WS_CALLBACK_URL,
    secret: new Uint8Array(Buffer.from(env.HUSH_SECRET, 'base64')),
    sweep: env.HUSH_SWEEP,
    sms:
      env.HUSH_SMS === 'sns'
        ? ({
            kind: 'sns',
            region: env.HUSH_SNS_REGION ?? env.AWS_REGION,
            ...(env.HUSH_SMS_SENDER_ID ? { senderId: env.HUSH_SMS_SENDER_ID } : {}),
          } as const)
        : ({ kind: 'dev', file: env.HUSH_DEV_SMS_FILE } as const),
    ...serviceSettings(env),
    wsFunctionName: env.HUSH_WS_FUNCTION_NAME ?? env.AWS_LAMBDA_FUNCTION_NAME,
    aws: {
      region: env.AWS_REGION,
      credentials,
      endpoints: {
        dynamodb: env.AWS_ENDPOINT_URL_DYNAMODB,
        s3: env.AWS_ENDPOINT_URL_S3,
        lambda: env.AWS_ENDPOINT_URL_LAMBDA,
      },
    },
  };
}

/** Reads and validates the configuration; throws ConfigError naming every bad variable. */
export function loadAwsConfig(env: Record<string, string | undefined> = process.env): AwsConfig {
  const parsed = schema.safeParse(Object.fromEntries(Object.entries(env).filter(([, value]) => value?.trim() !== '')));
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => {
      const name = String(i.path[0] ?? '?');
      const shown = /SECRET|KEY|TOKEN/.test(name) ? '' : ` (got ${JSON.stringify(env[name])})`;
      return `  ${name}: ${i.message}${shown}`;
    });
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  return toConfig(parsed.data);
}
