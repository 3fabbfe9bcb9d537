import type { APIGatewayProxyEventV2, APIGatewayProxyResultV2, Context } from 'aws-lambda';
import { handle } from 'hono/aws-lambda';
import { loadAwsConfig } from './config.ts';
import { type AwsRuntime, type RuntimeOptions, createAwsRuntime } from './runtime.ts';

/*
 * The HTTP API on Lambda (API Gateway HTTP API, payload format 2.0): the standalone server's Hono
 * app, unchanged, behind Hono's AWS Lambda adapter. Config from the environment (aws/config.ts);
 * the wiring is made at the first invocation and kept for the life of the execution environment.
 *
 * Bodies: API Gateway and Lambda cap request and response at 6 MB; attachments (POST/GET
 * /v1/attachments) stream through this function, so on AWS they are limited to ~4.5 MB of binary
 * (base64 in the event) until the client speaks presigned S3 URLs.
 */

export type HttpHandler = (event: APIGatewayProxyEventV2, context?: Context) => Promise<APIGatewayProxyResultV2>;

/** The handler over a given runtime (tests and the local gateway make their own). */
export function createHttpHandler(runtime: AwsRuntime): HttpHandler {
  const adapter = handle(runtime.app as never);
  return async (event, context) => {
    try {
      return (await adapter(event as never, context as never)) as APIGatewayProxyResultV2;
    } finally {
      // Notifications and wake-ups started by this request run to the end before the answer: the
      // execution environment is frozen once the handler returns.
      await runtime.work.settle();
    }
  };
}

let cached: { runtime: AwsRuntime; handler: HttpHandler } | undefined;

/** The runtime of this execution environment (made at the first call). */
export function httpRuntime(options: RuntimeOptions = {}): { runtime: AwsRuntime; handler: HttpHandler } {
  if (!cached) {
    const runtime = createAwsRuntime(loadAwsConfig(), options);
    cached = { runtime, handler: createHttpHandler(runtime) };
  }
  return cached;
}

export const handler = (event: APIGatewayProxyEventV2, context: Context): Promise<APIGatewayProxyResultV2> =>
  httpRuntime().handler(event, context);
