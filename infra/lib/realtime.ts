import { type ThrottleSettings, WebSocketApi, WebSocketStage } from 'aws-cdk-lib/aws-apigatewayv2';
import { WebSocketLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import type { IGrantable } from 'aws-cdk-lib/aws-iam';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { Construct } from 'constructs';

export interface RealtimeProps {
  name: string;
  stageName: string;
  throttle: ThrottleSettings;
}

/** The WebSocket routes, all handled by one function. */
export const WEBSOCKET_ROUTES = ['$connect', '$disconnect', '$default'] as const;

/**
 * The WebSocket API for live delivery. Made before the functions (they need its callback URL); the
 * routes are attached with `route(fn)` once the function exists.
 */
export class Realtime extends Construct {
  readonly webSocketApi: WebSocketApi;
  readonly stage: WebSocketStage;

  constructor(scope: Construct, id: string, props: RealtimeProps) {
    super(scope, id);
    this.webSocketApi = new WebSocketApi(this, 'WebSocketApi', {
      apiName: props.name,
      description: 'Hush live delivery',
      routeSelectionExpression: '$request.body.action',
    });
    this.stage = new WebSocketStage(this, 'Stage', {
      webSocketApi: this.webSocketApi,
      stageName: props.stageName,
      autoDeploy: true,
      throttle: props.throttle,
    });
  }

  /** Routes `$connect`, `$disconnect` and `$default` to `handler` (Lambda proxy integrations). */
  route(handler: IFunction): void {
    for (const route of WEBSOCKET_ROUTES) {
      const id = route === '$connect' ? 'Connect' : route === '$disconnect' ? 'Disconnect' : 'Fallback';
      this.webSocketApi.addRoute(route, { integration: new WebSocketLambdaIntegration(id, handler) });
    }
  }

  /** execute-api:ManageConnections (post to, read, delete connections) on this API. */
  grantManageConnections(grantee: IGrantable): void {
    this.webSocketApi.grantManageConnections(grantee);
  }

  /** wss://{apiId}.execute-api.{region}.amazonaws.com/{stage}: where clients connect. */
  get url(): string {
    return this.stage.url;
  }

  /** https://{apiId}.execute-api.{region}.amazonaws.com/{stage}: the @connections endpoint. */
  get callbackUrl(): string {
    return this.stage.callbackUrl;
  }
}
