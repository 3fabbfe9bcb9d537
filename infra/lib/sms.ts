import { Stack } from 'aws-cdk-lib';
import { Effect, type IGrantable, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';

/**
 * SMS through SNS straight to phone numbers (`Publish` with `PhoneNumber`), no topic. SNS has no
 * resource ARN for a phone number, so the allow is on `*` and a deny on every topic ARN keeps the
 * grant to SMS only.
 */
export class Sms extends Construct {
  grantPublishToPhoneNumbers(grantee: IGrantable): void {
    const partition = Stack.of(this).partition;
    grantee.grantPrincipal.addToPrincipalPolicy(
      new PolicyStatement({
        sid: 'SmsToPhoneNumbers',
        effect: Effect.ALLOW,
        actions: ['sns:Publish'],
        resources: ['*'],
      }),
    );
    grantee.grantPrincipal.addToPrincipalPolicy(
      new PolicyStatement({
        sid: 'NoPublishToTopics',
        effect: Effect.DENY,
        actions: ['sns:Publish'],
        resources: [`arn:${partition}:sns:*:*:*`],
      }),
    );
  }
}
