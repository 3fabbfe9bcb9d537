import type {
  APIGatewayEventWebsocketRequestContextV2,
  APIGatewayProxyResultV2,
  APIGatewayProxyWebsocketEventV2,
  Context,
} from 'aws-lambda';
import { sameHash } from '../core/credentials.ts';
import type { Device } from '../core/ports.ts';
import { parseBasicAuthorization } from '../http/basic-auth.ts';
import { loadAwsConfig } from './config.ts';
import type { ConnectionRecord } from './connections.ts';
import { type AwsRuntime, type DrainEvent, type RuntimeOptions, createAwsRuntime } from './runtime.ts';

/*
 * Live delivery on the API Gateway WebSocket API: routes $connect, $disconnect, $default, and the
 * asynchronous `{hush: "drain"}` invocation this function sends itself. Clients see the standalone
 * socket's protocol (src/ws/socket-server.ts), frame for frame:
 *
 *   $connect     authenticates like the standalone upgrade (Authorization: Basic, or ?token= a
 *                single-use socket token), records the connection (aws/connections.ts), and
 *                invokes this function asynchronously to deliver the backlog: API Gateway refuses
 *                posts to a connection until $connect has answered, so $connect itself cannot.
 *                The drain retries a young connection's 410s until the connection is open.
 *   $default     client frames: {type:"ack", guid} deletes the envelope (and drains on when a
 *                drain stopped at its window); {type:"request", id, method, path, body} is served
 *                by the same Hono app as the HTTP API, as the connection's device, and answered
 *                with a {type:"response", id, status, body[, retryAfter]} frame.
 *   $disconnect  forgets the connection.
 *
 * API Gateway limits a frame to 128 KB: larger envelopes stay queued for GET /v1/messages (logged),
 * larger requests must go over HTTP.
 */

/** @types/aws-lambda's WebSocket event lacks the headers and the caller's identity that $connect gets. */
export interface WebSocketEvent
  extends Omit<APIGatewayProxyWebsocketEventV2, 'requestContext' | 'queryStringParameters'> {
  headers?: Record<string, string | undefined>;
  multiValueHeaders?: Record<string, string[] | undefined>;
  queryStringParameters?: Record<string, string | undefined> | null;
  /** $connect and $disconnect events carry no messageId. */
  requestContext: Omit<APIGatewayEventWebsocketRequestContextV2, 'messageId'> & {
    messageId?: string;
    identity?: { sourceIp?: string; userAgent?: string };
  };
}

export type WsHandler = (event: WebSocketEvent | DrainEvent, context?: Context) => Promise<APIGatewayProxyResultV2>;

/** Paths a socket request may call: the device's own API, minus the socket and blob streams. */
const SOCKET_REQUEST_PATH = /^\/v1\/(keys|messages|devices)(\/|$|\?)/;

const ok = { statusCode: 200 } as const;
const errorBody = (code: string, message: string) => JSON.stringify({ error: { code, message } });

function header(event: WebSocketEvent, name: string): string | undefined {
  for (const [key, value] of Object.entries(event.headers ?? {})) if (key.toLowerCase() === name) return value;
  for (const [key, values] of Object.entries(event.multiValueHeaders ?? {})) {
    if (key.toLowerCase() === name) return values?.[0];
  }
  return undefined;
}

