/**
 * The serverless deployment for tests: the Lambda handlers behind the local API Gateway
 * (src/aws/local), on DynamoDB Local (one per test file, started here) and s3rver, with the dev SMS
 * log in a temporary data directory, so TestDevice registers against it as against the standalone
 * server.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { type ServerlessLocal, startServerlessLocal } from '../../src/aws/local/deployment.ts';
import { DevPushSender } from '../../src/push/dev-push-sender.ts';
import { type DynamoDbLocal, startDynamoDbLocal } from './dynamodb-local.ts';

export interface ServerlessTestServer extends ServerlessLocal {
  push: DevPushSender;
  /** Everything the handlers logged so far (JSON lines). */
  logs(): string;
}

let dynamo: { local: Promise<DynamoDbLocal>; users: number } | undefined;
let counter = 0;

/** Starts a deployment with tables of its own; DynamoDB Local is shared until the last one closes. */
export async function startServerlessTestServer(env: Record<string, string> = {}): Promise<ServerlessTestServer> {
  dynamo ??= { local: startDynamoDbLocal(), users: 0 };
  dynamo.users++;
  const shared = dynamo;
  const local = await shared.local;
  const dataDir = mkdtempSync(join(tmpdir(), 'hush-serverless-'));
  const logStream = new PassThrough();
  const chunks: Buffer[] = [];
  logStream.on('data', (chunk: Buffer) => chunks.push(chunk));
  const push = new DevPushSender();
  counter++;
  const deployment = await startServerlessLocal({
    dynamoEndpoint: local.endpoint,
    dataDir,
    tablePrefix: `e2e${process.pid}-${counter}-`,
    bucket: `hush-e2e-${counter}`,
    push,
    ttl: false,
    logDestination: logStream,
    env: {
      HUSH_LOG_LEVEL: 'info',
      HUSH_VERIFY_RESEND_COOLDOWN_SECONDS: '0',
      HUSH_VERIFY_PER_NUMBER_PER_HOUR: '1000',
      HUSH_VERIFY_PER_CLIENT_PER_HOUR: '100000',
      ...env,
    },
  });
  const close = deployment.close;
  return Object.assign(deployment, {
    push,
    logs: () => Buffer.concat(chunks).toString('utf8'),
    async close() {
      await close();
      if (--shared.users === 0) {
        if (dynamo === shared) dynamo = undefined;
        await local.stop();
      }
    },
  });
}
