import { CfnOutput, Duration, RemovalPolicy, Stack, type StackProps, Tags } from 'aws-cdk-lib';
import type { ThrottleSettings } from 'aws-cdk-lib/aws-apigatewayv2';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Secret } from 'aws-cdk-lib/aws-secretsmanager';
import type { Construct } from 'constructs';
import { Api } from './api.ts';
import { Attachments } from './attachments.ts';
import { Data } from './data.ts';
import { Functions, type FunctionsProps } from './functions.ts';
import { Observability } from './observability.ts';
import { Realtime } from './realtime.ts';
import { Sms } from './sms.ts';
import { Sweep } from './sweep.ts';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface HushStackProps extends StackProps {
  /** Deployment stage (`dev`, `prod`, ...): part of every name, and the WebSocket stage. */
  stage: string;
  /**
   * Keep tables (with deletion protection), the bucket and the secret when the stack goes (RETAIN).
   * Default true; a throwaway dev stage can turn it off.
   */
  retainData?: boolean;
  /** HUSH_LOG_LEVEL of the handlers; default `info`. */
  logLevel?: LogLevel;
  /** How long CloudWatch keeps the functions' logs; default one month. */
  logRetention?: RetentionDays;
  /** Stage throttling of both APIs; default 100 requests/s steady, bursts of 200. */
  throttle?: ThrottleSettings;
  /** Browser origins that may use presigned attachment URLs directly; default none (no CORS rule). */
  attachmentCorsOrigins?: string[];
  /** Lambda entry files; default packages/server/src/aws/{http,ws,sweep}-handler.ts. */
  handlerEntries?: FunctionsProps['entries'];
}

export const STAGE_NAME = /^[a-z][a-z0-9-]{0,19}$/;

/**
 * Hush serverless: API Gateway HTTP API and WebSocket API in front of Lambda, DynamoDB tables from
 * packages/server's definitions, an S3 bucket for encrypted attachments, SNS for SMS codes, an hourly
 * sweep, alarms. Every grant is a CDK grant on the resource, not a wildcard.
 */
export class HushStack extends Stack {
  readonly data: Data;
  readonly attachments: Attachments;
  readonly functions: Functions;
  readonly api: Api;
  readonly realtime: Realtime;

  constructor(scope: Construct, id: string, props: HushStackProps) {
    super(scope, id, props);
    if (!STAGE_NAME.test(props.stage)) throw new Error(`stage must match ${STAGE_NAME}: ${props.stage}`);
    const retainData = props.retainData ?? true;
    const throttle = props.throttle ?? { rateLimit: 100, burstLimit: 200 };
    const name = `hush-${props.stage}`;
    const tablePrefix = `${name}-`;
    // On every taggable resource, for cost allocation and for telling stages apart.
    Tags.of(this).add('hush:app', 'hush');
    Tags.of(this).add('hush:stage', props.stage);

    this.data = new Data(this, 'Data', { tablePrefix, retainData });
    this.attachments = new Attachments(this, 'Attachments', {
      retainData,
      ...(props.attachmentCorsOrigins ? { corsOrigins: props.attachmentCorsOrigins } : {}),
    });
    // 43 characters of [A-Za-z0-9]: about 256 bits; Buffer.from(value, 'base64') reads it as 32 bytes.
    const secret = new Secret(this, 'Secret', {
      description: `Hush ${props.stage}: server secret (HUSH_SECRET, base64 of 32 bytes)`,
      generateSecretString: { passwordLength: 43, excludePunctuation: true, includeSpace: false },
      removalPolicy: retainData ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY,
    });
    this.realtime = new Realtime(this, 'Realtime', {
      name: `${name}-ws`,
      stageName: props.stage,
      throttle,
    });

    this.functions = new Functions(this, 'Functions', {
      namePrefix: `${name}-`,
      logRetention: props.logRetention ?? RetentionDays.ONE_MONTH,
      ...(props.handlerEntries ? { entries: props.handlerEntries } : {}),
      environment: {
        HUSH_STAGE: props.stage,
        HUSH_TABLE_PREFIX: tablePrefix,
        HUSH_ATTACHMENTS_BUCKET: this.attachments.bucket.bucketName,
        HUSH_WS_CALLBACK_URL: this.realtime.callbackUrl,
        // Both: the value (resolved by CloudFormation at deploy time, visible in the function's
        // configuration) and the ARN (for a handler that reads the secret at cold start).
        HUSH_SECRET: secret.secretValue.unsafeUnwrap(),
        HUSH_SECRET_ARN: secret.secretArn,
        HUSH_SMS: 'sns',
        HUSH_SNS_REGION: this.region,
        HUSH_LOG_LEVEL: props.logLevel ?? 'info',
      },
    });
    const { http, ws, sweep } = this.functions;

    // Data: the HTTP function and the WebSocket function (whose frames reach the same app routes)
    // read and write every table and the bucket; the sweep deletes what has expired.
    for (const table of this.data.tables.values()) {
      table.grantReadWriteData(http);
      table.grantReadWriteData(ws);
      table.grantReadWriteData(sweep);
    }
    this.attachments.bucket.grantReadWrite(http);
    this.attachments.bucket.grantReadWrite(ws);
    this.attachments.bucket.grantRead(sweep);
    this.attachments.bucket.grantDelete(sweep);
    for (const fn of [http, ws, sweep]) secret.grantRead(fn);

    this.api = new Api(this, 'Api', { name: `${name}-http`, handler: http, throttle });
    this.realtime.route(ws);
    // Both post to connections: the WebSocket function answers frames, the HTTP function notifies
    // a recipient's open sockets after a send.
    this.realtime.grantManageConnections(ws);
    this.realtime.grantManageConnections(http);

    new Sms(this, 'Sms').grantPublishToPhoneNumbers(http);
    new Sweep(this, 'Sweep', { handler: sweep, every: Duration.hours(1) });
    new Observability(this, 'Observability', {
      functions: { Http: http, WebSocket: ws, Sweep: sweep },
      tables: Object.fromEntries([...this.data.tables].map(([n, t]) => [n, t])),
      httpApi: this.api.httpApi,
    });

    new CfnOutput(this, 'HttpUrl', { description: 'Base URL of the HTTP API', value: this.api.url });
    new CfnOutput(this, 'WebSocketUrl', { description: 'Where clients open their socket', value: this.realtime.url });
    new CfnOutput(this, 'WebSocketCallbackUrl', {
      description: 'The @connections endpoint',
      value: this.realtime.callbackUrl,
    });
    new CfnOutput(this, 'TablePrefix', { value: tablePrefix });
    new CfnOutput(this, 'AttachmentsBucket', { value: this.attachments.bucket.bucketName });
    new CfnOutput(this, 'SecretArn', { value: secret.secretArn });
  }
}
