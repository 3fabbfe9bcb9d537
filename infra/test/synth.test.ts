import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { HANDLER_ENTRIES, REPO_ROOT } from '../lib/server.ts';

const run = promisify(execFile);
const INFRA = fileURLToPath(new URL('../', import.meta.url));

/*
 * The real thing, offline: the aws-cdk CLI runs bin/hush.ts (through cdk.json's app command), and
 * NodejsFunction bundles the three handlers of packages/server/src/aws with the local esbuild. Then
 * each bundle is imported by plain Node as the Lambda runtime would (ESM, @aws-sdk/* from outside the
 * bundle) and must export a `handler` function. About 35 s on two cores.
 */
describe('cdk synth with bundling (aws-cdk CLI, local esbuild)', () => {
  let out: string | undefined;
  afterAll(async () => {
    if (out) await rm(out, { recursive: true, force: true });
  });

  it('synthesizes Hush-dev and bundles each handler into an ESM file that loads', { timeout: 240_000 }, async () => {
    for (const entry of Object.values(HANDLER_ENTRIES)) expect((await stat(entry)).isFile()).toBe(true);
    out = await mkdtemp(join(tmpdir(), 'hush-cdk-'));
    await run(join(REPO_ROOT, 'node_modules/.bin/cdk'), ['synth', '--quiet', '--output', out, '-c', 'stage=dev'], {
      cwd: INFRA,
      // Offline: no telemetry, no version check, no instance-metadata probe for credentials.
      env: {
        ...process.env,
        CDK_DISABLE_CLI_TELEMETRY: 'true',
        CDK_DISABLE_VERSION_CHECK: 'true',
        AWS_EC2_METADATA_DISABLED: 'true',
        CI: 'true',
      },
      maxBuffer: 16 * 1024 * 1024,
    });

    const template = JSON.parse(await readFile(join(out, 'Hush-dev.template.json'), 'utf8'));
    const functions = Object.values(template.Resources as Record<string, any>).filter(
      (r) => r.Type === 'AWS::Lambda::Function' && String(r.Properties.FunctionName).startsWith('hush-dev-'),
    );
    expect(functions.map((f) => f.Properties.FunctionName).sort()).toEqual([
      'hush-dev-http',
      'hush-dev-sweep',
      'hush-dev-ws',
    ]);

    // The bundles import @aws-sdk/* (left out: the runtime has it); here it comes from the repo's node_modules.
    await symlink(join(REPO_ROOT, 'node_modules'), join(out, 'node_modules'), 'dir');
    const assets = (await readdir(out)).filter((d) => d.startsWith('asset.'));
    const bundles = [];
    for (const fn of functions) {
      const dir = assets.find((d) => d === `asset.${String(fn.Properties.Code.S3Key).replace(/\.zip$/, '')}`);
      expect(dir, fn.Properties.FunctionName).toBeDefined();
      const files = await readdir(join(out, dir as string));
      expect(files.sort()).toEqual(['index.mjs', 'index.mjs.map']);
      expect(fn.Properties.Handler).toBe('index.handler');
      bundles.push(join(out, dir as string, 'index.mjs'));
    }
    for (const bundle of bundles) {
      const { stdout } = await run(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `const m = await import(${JSON.stringify(bundle)}); process.stdout.write(typeof m.handler);`,
        ],
        { env: { PATH: process.env.PATH ?? '' } },
      );
      expect(stdout, bundle).toBe('function');
    }
  });
});