export function createWsHandler(runtime: AwsRuntime): WsHandler {
  const { core, connections, delivery, logger, socketTokens } = runtime;

  async function authenticate(event: WebSocketEvent): Promise<Device | null> {
    const token = event.queryStringParameters?.token;
    if (token) return socketTokens.redeem(token);
    const credentials = parseBasicAuthorization(header(event, 'authorization'));
    if (!credentials) return null;
    try {
      return await core.accounts.authenticate(credentials.accountId, credentials.deviceId, credentials.password);
    } catch {
      return null;
    }
  }

  async function onConnect(event: WebSocketEvent): Promise<APIGatewayProxyResultV2> {
    const device = await authenticate(event);
    if (!device) {
      return {
        statusCode: 401,
        headers: { 'content-type': 'application/json' },
        body: errorBody('unauthorized', 'unauthorized'),
      };
    }
    const { connectionId } = event.requestContext;
    await connections.add(connectionId, device, core.clock.now());
    try {
      await runtime.invokeDrain({ hush: 'drain', connectionId });
    } catch (error) {
      // The backlog then goes out with the drain of the first frame or the next envelope.
      logger.error({ err: { message: (error as Error).message } }, 'invoking the connect drain failed');
    }
    return ok;
  }

  /** The connection's device as it is now; null (and the connection closed) when it was removed or replaced. */
  async function currentDevice(record: ConnectionRecord): Promise<Device | null> {
    const device = await core.storage.getDevice(record.accountId, record.deviceId);
    if (device && sameHash(device.passwordHash, record.passwordHash)) return device;
    // Only this connection: another device may hold the id now (linked after a removal).
    await delivery.closeConnection(record.connectionId);
    await connections.remove(record.connectionId, record);
    return null;
  }

  async function onRequest(record: ConnectionRecord, id: unknown, method: string, path: string, body: unknown) {
    const answer = (status: number, code: string, message: string) =>
      delivery.post(record, JSON.stringify({ type: 'response', id, status, body: { error: { code, message } } }));
    let request: Request;
    try {
      const url = new URL(path, 'http://socket.invalid');
      if (url.origin !== 'http://socket.invalid' || !SOCKET_REQUEST_PATH.test(url.pathname)) {
        return answer(404, 'not_found', 'not available over the socket');
      }
      request = new Request(url, {
        method: method.toUpperCase(),
        ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
      });
    } catch {
      return answer(400, 'invalid_request', 'not a valid request');
    }
    const device = await currentDevice(record);
    if (!device) return;
    const response = await runtime.app.fetch(request, { device });
    const text = await response.text();
    const retryAfter = response.status === 429 ? response.headers.get('retry-after') : null;
    let parsed: unknown = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = text;
    }
    return delivery.post(
      record,
      JSON.stringify({
        type: 'response',
        id,
        status: response.status,
        body: parsed,
        ...(retryAfter && /^\d+$/.test(retryAfter) ? { retryAfter: Number(retryAfter) } : {}),
      }),
    );
  }

  async function onMessage(event: WebSocketEvent): Promise<APIGatewayProxyResultV2> {
    const record = await connections.get(event.requestContext.connectionId);
    if (!record) {
      // Not (or no longer) a known connection, e.g. its device was removed.
      await delivery.closeConnection(event.requestContext.connectionId).catch(() => {});
      return { statusCode: 410, body: errorBody('gone', 'no such connection') };
    }
    const now = core.clock.now();
    const drainerAlive = record.lease !== undefined && (record.leaseUntil ?? 0) >= now;
    // The connect drain never ran (its invocation failed): the first frame delivers the backlog.
    let drained = false;
    if (!record.backlogDone && !drainerAlive) {
      await delivery.drain(record.connectionId);
      drained = true;
    }
    const raw = event.isBase64Encoded ? Buffer.from(event.body ?? '', 'base64').toString('utf8') : (event.body ?? '');
    let frame: { type?: unknown; guid?: unknown; id?: unknown; method?: unknown; path?: unknown; body?: unknown };
    try {
      frame = JSON.parse(raw);
    } catch {
      await delivery.post(
        record,
        JSON.stringify({ type: 'error', code: 'invalid_frame', message: 'frames are JSON objects' }),
      );
      return ok;
    }
    if (frame?.type === 'ack' && typeof frame.guid === 'string') {
      await core.storage.deleteEnvelope(record.accountId, record.deviceId, frame.guid);
      // The window reopens: a drain stopped at it.
      if (record.more && !drained) await delivery.drain(record.connectionId);
      return ok;
    }
    if (frame?.type === 'request' && typeof frame.path === 'string' && typeof frame.method === 'string') {
      await onRequest(record, frame.id, frame.method, frame.path, frame.body);
      return ok;
    }
    await delivery.post(
      record,
      JSON.stringify({ type: 'error', code: 'invalid_frame', message: 'unknown frame type' }),
    );
    return ok;
  }

  return async (event) => {
    try {
      if ('hush' in event) {
        if (event.hush === 'drain' && typeof event.connectionId === 'string') await delivery.drain(event.connectionId);
        return ok;
      }
      switch (event.requestContext?.routeKey) {
        case '$connect':
          return await onConnect(event);
        case '$disconnect':
          await connections.remove(event.requestContext.connectionId);
          return ok;
        default:
          return await onMessage(event);
      }
    } catch (error) {
      logger.error({ err: { message: (error as Error).message } }, 'websocket event failed');
      if (!('hush' in event) && event.requestContext?.routeKey === '$default') {
        const record = await connections.get(event.requestContext.connectionId).catch(() => null);
        if (record) {
          await delivery
            .post(record, JSON.stringify({ type: 'error', code: 'internal_error', message: 'internal error' }))
            .catch(() => {});
        }
      }
      return { statusCode: 500, body: errorBody('internal_error', 'internal error') };
    } finally {
      await runtime.work.settle();
    }
  };
}

let cached: { runtime: AwsRuntime; handler: WsHandler } | undefined;

/** The runtime of this execution environment (made at the first call). */
export function wsRuntime(options: RuntimeOptions = {}): { runtime: AwsRuntime; handler: WsHandler } {
  if (!cached) {
    const runtime = createAwsRuntime(loadAwsConfig(), options);
    cached = { runtime, handler: createWsHandler(runtime) };
  }
  return cached;
}

export const handler = (event: WebSocketEvent | DrainEvent, context: Context): Promise<APIGatewayProxyResultV2> =>
  wsRuntime().handler(event, context);
