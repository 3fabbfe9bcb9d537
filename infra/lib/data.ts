import { RemovalPolicy } from 'aws-cdk-lib';
import {
  type Attribute,
  AttributeType,
  Billing,
  type LocalSecondaryIndexProps,
  ProjectionType,
  TableV2,
} from 'aws-cdk-lib/aws-dynamodb';
import { Construct } from 'constructs';
import { type TableDefinition, type TableName, tableDefinitions, tableNames } from './server.ts';

export interface DataProps {
  /** Prefix of every table name, e.g. `hush-prod-` (the handlers get it as HUSH_TABLE_PREFIX). */
  tablePrefix: string;
  /** Keep the tables (RETAIN, deletion protection) when the stack or a table is deleted. */
  retainData: boolean;
}

/**
 * The DynamoDB tables, one per entry of packages/server's `tableDefinitions`: on-demand, TTL where the
 * definition names a TTL attribute, point-in-time recovery, AWS-owned encryption at rest.
 */
export class Data extends Construct {
  readonly tables: ReadonlyMap<TableName, TableV2>;

  constructor(scope: Construct, id: string, props: DataProps) {
    super(scope, id);
    const names = tableNames(props.tablePrefix);
    const tables = new Map<TableName, TableV2>();
    for (const definition of tableDefinitions) {
      const keys = keySchema(definition, definition.keySchema);
      const table = new TableV2(this, pascal(definition.name), {
        tableName: names[definition.name],
        partitionKey: keys.partitionKey,
        ...(keys.sortKey ? { sortKey: keys.sortKey } : {}),
        billing: Billing.onDemand(),
        ...(definition.ttlAttribute ? { timeToLiveAttribute: definition.ttlAttribute } : {}),
        pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
        deletionProtection: props.retainData,
        removalPolicy: props.retainData ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY,
        localSecondaryIndexes: (definition.localSecondaryIndexes ?? []).map((index): LocalSecondaryIndexProps => {
          if (!index.IndexName || !index.KeySchema)
            throw new Error(`table ${definition.name}: an LSI without a name or keys`);
          const lsiKeys = keySchema(definition, index.KeySchema);
          if (!lsiKeys.sortKey) throw new Error(`table ${definition.name}: LSI ${index.IndexName} has no sort key`);
          return {
            indexName: index.IndexName,
            sortKey: lsiKeys.sortKey,
            ...projection(definition, index.Projection),
          };
        }),
      });
      tables.set(definition.name, table);
    }
    this.tables = tables;
  }
}

type KeySchemaElement = NonNullable<TableDefinition['keySchema']>[number];
type Projection = NonNullable<NonNullable<TableDefinition['localSecondaryIndexes']>[number]['Projection']>;

function keySchema(
  definition: TableDefinition,
  elements: KeySchemaElement[],
): { partitionKey: Attribute; sortKey?: Attribute } {
  const hash = elements.find((e) => e.KeyType === 'HASH');
  const range = elements.find((e) => e.KeyType === 'RANGE');
  if (!hash) throw new Error(`table ${definition.name}: no HASH key`);
  const partitionKey = attribute(definition, hash.AttributeName);
  return range ? { partitionKey, sortKey: attribute(definition, range.AttributeName) } : { partitionKey };
}

function attribute(definition: TableDefinition, name: string | undefined): Attribute {
  const found = definition.attributeDefinitions.find((a) => a.AttributeName === name);
  if (!name || !found) throw new Error(`table ${definition.name}: key attribute ${name} is not defined`);
  const type = { S: AttributeType.STRING, N: AttributeType.NUMBER, B: AttributeType.BINARY }[
    found.AttributeType ?? 'S'
  ];
  return { name, type };
}

function projection(
  definition: TableDefinition,
  p: Projection | undefined,
): Pick<LocalSecondaryIndexProps, 'projectionType' | 'nonKeyAttributes'> {
  switch (p?.ProjectionType ?? 'ALL') {
    case 'ALL':
      return { projectionType: ProjectionType.ALL };
    case 'KEYS_ONLY':
      return { projectionType: ProjectionType.KEYS_ONLY };
    case 'INCLUDE':
      return { projectionType: ProjectionType.INCLUDE, nonKeyAttributes: p?.NonKeyAttributes ?? [] };
    default:
      throw new Error(`table ${definition.name}: unknown projection ${p?.ProjectionType}`);
  }
}

const pascal = (name: string): string =>
  name
    .replace(/(^|[-_\s]+)([a-z0-9])/gi, (_m, _sep, c: string) => c.toUpperCase())
    .replace(/^Default$/, 'DefaultTable');
