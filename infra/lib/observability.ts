import { Duration } from 'aws-cdk-lib';
import type { HttpApi } from 'aws-cdk-lib/aws-apigatewayv2';
import { Alarm, ComparisonOperator, MathExpression, TreatMissingData } from 'aws-cdk-lib/aws-cloudwatch';
import type { TableV2 } from 'aws-cdk-lib/aws-dynamodb';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { Construct } from 'constructs';

export interface ObservabilityProps {
  functions: Record<string, IFunction>;
  tables: Record<string, TableV2>;
  httpApi: HttpApi;
}

const PERIOD = Duration.minutes(5);

/**
 * CloudWatch alarms (no actions yet: wire them to an SNS topic or a pager when there is one):
 * Lambda errors and throttles per function, DynamoDB read/write throttle events per table, 5xx
 * answers of the HTTP API. Log retention is set on each function's log group (see Functions).
 */
export class Observability extends Construct {
  readonly alarms: Alarm[] = [];

  constructor(scope: Construct, id: string, props: ObservabilityProps) {
    super(scope, id);
    const alarm = (alarmId: string, description: string, metric: Alarm['metric']) =>
      this.alarms.push(
        new Alarm(this, alarmId, {
          alarmDescription: description,
          metric,
          threshold: 1,
          evaluationPeriods: 1,
          comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          treatMissingData: TreatMissingData.NOT_BREACHING,
        }),
      );
    for (const [name, fn] of Object.entries(props.functions)) {
      alarm(
        `${name}Errors`,
        `Lambda ${name}: invocation errors`,
        fn.metricErrors({ period: PERIOD, statistic: 'Sum' }),
      );
      alarm(
        `${name}Throttles`,
        `Lambda ${name}: throttled invocations`,
        fn.metricThrottles({ period: PERIOD, statistic: 'Sum' }),
      );
    }
    for (const [name, table] of Object.entries(props.tables)) {
      alarm(
        `${name}TableThrottles`,
        `DynamoDB ${name}: throttled reads or writes`,
        new MathExpression({
          label: `${name} throttle events`,
          expression: 'reads + writes',
          usingMetrics: {
            reads: table.metric('ReadThrottleEvents', { period: PERIOD, statistic: 'Sum' }),
            writes: table.metric('WriteThrottleEvents', { period: PERIOD, statistic: 'Sum' }),
          },
          period: PERIOD,
        }),
      );
    }
    alarm('HttpApi5xx', 'HTTP API: 5xx answers', props.httpApi.metricServerError({ period: PERIOD, statistic: 'Sum' }));
  }
}
