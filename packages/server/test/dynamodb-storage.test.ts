import { afterAll, beforeAll } from 'vitest';
import { DynamoDbStorage } from '../src/storage/dynamodb/dynamodb-storage.ts';
import { createTables } from '../src/storage/dynamodb/tables.ts';
import { storageContract } from './storage-contract.ts';
import { type DynamoDbLocal, emptyTables, startDynamoDbLocal } from './support/dynamodb-local.ts';

/*
 * The storage contract against Amazon's DynamoDB Local (Java, in memory), started here on a free
 * loopback port and stopped after the file. One set of tables for the file, emptied before each
 * test (the contract wants an empty storage; making tables anew for each test takes longer).
 */

let local: DynamoDbLocal;
const prefix = 'contract-';

beforeAll(async () => {
  local = await startDynamoDbLocal();
  await createTables(local.client, prefix, { ttl: false });
}, 90_000);
afterAll(async () => {
  await local?.stop();
});

storageContract('dynamodb', async () => {
  await emptyTables(local, prefix);
  return { storage: new DynamoDbStorage(local.doc, prefix), close: async () => {} };
});
