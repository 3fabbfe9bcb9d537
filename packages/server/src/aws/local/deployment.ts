/// <reference path="./s3rver.d.ts" />
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { type AttributeValue, DynamoDBClient, paginateScan } from '@aws-sdk/client-dynamodb';
import type { DestinationStream } from 'pino';
import S3rver from 's3rver';
import type { PushSender } from '../../core/ports.ts';
import { DevPushSender } from '../../push/dev-push-sender.ts';
import { createTables, tableNames } from '../../storage/dynamodb/tables.ts';
import { loadAwsConfig } from '../config.ts';
import { createHttpHandler } from '../http-handler.ts';
import { type AwsRuntime, createAwsRuntime } from '../runtime.ts';
import { createSweepHandler } from '../sweep-handler.ts';
import { createWsHandler } from '../ws-handler.ts';
import { type LocalGateway, startLocalGateway } from './gateway.ts';

/*
 * The serverless deployment on one machine: the Lambda handlers in this process behind the local
 * gateway (local/gateway.ts), on DynamoDB Local (started by the caller) and s3rver (started here,
 * in-process on 127.0.0.1), with the dev SMS sender writing codes to `<dataDir>/dev-sms.log` as the
 * standalone server does. The HTTP and WebSocket functions get a runtime each, as two Lambdas
 * would: they share nothing but DynamoDB, S3 and the @connections API.
 */

/** s3rver checks signatures against its one built-in key pair. */
export const LOCAL_CREDENTIALS = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' } as const;

export interface ServerlessLocalOptions {
  /** DynamoDB Local's endpoint (http://127.0.0.1:port). */
  dynamoEndpoint: string;
  /** Dev SMS log, dev push log and s3rver's files. */
  dataDir: string;
  tablePrefix?: string;
  bucket?: string;
  /** 0 (default) picks a free port. */
  port?: number;
  /** More HUSH_* variables (limits, log level). */
  env?: Record<string, string>;
  logDestination?: DestinationStream;
  /** Shared by both functions, so a test sees every wake-up (default: a DevPushSender with a file). */
  push?: PushSender;
  /** TTL on the tables (default true; tests turn it off). */
  ttl?: boolean;
}

export interface ServerlessLocal {
  url: string;
  port: number;
  dataDir: string;
  devSmsFile: string;
  push: PushSender;
  gateway: LocalGateway;
  http: AwsRuntime;
  ws: AwsRuntime;
  /** Runs the scheduled sweep once. */
  sweep(): Promise<{ envelopes: number; attachments: number }>;
  /**
   * Everything this deployment stores, as raw bytes: every string and binary value of every item in
   * its DynamoDB tables and every file s3rver keeps. For tests that scan for what must never be
   * stored (plaintext, private keys).
   */
  storedBytes(): Promise<Uint8Array>;
  close(): Promise<void>;
}

export async function startServerlessLocal(options: ServerlessLocalOptions): Promise<ServerlessLocal> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const prefix = options.tablePrefix ?? 'hush-local-';
  const bucket = options.bucket ?? 'hush-local-attachments';
  mkdirSync(options.dataDir, { recursive: true });
  const s3Dir = join(options.dataDir, 's3');
  mkdirSync(s3Dir, { recursive: true });

  const dynamo = new DynamoDBClient({
    endpoint: options.dynamoEndpoint,
    region: 'us-east-1',
    credentials: {
      accessKeyId: LOCAL_CREDENTIALS.AWS_ACCESS_KEY_ID,
      secretAccessKey: LOCAL_CREDENTIALS.AWS_SECRET_ACCESS_KEY,
    },
  });
  try {
    await createTables(dynamo, prefix, { ttl: options.ttl ?? true });
  } finally {
    dynamo.destroy();
  }
  const s3rver = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory: s3Dir,
    resetOnClose: true,
    vhostBuckets: false,
    configureBuckets: [{ name: bucket }],
  });
  const s3Address = await s3rver.run();

  const gateway = await startLocalGateway({ ...(options.port !== undefined ? { port: options.port } : {}) });
  const devSmsFile = join(options.dataDir, 'dev-sms.log');
  const config = loadAwsConfig({
    HUSH_TABLE_PREFIX: prefix,
    HUSH_ATTACHMENTS_BUCKET: bucket,
    HUSH_WS_CALLBACK_URL: gateway.callbackUrl,
    HUSH_SECRET: randomBytes(32).toString('base64'),
    HUSH_SMS: 'dev',
    HUSH_DEV_SMS_FILE: devSmsFile,
    HUSH_PUSH: 'dev',
    HUSH_WS_FUNCTION_NAME: 'hush-ws',
    AWS_REGION: 'us-east-1',
    ...LOCAL_CREDENTIALS,
    AWS_ENDPOINT_URL_DYNAMODB: options.dynamoEndpoint,
    AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${s3Address.port}`,
    AWS_ENDPOINT_URL_LAMBDA: gateway.lambdaEndpoint,
    ...options.env,
  });
  const push = options.push ?? new DevPushSender({ file: join(options.dataDir, 'dev-push.log') });
  const runtimeOptions = {
    push,
    ...(options.logDestination ? { logDestination: options.logDestination } : {}),
  };
  const http = createAwsRuntime(config, runtimeOptions);
  const ws = createAwsRuntime(config, runtimeOptions);
  gateway.attach({ http: createHttpHandler(http), ws: createWsHandler(ws) });
  const sweep = createSweepHandler(http);

  let closing: Promise<void> | undefined;
  return {
    url: gateway.url,
    port: gateway.port,
    dataDir: options.dataDir,
    devSmsFile,
    push,
    gateway,
    http,
    ws,
    sweep: () => sweep(),
    async storedBytes() {
      const parts: Uint8Array[] = [];
      const collect = (value: AttributeValue): void => {
        if (value.S !== undefined) parts.push(new TextEncoder().encode(value.S));
        else if (value.B !== undefined) parts.push(value.B);
        else if (value.SS) for (const v of value.SS) parts.push(new TextEncoder().encode(v));
        else if (value.BS) parts.push(...value.BS);
        else if (value.L) for (const v of value.L) collect(v);
        else if (value.M) for (const v of Object.values(value.M)) collect(v);
      };
      const client = new DynamoDBClient({
        endpoint: options.dynamoEndpoint,
        region: 'us-east-1',
        credentials: {
          accessKeyId: LOCAL_CREDENTIALS.AWS_ACCESS_KEY_ID,
          secretAccessKey: LOCAL_CREDENTIALS.AWS_SECRET_ACCESS_KEY,
        },
      });
      try {
        for (const table of Object.values(tableNames(prefix)))
          for await (const page of paginateScan({ client }, { TableName: table, ConsistentRead: true }))
            for (const item of page.Items ?? []) for (const value of Object.values(item)) collect(value);
      } finally {
        client.destroy();
      }
      const files = (dir: string): string[] =>
        readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
          e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)],
        );
      for (const file of files(s3Dir)) parts.push(readFileSync(file));
      return Buffer.concat(parts);
    },
    close() {
      closing ??= (async () => {
        await gateway.close();
        http.close();
        ws.close();
        await s3rver.close();
      })();
      return closing;
    },
  };
}
