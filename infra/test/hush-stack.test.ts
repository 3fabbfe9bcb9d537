import { Match, Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { AWS_REQUIRED_ENV, loadAwsConfig } from '../../packages/server/src/aws/config.ts';
import { ATTACHMENT_EXPIRY_DAYS } from '../lib/attachments.ts';
import { HushStack } from '../lib/hush-stack.ts';
import { WEBSOCKET_ROUTES } from '../lib/realtime.ts';
import { ATTACHMENT_TTL_MS, tableDefinitions, tableNames } from '../lib/server.ts';
import { testStack } from './helpers.ts';

type Resources = Record<string, { Type: string; Properties: any; DeletionPolicy?: string }>;

let template: Template;
let resources: Resources;

beforeAll(() => {
  template = Template.fromStack(testStack());
  resources = template.toJSON().Resources;
});

/** The logical id of the one resource of `type` whose properties match. */
function logicalId(type: string, props: Record<string, unknown>): string {
  const found = Object.keys(template.findResources(type, { Properties: props }));
  expect(found, `${type} ${JSON.stringify(props)}`).toHaveLength(1);
  return found[0] as string;
}
const fnId = (name: 'http' | 'ws' | 'sweep') =>
  logicalId('AWS::Lambda::Function', { FunctionName: `hush-test-${name}` });

/** Every statement of the role policies attached to a function's role. */
function statements(name: 'http' | 'ws' | 'sweep'): any[] {
  const role = resources[fnId(name)]?.Properties.Role['Fn::GetAtt'][0];
  return Object.values(resources)
    .filter((r) => r.Type === 'AWS::IAM::Policy' && r.Properties.Roles.some((x: any) => x.Ref === role))
    .flatMap((r) => r.Properties.PolicyDocument.Statement);
}
const actionsOf = (s: any): string[] => [s.Action].flat();
const resourcesOf = (s: any): any[] => [s.Resource].flat();
/** The logical ids a CloudFormation value refers to (Ref, Fn::GetAtt, inside Fn::Join). */
const refs = (value: unknown): string[] => {
  const out: string[] = [];
  const walk = (v: unknown) => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (k === 'Ref' && typeof x === 'string') out.push(x);
        else if (k === 'Fn::GetAtt' && Array.isArray(x)) out.push(String(x[0]));
        else walk(x);
      }
    }
  };
  walk(value);
  return out;
};

describe('data: DynamoDB tables from packages/server tableDefinitions', () => {
  it('makes exactly one table per definition', () => {
    template.resourceCountIs('AWS::DynamoDB::GlobalTable', tableDefinitions.length);
    expect(tableDefinitions.map((t) => t.name)).toEqual(expect.arrayContaining(['main', 'keys', 'messages']));
  });

  for (const definition of tableDefinitions) {
    it(`table ${definition.name}: keys, LSIs, TTL, on-demand, PITR, retained`, () => {
      const name = tableNames('hush-test-')[definition.name];
      const id = logicalId('AWS::DynamoDB::GlobalTable', { TableName: name });
      const table = resources[id] as Resources[string];
      expect(table.Properties.KeySchema).toEqual(definition.keySchema);
      expect(table.Properties.AttributeDefinitions).toEqual(expect.arrayContaining(definition.attributeDefinitions));
      expect(table.Properties.AttributeDefinitions).toHaveLength(definition.attributeDefinitions.length);
      expect(table.Properties.BillingMode).toBe('PAY_PER_REQUEST');
      if (definition.ttlAttribute) {
        expect(table.Properties.TimeToLiveSpecification).toEqual({
          AttributeName: definition.ttlAttribute,
          Enabled: true,
        });
      } else {
        expect(table.Properties.TimeToLiveSpecification).toBeUndefined();
      }
      expect(table.Properties.LocalSecondaryIndexes ?? []).toEqual(
        (definition.localSecondaryIndexes ?? []).map((lsi) => ({
          IndexName: lsi.IndexName,
          KeySchema: lsi.KeySchema,
          Projection: { ProjectionType: lsi.Projection?.ProjectionType ?? 'ALL' },
        })),
      );
      expect(table.Properties.Replicas).toEqual([
        expect.objectContaining({
          PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
          DeletionProtectionEnabled: true,
        }),
      ]);
      expect(table.DeletionPolicy).toBe('Retain');
    });
  }

  it('a throwaway stage (retainData false) deletes its tables, bucket and secret with the stack', () => {
    const dev = Template.fromStack(testStack({ stage: 'scratch', retainData: false }));
    const all = Object.values(dev.toJSON().Resources as Resources);
    for (const type of ['AWS::DynamoDB::GlobalTable', 'AWS::S3::Bucket', 'AWS::SecretsManager::Secret']) {
      const ofType = all.filter((r) => r.Type === type);
      expect(ofType.length).toBeGreaterThan(0);
      for (const r of ofType) expect(r.DeletionPolicy, type).toBe('Delete');
    }
    for (const r of all.filter((x) => x.Type === 'AWS::DynamoDB::GlobalTable')) {
      expect(r.Properties.Replicas[0].DeletionProtectionEnabled).toBe(false);
    }
  });
});

