/**
 * The Lambda handlers as they are deployed: bundled by esbuild the way the CDK app bundles them
 * (ESM, platform node, the AWS SDK left to the runtime), loaded from the bundle files, configured
 * only through environment variables (the cold-start path), and run behind the local API Gateway:
 * two devices register, one connects its socket, the other sends, the first receives live.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LocalGateway, startLocalGateway } from '../src/aws/local/gateway.ts';
import { TestDevice, api, marker } from './support/harness.ts';
import { type ServerlessTestServer, startServerlessTestServer } from './support/serverless.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const HANDLERS = ['http', 'ws', 'sweep'] as const;

describe('the bundled Lambda handlers', () => {
  let deployment: ServerlessTestServer;
  let gateway: LocalGateway;
  let outdir: string;
  const dataDir = mkdtempSync(join(tmpdir(), 'hush-bundle-'));
  let bundled: Record<(typeof HANDLERS)[number], { handler: (event: unknown, context: unknown) => Promise<any> }>;

  beforeAll(async () => {
    // Inside the repository's node_modules, so that the bundles resolve @aws-sdk/* as Lambda's runtime would.
    mkdirSync(join(ROOT, 'node_modules/.cache'), { recursive: true });
    outdir = mkdtempSync(join(ROOT, 'node_modules/.cache/hush-aws-bundle-'));
    await Promise.all([
      build({
        entryPoints: Object.fromEntries(
          HANDLERS.map((h) => [h, join(ROOT, `packages/server/src/aws/${h}-handler.ts`)]),
        ),
        outdir,
        outExtension: { '.js': '.mjs' },
        bundle: true,
        platform: 'node',
        format: 'esm',
        target: 'node20',
        mainFields: ['module', 'main'],
        external: ['@aws-sdk/*'],
        banner: {
          js: "import { createRequire as __hushCreateRequire } from 'node:module'; const require = __hushCreateRequire(import.meta.url);",
        },
        logLevel: 'error',
        metafile: true,
      }).then((result) => {
        // What must never be in a Lambda bundle: the standalone server's native SQLite.
        expect(Object.keys(result.metafile.inputs).filter((path) => path.includes('better-sqlite3'))).toEqual([]);
      }),
      startServerlessTestServer().then((d) => {
        deployment = d;
      }),
    ]);
    gateway = await startLocalGateway();
    const config = deployment.http.config;
    Object.assign(process.env, {
      HUSH_TABLE_PREFIX: config.tablePrefix,
      HUSH_ATTACHMENTS_BUCKET: config.attachmentsBucket,
      HUSH_WS_CALLBACK_URL: gateway.callbackUrl,
      HUSH_SECRET: Buffer.from(config.secret).toString('base64'),
      HUSH_SMS: 'dev',
      HUSH_DEV_SMS_FILE: join(dataDir, 'dev-sms.log'),
      HUSH_LOG_LEVEL: 'silent',
      HUSH_VERIFY_RESEND_COOLDOWN_SECONDS: '0',
      HUSH_WS_FUNCTION_NAME: 'hush-test-ws',
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
      AWS_ENDPOINT_URL_DYNAMODB: config.aws.endpoints.dynamodb,
      AWS_ENDPOINT_URL_S3: config.aws.endpoints.s3,
      AWS_ENDPOINT_URL_LAMBDA: gateway.lambdaEndpoint,
    });
    bundled = Object.fromEntries(
      await Promise.all(HANDLERS.map(async (h) => [h, await import(pathToFileURL(join(outdir, `${h}.mjs`)).href)])),
    );
    gateway.attach({ http: (e) => bundled.http.handler(e, {}), ws: (e) => bundled.ws.handler(e, {}) });
  }, 90_000);
  afterAll(async () => {
    await gateway?.close();
    await deployment?.close();
    if (outdir) rmSync(outdir, { recursive: true, force: true });
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('register, connect, send, receive live, ack; the sweep runs', async () => {
    const target = { url: gateway.url, dataDir };
    const alice = await TestDevice.register(target);
    const bob = await TestDevice.register(target);
    const socket = await bob.connect(target);
    await socket.next((f) => f.type === 'queue-empty');
    const text = marker('bundled');
    expect((await alice.sendText(target, bob, text)).status).toBe(200);
    const frame = await socket.next((f) => f.type === 'envelope');
    expect(new TextDecoder().decode(await bob.decrypt(frame.envelope))).toBe(new TextDecoder().decode(text));
    socket.ack(frame.envelope.guid);
    await expect
      .poll(async () => (await api(target, 'GET', '/v1/messages', { auth: bob })).body.messages.length)
      .toBe(0);
    await socket.close();
    expect(await bundled.sweep.handler({}, {})).toEqual({
      envelopes: expect.any(Number),
      attachments: expect.any(Number),
    });
  });
});
