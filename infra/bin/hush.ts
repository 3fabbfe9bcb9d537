#!/usr/bin/env node
/*
 * The CDK app. Context (`-c key=value`):
 *   stage       deployment stage, default `dev`; the stack is `Hush-<stage>`
 *   retainData  `false` lets a throwaway stage delete its tables, bucket and secret with the stack
 *               (default true)
 *   logLevel    HUSH_LOG_LEVEL of the handlers, default `info`
 * Account and region come from the AWS credentials in use (CDK_DEFAULT_ACCOUNT / CDK_DEFAULT_REGION).
 */
import { App } from 'aws-cdk-lib';
import { HushStack, LOG_LEVELS, type LogLevel } from '../lib/hush-stack.ts';

const app = new App();
const stage = String(app.node.tryGetContext('stage') ?? 'dev');
const retainData = String(app.node.tryGetContext('retainData') ?? 'true') !== 'false';
const logLevel = String(app.node.tryGetContext('logLevel') ?? 'info');
if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
  throw new Error(`logLevel must be one of ${LOG_LEVELS.join(', ')}: ${logLevel}`);
}

new HushStack(app, `Hush-${stage}`, {
  stage,
  retainData,
  logLevel: logLevel as LogLevel,
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
  description: `Hush end-to-end encrypted messenger, serverless (${stage})`,
});
app.synth();
