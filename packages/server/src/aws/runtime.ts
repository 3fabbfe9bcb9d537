import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { S3Client } from '@aws-sdk/client-s3';
import { SNSClient } from '@aws-sdk/client-sns';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { DestinationStream, Logger } from 'pino';
import { type Core, createCore } from '../core/index.ts';
import type { PushSender, SmsSender } from '../core/ports.ts';
import { SocketTokens } from '../core/socket-tokens.ts';
import { type App, createApp } from '../http/app.ts';
import { createLogger } from '../logging.ts';
import { DevPushSender } from '../push/dev-push-sender.ts';
import { WebPushSender } from '../push/web-push-sender.ts';
import { DevSmsSender } from '../sms/dev-sms-sender.ts';
import { SnsSmsSender } from '../sms/sns-sms-sender.ts';
import { DynamoDbStorage } from '../storage/dynamodb/dynamodb-storage.ts';
import { S3AttachmentStore } from './attachments-s3.ts';
import type { AwsConfig } from './config.ts';
import { ConnectionStore, type ConnectionsApi, LiveDelivery, ManagementApi, PendingWork } from './connections.ts';

/*
 * The wiring every Lambda handler shares: the same core and Hono app as the standalone server, over
 * DynamoDB, S3, SNS and API Gateway connections. Built once per cold start (module scope in each
 * handler) and reused by every invocation of that execution environment.
 */

/** The event ws-handler sends itself (asynchronously) to deliver a new connection's backlog. */
export interface DrainEvent {
  hush: 'drain';
  connectionId: string;
}

export interface RuntimeOptions {
  logDestination?: DestinationStream;
  /** Where the dev SMS sender prints its human-readable line (default: the log, never stdout). */
  devSmsOutput?: NodeJS.WritableStream;
  /** Replace the @connections client (tests). */
  connectionsApi?: ConnectionsApi;
  /** Replace the push sender (tests). */
  push?: PushSender;
  /** How ws-handler invokes itself asynchronously; default: Lambda Invoke (InvocationType Event). */
  invokeDrain?: (event: DrainEvent) => Promise<void>;
}

export interface AwsRuntime {
  config: AwsConfig;
  logger: Logger;
  core: Core;
  app: App;
  storage: DynamoDbStorage;
  attachments: S3AttachmentStore;
  socketTokens: SocketTokens;
  connections: ConnectionStore;
  delivery: LiveDelivery;
  push: PushSender;
  /** Notifications and wake-ups started by the current invocation. */
  work: PendingWork;
  invokeDrain(event: DrainEvent): Promise<void>;
  /** Releases the SDK clients' sockets (local runs and tests). */
  close(): void;
}

export function createAwsRuntime(config: AwsConfig, options: RuntimeOptions = {}): AwsRuntime {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const logger = createLogger(config.logLevel, options.logDestination);
  const common = {
    region: config.aws.region,
    ...(config.aws.credentials ? { credentials: config.aws.credentials } : {}),
  };
  const dynamo = new DynamoDBClient({
    ...common,
    ...(config.aws.endpoints.dynamodb ? { endpoint: config.aws.endpoints.dynamodb } : {}),
  });
  const doc = DynamoDBDocumentClient.from(dynamo);
  const s3 = new S3Client({
    ...common,
    ...(config.aws.endpoints.s3 ? { endpoint: config.aws.endpoints.s3, forcePathStyle: true } : {}),
    // Plain Content-Length uploads (no aws-chunked framing), as S3 emulators expect too.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const storage = new DynamoDbStorage(doc, config.tablePrefix);
  const attachments = new S3AttachmentStore(s3, config.attachmentsBucket);
  const sns = config.sms.kind === 'sns' ? new SNSClient({ ...common, region: config.sms.region }) : undefined;
  const sms: SmsSender = sns
    ? new SnsSmsSender(sns, config.sms.kind === 'sns' && config.sms.senderId ? { senderId: config.sms.senderId } : {})
    : new DevSmsSender(config.sms.kind === 'dev' ? config.sms.file : '/tmp/hush-dev-sms.log', {
        output:
          options.devSmsOutput ?? ((line: string) => logger.debug({ sms: 'dev' }, line.replace(/\d{6}$/, '******'))),
      });
  const push: PushSender =
    options.push ??
    (config.push.kind === 'webpush'
      ? new WebPushSender({
          vapid: { subject: config.push.subject, publicKey: config.push.publicKey, privateKey: config.push.privateKey },
          logger,
          onSubscriptionGone: (accountId, deviceId) => storage.setPushSubscription(accountId, deviceId, null),
        })
      : new DevPushSender({ logger }));
  const work = new PendingWork();
  const connections = new ConnectionStore(doc, config.tablePrefix);
  const api = options.connectionsApi ?? ManagementApi.create(config.wsCallbackUrl, config.aws);
  const clock = { now: () => Date.now() };
  const delivery = new LiveDelivery({ connections, api, storage, push, clock, logger, work });
  const core = createCore({
    storage,
    sms,
    push,
    notifier: delivery,
    clock,
    codeSecret: config.secret,
    verificationLimits: config.verificationLimits,
    keyFetchLimits: config.keyFetchLimits,
    // Counted per execution environment: each concurrent Lambda instance has its own window, so the
    // limit holds per instance, not per deployment (see README).
    sendLimits: config.sendLimits,
  });
  const socketTokens = new SocketTokens({ secret: config.secret, clock, store: storage });
  const app = createApp({
    core,
    attachments,
    socketTokens,
    logger,
    clientAddress: (c) => {
      const env = c.env as unknown as {
        event?: { requestContext?: { http?: { sourceIp?: string }; identity?: { sourceIp?: string } } };
      };
      return env?.event?.requestContext?.http?.sourceIp ?? env?.event?.requestContext?.identity?.sourceIp ?? 'unknown';
    },
  });
  app.get('/', (c) => c.json({ service: 'hush', deployment: 'aws' }));

  let lambda: LambdaClient | undefined;
  const invokeDrain =
    options.invokeDrain ??
    (async (event: DrainEvent) => {
      if (!config.wsFunctionName) throw new Error('no function to invoke (HUSH_WS_FUNCTION_NAME)');
      lambda ??= new LambdaClient({
        ...common,
        ...(config.aws.endpoints.lambda ? { endpoint: config.aws.endpoints.lambda } : {}),
      });
      await lambda.send(
        new InvokeCommand({
          FunctionName: config.wsFunctionName,
          InvocationType: 'Event',
          Payload: new TextEncoder().encode(JSON.stringify(event)),
        }),
      );
    });

  return {
    config,
    logger,
    core,
    app,
    storage,
    attachments,
    socketTokens,
    connections,
    delivery,
    push,
    work,
    invokeDrain,
    close() {
      dynamo.destroy();
      s3.destroy();
      sns?.destroy();
      lambda?.destroy();
      if (api instanceof ManagementApi) api.client.destroy();
    },
  };
}
