import {
  type AttributeDefinition,
  CreateTableCommand,
  DeleteTableCommand,
  DescribeTimeToLiveCommand,
  type DynamoDBClient,
  type KeySchemaElement,
  type LocalSecondaryIndex,
  ResourceInUseException,
  ResourceNotFoundException,
  UpdateTimeToLiveCommand,
  waitUntilTableExists,
} from '@aws-sdk/client-dynamodb';

/*
 * The DynamoDB tables of the serverless deployment, in one place: the storage adapter reads the
 * names from here, `createTables` makes them for tests and local runs, and the CDK app is meant to
 * build the same tables from `tableDefinitions` (on-demand billing, TTL on `ttl`).
 *
 * Three tables (see dynamodb-storage.ts for what lives where and why):
 *   main      pk (S) + sk (S)  everything small: sessions, rate limits, accounts, devices, numbers,
 *                              link codes, provisioning messages, queue heads, send receipts,
 *                              shared payloads, send commit records, purge records
 *   keys      pk (S) + sk (S)  one-time prekeys, one partition per device incarnation; no TTL
 *   messages  pk (S) + sk (S)  queued envelopes: pk = account#device, sk = guid, LSI `byPosition`
 *                              on (pk, pos N) for the FIFO order; TTL
 *   connections pk (S) + sk (S) live API Gateway WebSocket connections of the serverless deployment
 *                              (src/aws/connections.ts): connection → device with its delivery
 *                              state, device → connections; TTL (a connection lives at most 2 h)
 */

export type TableName = 'main' | 'keys' | 'messages' | 'connections';

export interface TableDefinition {
  /** The table's name without the deployment's prefix. */
  name: TableName;
  keySchema: KeySchemaElement[];
  attributeDefinitions: AttributeDefinition[];
  localSecondaryIndexes?: LocalSecondaryIndex[];
  /** The attribute DynamoDB's TTL deletes by (seconds since the epoch), if any. */
  ttlAttribute?: string;
}

/** The LSI of `messages` that orders a queue by position. */
export const BY_POSITION_INDEX = 'byPosition';
/** Every TTL attribute is called this (seconds since the epoch, as DynamoDB wants it). */
export const TTL_ATTRIBUTE = 'ttl';

const pkSk = (): Pick<TableDefinition, 'keySchema' | 'attributeDefinitions'> => ({
  keySchema: [
    { AttributeName: 'pk', KeyType: 'HASH' },
    { AttributeName: 'sk', KeyType: 'RANGE' },
  ],
  attributeDefinitions: [
    { AttributeName: 'pk', AttributeType: 'S' },
    { AttributeName: 'sk', AttributeType: 'S' },
  ],
});

export const tableDefinitions: readonly TableDefinition[] = [
  { name: 'main', ...pkSk(), ttlAttribute: TTL_ATTRIBUTE },
  { name: 'keys', ...pkSk() },
  {
    name: 'messages',
    keySchema: pkSk().keySchema,
    attributeDefinitions: [...pkSk().attributeDefinitions, { AttributeName: 'pos', AttributeType: 'N' }],
    localSecondaryIndexes: [
      {
        IndexName: BY_POSITION_INDEX,
        KeySchema: [
          { AttributeName: 'pk', KeyType: 'HASH' },
          { AttributeName: 'pos', KeyType: 'RANGE' },
        ],
        Projection: { ProjectionType: 'ALL' },
      },
    ],
    ttlAttribute: TTL_ATTRIBUTE,
  },
  { name: 'connections', ...pkSk(), ttlAttribute: TTL_ATTRIBUTE },
];

/** The full table names for a deployment prefix (e.g. "hush-prod-" → "hush-prod-main"). */
export function tableNames(prefix: string): Record<TableName, string> {
  return {
    main: `${prefix}main`,
    keys: `${prefix}keys`,
    messages: `${prefix}messages`,
    connections: `${prefix}connections`,
  };
}

/**
 * Creates the tables (on-demand), waits until they are active, and turns TTL on; tables that
 * exist already are left as they are (TTL is turned on if it is off). `ttl: false` leaves TTL off: tests do, because their fixed timestamps lie in
 * the past and an emulator that honours TTL could delete items in the middle of a test.
 */
export async function createTables(
  client: DynamoDBClient,
  prefix: string,
  options: { ttl?: boolean } = {},
): Promise<void> {
  const names = tableNames(prefix);
  await Promise.all(
    tableDefinitions.map(async (t) => {
      const TableName = names[t.name];
      try {
        await client.send(
          new CreateTableCommand({
            TableName,
            BillingMode: 'PAY_PER_REQUEST',
            KeySchema: t.keySchema,
            AttributeDefinitions: t.attributeDefinitions,
            ...(t.localSecondaryIndexes ? { LocalSecondaryIndexes: t.localSecondaryIndexes } : {}),
          }),
        );
      } catch (error) {
        if (!(error instanceof ResourceInUseException)) throw error;
      }
      await waitUntilTableExists({ client, maxWaitTime: 60, minDelay: 1 }, { TableName });
      if (t.ttlAttribute && options.ttl !== false) {
        const current = await client.send(new DescribeTimeToLiveCommand({ TableName }));
        const status = current.TimeToLiveDescription?.TimeToLiveStatus;
        if (status === 'ENABLED' || status === 'ENABLING') return;
        await client.send(
          new UpdateTimeToLiveCommand({
            TableName,
            TimeToLiveSpecification: { AttributeName: t.ttlAttribute, Enabled: true },
          }),
        );
      }
    }),
  );
}

/** Deletes the tables of a prefix (those that exist). */
export async function deleteTables(client: DynamoDBClient, prefix: string): Promise<void> {
  const names = tableNames(prefix);
  await Promise.all(
    tableDefinitions.map(async (t) => {
      try {
        await client.send(new DeleteTableCommand({ TableName: names[t.name] }));
      } catch (error) {
        if (!(error instanceof ResourceNotFoundException)) throw error;
      }
    }),
  );
}
