// DynamoDB Local for tests lives with the local serverless tooling (src/aws/local), which uses it too.
export * from '../../src/aws/local/dynamodb-local.ts';