describe('attachments: S3 bucket', () => {
  it('blocks public access, encrypts, enforces TLS, expires with the attachment lifetime', () => {
    template.resourceCountIs('AWS::S3::Bucket', 1);
    const bucket = Object.values(template.findResources('AWS::S3::Bucket'))[0] as Resources[string];
    expect(bucket.Properties.PublicAccessBlockConfiguration).toEqual({
      BlockPublicAcls: true,
      BlockPublicPolicy: true,
      IgnorePublicAcls: true,
      RestrictPublicBuckets: true,
    });
    expect(bucket.Properties.BucketEncryption).toEqual({
      ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
    });
    expect(ATTACHMENT_EXPIRY_DAYS * 24 * 3600 * 1000).toBeGreaterThanOrEqual(ATTACHMENT_TTL_MS);
    expect(ATTACHMENT_EXPIRY_DAYS).toBe(31);
    expect(bucket.Properties.LifecycleConfiguration.Rules).toEqual([
      expect.objectContaining({
        Status: 'Enabled',
        ExpirationInDays: ATTACHMENT_EXPIRY_DAYS,
        AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 },
      }),
    ]);
    expect(bucket.Properties.CorsConfiguration).toBeUndefined();
    expect(bucket.DeletionPolicy).toBe('Retain');
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Deny',
            Action: 's3:*',
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          }),
        ]),
      },
    });
  });

  it('has a CORS rule only when origins for presigned URLs are given', () => {
    const withCors = Template.fromStack(testStack({ attachmentCorsOrigins: ['https://app.example'] }));
    withCors.hasResourceProperties('AWS::S3::Bucket', {
      CorsConfiguration: {
        CorsRules: [Match.objectLike({ AllowedOrigins: ['https://app.example'], AllowedMethods: ['PUT', 'GET'] })],
      },
    });
  });
});

describe('api and realtime: API Gateway', () => {
  it('HTTP API: one $default route to the HTTP function (payload 2.0), throttled $default stage', () => {
    const api = logicalId('AWS::ApiGatewayV2::Api', { ProtocolType: 'HTTP' });
    const routes = template.findResources('AWS::ApiGatewayV2::Route', { Properties: { ApiId: { Ref: api } } });
    expect(Object.values(routes).map((r) => r.Properties.RouteKey)).toEqual(['$default']);
    const route = Object.values(routes)[0] as Resources[string];
    const integration = resources[refs(route.Properties.Target)[0] as string] as Resources[string];
    expect(integration.Properties).toMatchObject({ IntegrationType: 'AWS_PROXY', PayloadFormatVersion: '2.0' });
    expect(refs(integration.Properties.IntegrationUri)).toEqual([fnId('http')]);
    template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      ApiId: { Ref: api },
      StageName: '$default',
      AutoDeploy: true,
      DefaultRouteSettings: { ThrottlingRateLimit: 100, ThrottlingBurstLimit: 200 },
    });
    template.hasResourceProperties('AWS::Lambda::Permission', {
      Action: 'lambda:InvokeFunction',
      Principal: 'apigateway.amazonaws.com',
      FunctionName: { 'Fn::GetAtt': [fnId('http'), 'Arn'] },
    });
  });

  it('WebSocket API: $connect, $disconnect and $default to the WebSocket function, a stage named after the deployment', () => {
    const api = logicalId('AWS::ApiGatewayV2::Api', { ProtocolType: 'WEBSOCKET' });
    expect(resources[api]?.Properties.RouteSelectionExpression).toBe('$request.body.action');
    const routes = Object.values(
      template.findResources('AWS::ApiGatewayV2::Route', { Properties: { ApiId: { Ref: api } } }),
    );
    expect(routes.map((r) => r.Properties.RouteKey).sort()).toEqual([...WEBSOCKET_ROUTES].sort());
    for (const route of routes) {
      const integration = resources[refs(route.Properties.Target)[0] as string] as Resources[string];
      expect(integration.Properties.IntegrationType).toBe('AWS_PROXY');
      expect(refs(integration.Properties.IntegrationUri)).toContain(fnId('ws'));
    }
    template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      ApiId: { Ref: api },
      StageName: 'test',
      AutoDeploy: true,
    });
  });
});

