import { Duration } from 'aws-cdk-lib';
import { Rule, Schedule } from 'aws-cdk-lib/aws-events';
import { LambdaFunction } from 'aws-cdk-lib/aws-events-targets';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { Construct } from 'constructs';

export interface SweepProps {
  handler: IFunction;
  every?: Duration;
}

/** Runs the sweep function on a schedule (EventBridge rule; hourly by default). */
export class Sweep extends Construct {
  readonly rule: Rule;

  constructor(scope: Construct, id: string, props: SweepProps) {
    super(scope, id);
    this.rule = new Rule(this, 'Schedule', {
      description: 'Hush sweep: expired records and attachments',
      schedule: Schedule.rate(props.every ?? Duration.hours(1)),
      targets: [new LambdaFunction(props.handler, { retryAttempts: 2, maxEventAge: Duration.hours(1) })],
    });
  }
}
