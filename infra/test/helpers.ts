import { readFileSync } from 'node:fs';
import { App } from 'aws-cdk-lib';
import { HushStack, type HushStackProps } from '../lib/hush-stack.ts';

/** The context of cdk.json (feature flags), so that the tests see what `cdk synth` makes. */
export const cdkJson = JSON.parse(readFileSync(new URL('../cdk.json', import.meta.url), 'utf8')) as {
  app: string;
  notices: boolean;
  context: Record<string, unknown>;
};

/** A stack synthesized in-process with bundling skipped (no esbuild run, no asset built). */
export function testStack(props: Partial<HushStackProps> = {}): HushStack {
  const app = new App({ context: { ...cdkJson.context, 'aws:cdk:bundling-stacks': [] } });
  return new HushStack(app, `Hush-${props.stage ?? 'test'}`, {
    stage: 'test',
    env: { account: '123456789012', region: 'eu-central-1' },
    ...props,
  });
}
