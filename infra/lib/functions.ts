import { ArnFormat, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import { PolicyStatement } from 'aws-cdk-lib/aws-iam';
import { Architecture, Runtime } from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat, SourceMapMode } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { HANDLER_ENTRIES, type HandlerName, REPO_ROOT } from './server.ts';

/**
 * nodejs22.x: the newest Node line that the code base's Node 20 tooling and esbuild target are a safe
 * step to, still supported by Lambda (nodejs20.x went out of support with Node 20 in April 2026).
 */
export const RUNTIME = Runtime.NODEJS_22_X;

/** ESM needs `require` for the CommonJS dependencies esbuild leaves as dynamic requires of Node built-ins. */
const ESM_BANNER =
  "import { createRequire as __hushCreateRequire } from 'node:module'; const require = __hushCreateRequire(import.meta.url);";

const SIZES: Record<HandlerName, { memorySize: number; timeout: Duration; description: string }> = {
  http: { memorySize: 1024, timeout: Duration.seconds(10), description: 'Hush HTTP API (every route, payload v2)' },
  ws: {
    memorySize: 512,
    timeout: Duration.seconds(10),
    description: 'Hush WebSocket API ($connect, $disconnect, $default)',
  },
  sweep: {
    memorySize: 512,
    timeout: Duration.minutes(5),
    description: 'Hush sweep of expired records and attachments',
  },
};

export const functionName = (prefix: string, name: HandlerName): string => `${prefix}${name}`;

export interface FunctionsProps {
  /** Function names are `<namePrefix><http|ws|sweep>` (fixed, so that a function can name itself without a cycle). */
  namePrefix: string;
  /** Environment every handler gets. */
  environment: Record<string, string>;
  logRetention: RetentionDays;
  /** Entry files; default the handlers in packages/server/src/aws. */
  entries?: Partial<Record<HandlerName, string>>;
}

/** The three Lambda functions, bundled from packages/server/src/aws with the local esbuild, arm64, ESM. */
export class Functions extends Construct {
  readonly http: NodejsFunction;
  readonly ws: NodejsFunction;
  readonly sweep: NodejsFunction;

  constructor(scope: Construct, id: string, props: FunctionsProps) {
    super(scope, id);
    const make = (name: HandlerName, id: string): NodejsFunction => {
      const logGroup = new LogGroup(this, `${id}Logs`, {
        retention: props.logRetention,
        removalPolicy: RemovalPolicy.DESTROY,
      });
      return new NodejsFunction(this, id, {
        functionName: functionName(props.namePrefix, name),
        entry: props.entries?.[name] ?? HANDLER_ENTRIES[name],
        handler: 'handler',
        projectRoot: REPO_ROOT,
        depsLockFilePath: `${REPO_ROOT}package-lock.json`,
        runtime: RUNTIME,
        architecture: Architecture.ARM_64,
        ...SIZES[name],
        logGroup,
        environment: {
          ...props.environment,
          AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
          NODE_OPTIONS: '--enable-source-maps',
          // ws-handler invokes the WebSocket function asynchronously to drain a new connection's queue.
          HUSH_WS_FUNCTION_NAME: functionName(props.namePrefix, 'ws'),
        },
        bundling: {
          format: OutputFormat.ESM,
          target: 'node22',
          mainFields: ['module', 'main'],
          banner: ESM_BANNER,
          minify: true,
          sourceMap: true,
          sourceMapMode: SourceMapMode.DEFAULT,
          sourcesContent: false,
          // What the nodejs22.x runtime ships: AWS SDK for JavaScript v3. Everything else is bundled.
          externalModules: ['@aws-sdk/*'],
          forceDockerBundling: false,
        },
      });
    };
    this.http = make('http', 'Http');
    this.ws = make('ws', 'WebSocket');
    this.sweep = make('sweep', 'Sweep');
    // The WebSocket function invokes itself (InvocationType Event) after $connect. Named by its ARN
    // string: a grant through the function object would make its role's policy depend on the
    // function, which depends on that policy.
    const stack = Stack.of(this);
    this.ws.addToRolePolicy(
      new PolicyStatement({
        sid: 'InvokeSelfForDrain',
        actions: ['lambda:InvokeFunction'],
        resources: [
          stack.formatArn({
            service: 'lambda',
            resource: 'function',
            resourceName: functionName(props.namePrefix, 'ws'),
            arnFormat: ArnFormat.COLON_RESOURCE_NAME,
          }),
        ],
      }),
    );
  }
}
