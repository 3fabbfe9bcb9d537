import { HttpApi, HttpStage, PayloadFormatVersion, type ThrottleSettings } from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { Construct } from 'constructs';

export interface ApiProps {
  name: string;
  handler: IFunction;
  throttle: ThrottleSettings;
}

/**
 * The HTTP API: one `$default` route proxies every request (payload format 2.0) to the HTTP function,
 * where the Hono app routes it; one auto-deployed `$default` stage with throttling defaults.
 */
export class Api extends Construct {
  readonly httpApi: HttpApi;
  readonly stage: HttpStage;

  constructor(scope: Construct, id: string, props: ApiProps) {
    super(scope, id);
    this.httpApi = new HttpApi(this, 'HttpApi', {
      apiName: props.name,
      description: 'Hush HTTP API',
      createDefaultStage: false,
      defaultIntegration: new HttpLambdaIntegration('Handler', props.handler, {
        payloadFormatVersion: PayloadFormatVersion.VERSION_2_0,
      }),
    });
    this.stage = new HttpStage(this, 'Stage', {
      httpApi: this.httpApi,
      stageName: '$default',
      autoDeploy: true,
      throttle: props.throttle,
    });
  }

  /** https://{apiId}.execute-api.{region}.amazonaws.com/ */
  get url(): string {
    return this.stage.url;
  }
}