describe('functions: Lambda', () => {
  const expected = {
    http: { MemorySize: 1024, Timeout: 10 },
    ws: { MemorySize: 512, Timeout: 10 },
    sweep: { MemorySize: 512, Timeout: 300 },
  } as const;

  for (const [name, size] of Object.entries(expected) as [keyof typeof expected, (typeof expected)['http']][]) {
    it(`${name}: nodejs22.x on arm64, ESM bundle entry, size, environment`, () => {
      const fn = resources[fnId(name)]?.Properties;
      expect(fn).toMatchObject({ Runtime: 'nodejs22.x', Architectures: ['arm64'], Handler: 'index.handler', ...size });
      expect(fn.Tags).toEqual(expect.arrayContaining([{ Key: 'hush:stage', Value: 'test' }]));
      const env = fn.Environment.Variables;
      expect(Object.keys(env).sort()).toEqual(
        [
          'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED',
          'HUSH_ATTACHMENTS_BUCKET',
          'HUSH_LOG_LEVEL',
          'HUSH_SECRET',
          'HUSH_SECRET_ARN',
          'HUSH_SMS',
          'HUSH_SNS_REGION',
          'HUSH_STAGE',
          'HUSH_TABLE_PREFIX',
          'HUSH_WS_CALLBACK_URL',
          'HUSH_WS_FUNCTION_NAME',
          'NODE_OPTIONS',
        ].sort(),
      );
      const bucket = logicalId('AWS::S3::Bucket', {});
      const secret = logicalId('AWS::SecretsManager::Secret', {});
      const wsApi = logicalId('AWS::ApiGatewayV2::Api', { ProtocolType: 'WEBSOCKET' });
      expect(env).toMatchObject({
        HUSH_TABLE_PREFIX: 'hush-test-',
        HUSH_ATTACHMENTS_BUCKET: { Ref: bucket },
        HUSH_SECRET_ARN: { Ref: secret },
        HUSH_SMS: 'sns',
        HUSH_LOG_LEVEL: 'info',
        HUSH_WS_FUNCTION_NAME: 'hush-test-ws',
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
        NODE_OPTIONS: '--enable-source-maps',
      });
      expect(env.HUSH_WS_CALLBACK_URL).toEqual({
        'Fn::Join': [
          '',
          ['https://', { Ref: wsApi }, '.execute-api.eu-central-1.', { Ref: 'AWS::URLSuffix' }, '/test'],
        ],
      });
      expect(JSON.stringify(env.HUSH_SECRET)).toContain('{{resolve:secretsmanager:');
      expect(refs(env.HUSH_SECRET)).toEqual([secret]);
    });
  }

  it("every function's environment passes the handlers' own config check (packages/server/src/aws/config.ts)", () => {
    // Deploy-time values stand in for the tokens CloudFormation resolves.
    const deployed: Record<string, string> = {
      HUSH_ATTACHMENTS_BUCKET: 'hush-test-attachmentsbucket-1a2b3c',
      HUSH_WS_CALLBACK_URL: 'https://abc123defg.execute-api.eu-central-1.amazonaws.com/test',
      HUSH_SECRET: 'Zx9'.repeat(14).concat('Q'),
      HUSH_SECRET_ARN: 'arn:aws:secretsmanager:eu-central-1:123456789012:secret:Secret-AbCdEf',
      HUSH_SNS_REGION: 'eu-central-1',
    };
    for (const name of ['http', 'ws', 'sweep'] as const) {
      const env = resources[fnId(name)]?.Properties.Environment.Variables as Record<string, unknown>;
      for (const key of AWS_REQUIRED_ENV) expect(env, `${name} ${key}`).toHaveProperty(key);
      const resolved = Object.fromEntries(
        Object.entries(env).map(([k, v]) => [k, typeof v === 'string' ? v : (deployed[k] ?? '')]),
      );
      expect(Object.values(resolved)).not.toContain('');
      const config = loadAwsConfig({
        ...resolved,
        AWS_REGION: 'eu-central-1',
        AWS_LAMBDA_FUNCTION_NAME: `hush-test-${name}`,
      });
      expect(config.tablePrefix).toBe('hush-test-');
      expect(config.secret).toHaveLength(32);
      expect(config.sms.kind).toBe('sns');
      expect(config.wsFunctionName).toBe('hush-test-ws');
    }
  });

  it('the secret is generated: 43 characters without punctuation (Buffer.from(v, "base64") gives 32 bytes)', () => {
    template.hasResourceProperties('AWS::SecretsManager::Secret', {
      GenerateSecretString: { PasswordLength: 43, ExcludePunctuation: true, IncludeSpace: false },
    });
    expect(Buffer.from('A'.repeat(43), 'base64')).toHaveLength(32);
  });

  it('each function logs to its own log group kept for 30 days', () => {
    for (const name of ['http', 'ws', 'sweep'] as const) {
      const group = refs(resources[fnId(name)]?.Properties.LoggingConfig.LogGroup)[0] as string;
      expect(resources[group]).toMatchObject({ Type: 'AWS::Logs::LogGroup', Properties: { RetentionInDays: 30 } });
    }
  });
});

describe('IAM: least privilege through grants', () => {
  const tableIds = () => Object.keys(template.findResources('AWS::DynamoDB::GlobalTable'));

  it('the HTTP function reads and writes every table and the bucket, publishes SMS, has no dynamodb on *', () => {
    const s = statements('http');
    for (const table of tableIds()) {
      const onTable = s.filter((x) => x.Effect === 'Allow' && refs(x.Resource).includes(table));
      const actions = onTable.flatMap(actionsOf);
      for (const a of [
        'dynamodb:GetItem',
        'dynamodb:PutItem',
        'dynamodb:UpdateItem',
        'dynamodb:DeleteItem',
        'dynamodb:Query',
      ]) {
        expect(actions, `${table} ${a}`).toContain(a);
      }
    }
    const dynamo = s.filter((x) => actionsOf(x).some((a) => a.startsWith('dynamodb:')));
    for (const x of dynamo) {
      for (const r of resourcesOf(x)) expect(typeof r === 'string' && r.includes('*'), JSON.stringify(r)).toBe(false);
      expect(actionsOf(x)).not.toContain('dynamodb:*');
    }
    const bucket = logicalId('AWS::S3::Bucket', {});
    const s3 = s.filter((x) => refs(x.Resource).includes(bucket)).flatMap(actionsOf);
    expect(s3).toEqual(expect.arrayContaining(['s3:GetObject*', 's3:PutObject', 's3:DeleteObject*']));
    expect(s).toContainEqual(
      expect.objectContaining({ Effect: 'Allow', Action: 'sns:Publish', Resource: '*', Sid: 'SmsToPhoneNumbers' }),
    );
    const deny = s.find((x) => x.Effect === 'Deny' && x.Action === 'sns:Publish');
    expect(JSON.stringify(deny.Resource)).toContain(':sns:*:*:*');
    // The only statement on `*` is the SMS publish (SNS has no ARN for a phone number).
    expect(s.filter((x) => x.Effect === 'Allow' && resourcesOf(x).includes('*')).flatMap(actionsOf)).toEqual([
      'sns:Publish',
    ]);
  });

  it('the WebSocket and HTTP functions may manage connections of the WebSocket API, the sweep may not', () => {
    const wsApi = logicalId('AWS::ApiGatewayV2::Api', { ProtocolType: 'WEBSOCKET' });
    for (const name of ['ws', 'http'] as const) {
      const manage = statements(name).filter((x) => actionsOf(x).includes('execute-api:ManageConnections'));
      expect(manage, name).toHaveLength(1);
      expect(refs(manage[0].Resource)).toContain(wsApi);
      expect(JSON.stringify(manage[0].Resource)).toContain('/@connections/*');
    }
    expect(statements('sweep').flatMap(actionsOf)).not.toContain('execute-api:ManageConnections');
  });

  it('the WebSocket function may invoke itself and nothing else; no function but HTTP sends SMS', () => {
    const invoke = statements('ws').filter((x) => actionsOf(x).includes('lambda:InvokeFunction'));
    expect(invoke).toHaveLength(1);
    expect(JSON.stringify(invoke[0].Resource)).toContain(':function:hush-test-ws"');
    expect(statements('http').flatMap(actionsOf)).not.toContain('lambda:InvokeFunction');
    for (const name of ['ws', 'sweep'] as const)
      expect(statements(name).flatMap(actionsOf)).not.toContain('sns:Publish');
  });

  it('every function reads the secret; the sweep reads and deletes attachments but does not write them', () => {
    const secret = logicalId('AWS::SecretsManager::Secret', {});
    for (const name of ['http', 'ws', 'sweep'] as const) {
      const read = statements(name)
        .filter((x) => refs(x.Resource).includes(secret))
        .flatMap(actionsOf);
      expect(read, name).toContain('secretsmanager:GetSecretValue');
    }
    const bucket = logicalId('AWS::S3::Bucket', {});
    const sweepS3 = statements('sweep')
      .filter((x) => refs(x.Resource).includes(bucket))
      .flatMap(actionsOf);
    expect(sweepS3).toEqual(expect.arrayContaining(['s3:GetObject*', 's3:List*', 's3:DeleteObject*']));
    expect(sweepS3).not.toContain('s3:PutObject');
  });
});

describe('sweep, observability, outputs', () => {
  it('an EventBridge rule runs the sweep function every hour', () => {
    template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(1 hour)',
      State: 'ENABLED',
      Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [fnId('sweep'), 'Arn'] } })],
    });
    template.hasResourceProperties('AWS::Lambda::Permission', {
      Principal: 'events.amazonaws.com',
      FunctionName: { 'Fn::GetAtt': [fnId('sweep'), 'Arn'] },
    });
  });

  it('alarms on Lambda errors and throttles, DynamoDB throttles and HTTP 5xx, without actions', () => {
    const alarms = Object.values(template.findResources('AWS::CloudWatch::Alarm')) as Resources[string][];
    expect(alarms).toHaveLength(3 * 2 + tableDefinitions.length + 1);
    for (const a of alarms) expect(a.Properties.AlarmActions).toBeUndefined();
    const metricNames = alarms.map((a) => a.Properties.MetricName).filter(Boolean);
    expect(metricNames.filter((m) => m === 'Errors')).toHaveLength(3);
    expect(metricNames.filter((m) => m === 'Throttles')).toHaveLength(3);
    expect(metricNames).toContain('5xx');
    const tableAlarms = alarms.filter((a) => a.Properties.Metrics);
    expect(tableAlarms).toHaveLength(tableDefinitions.length);
    for (const a of tableAlarms) {
      const names = a.Properties.Metrics.filter((m: any) => m.MetricStat).map(
        (m: any) => m.MetricStat.Metric.MetricName,
      );
      expect(names.sort()).toEqual(['ReadThrottleEvents', 'WriteThrottleEvents']);
    }
  });

  it('outputs the HTTP and WebSocket URLs', () => {
    const http = logicalId('AWS::ApiGatewayV2::Api', { ProtocolType: 'HTTP' });
    const ws = logicalId('AWS::ApiGatewayV2::Api', { ProtocolType: 'WEBSOCKET' });
    const outputs = template.toJSON().Outputs;
    expect(JSON.stringify(outputs.HttpUrl.Value)).toMatch(/^\{"Fn::Join":\["",\["https:\/\//);
    expect(refs(outputs.HttpUrl.Value)).toContain(http);
    expect(JSON.stringify(outputs.WebSocketUrl.Value)).toMatch(/"wss:\/\/".*"\/test"/);
    expect(refs(outputs.WebSocketUrl.Value)).toContain(ws);
    expect(Object.keys(outputs)).toEqual(
      expect.arrayContaining(['HttpUrl', 'WebSocketUrl', 'WebSocketCallbackUrl', 'TablePrefix', 'AttachmentsBucket']),
    );
  });

  it('refuses a stage name that cannot be part of resource names', () => {
    expect(() => testStack({ stage: 'Prod' })).toThrow(/stage must match/);
    expect(testStack({ stage: 'prod' })).toBeInstanceOf(HushStack);
  });
});
