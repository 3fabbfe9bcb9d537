import { randomBytes, randomUUID } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { APIGatewayProxyEventV2, APIGatewayProxyResultV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { type WebSocket, WebSocketServer } from 'ws';
import type { HttpHandler } from '../http-handler.ts';
import type { DrainEvent } from '../runtime.ts';
import type { WebSocketEvent, WsHandler } from '../ws-handler.ts';

/*
 * Thin local stand-ins for API Gateway, for tests and `npm run start:aws-local`: one loopback port
 * that plays
 *   - the HTTP API: each request becomes an APIGatewayProxyEventV2 (payload 2.0) for http-handler;
 *   - the WebSocket API: an upgrade on /v1/websocket (or /{stage}) calls ws-handler's $connect with
 *     the upgrade's headers and query, and is accepted only on a 200; each text frame is a $default
 *     event, the close a $disconnect;
 *   - its @connections API: POST/GET/DELETE /{stage}/@connections/{id}, 410 with
 *     `x-amzn-errortype: GoneException` for a connection that is not open, so
 *     @aws-sdk/client-apigatewaymanagementapi works against it unchanged;
 *   - Lambda's Invoke API for the function ws-handler invokes asynchronously:
 *     POST /2015-03-31/functions/{name}/invocations.
 * In the cloud the HTTP and WebSocket APIs are two endpoints; one origin in front of both (e.g.
 * CloudFront sending /v1/websocket to the WebSocket API) gives clients the single base URL they
 * expect, which is what this one port does. Limits kept: 128 KB per WebSocket message, 6 MB per
 * Lambda request and response. Signatures are not checked: loopback only.
 */

const MAX_FRAME_BYTES = 128 * 1024;
const MAX_LAMBDA_PAYLOAD = 6 * 1024 * 1024;

export interface LocalGatewayOptions {
  host?: string;
  /** 0 (default) picks a free port. */
  port?: number;
  /** The WebSocket API's stage (the @connections path prefix). */
  stage?: string;
}

export interface LocalGateway {
  /** The base URL clients use (HTTP API, and ws://…/v1/websocket). */
  url: string;
  port: number;
  /** HUSH_WS_CALLBACK_URL for the handlers. */
  callbackUrl: string;
  /** AWS_ENDPOINT_URL_LAMBDA for the handlers. */
  lambdaEndpoint: string;
  attach(handlers: { http: HttpHandler; ws: WsHandler }): void;
  /** Open WebSocket connections (by connectionId). */
  readonly connections: ReadonlyMap<string, WebSocket>;
  close(): Promise<void>;
}

interface Open {
  socket: WebSocket;
  connectedAt: number;
  lastActiveAt: number;
  sourceIp: string;
  userAgent: string;
}

export async function startLocalGateway(options: LocalGatewayOptions = {}): Promise<LocalGateway> {
  const host = options.host ?? '127.0.0.1';
  const stage = options.stage ?? 'local';
  let handlers: { http: HttpHandler; ws: WsHandler } | undefined;
  const open = new Map<string, Open>();
  const background = new Set<Promise<unknown>>();
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_FRAME_BYTES });
  const server: Server = createServer((req, res) => {
    route(req, res).catch((error: unknown) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ message: `local gateway: ${(error as Error).message}` }));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const base = `http://${host}:${port}`;
  const domainName = `${host}:${port}`;

  const run = (work: Promise<unknown>) => {
    background.add(work);
    const done = () => background.delete(work);
    work.then(done, done);
  };
  const required = () => {
    if (!handlers) throw new Error('no handlers attached');
    return handlers;
  };

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', base);
    const management = url.pathname.match(new RegExp(`^/${stage}/@connections/([^/]+)$`));
    if (management) return manage(req, res, decodeURIComponent(management[1] as string));
    const invoke = url.pathname.match(/^\/2015-03-31\/functions\/([^/]+)\/invocations$/);
    if (invoke && req.method === 'POST') return lambdaInvoke(req, res);
    return httpApi(req, res, url);
  }

  async function readBody(req: IncomingMessage, max: number): Promise<Buffer | null> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > max) return null;
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks);
  }

  function headersOf(req: IncomingMessage): Record<string, string> {
    const headers: Record<string, string> = {};
    for (const [key, value] of Object.entries(req.headers)) {
      if (value === undefined || key === 'cookie') continue;
      headers[key] = Array.isArray(value) ? value.join(',') : value;
    }
    return headers;
  }

  function queryOf(url: URL): Record<string, string> | undefined {
    if (!url.search) return undefined;
    const query: Record<string, string> = {};
    for (const [key, value] of url.searchParams) query[key] = key in query ? `${query[key]},${value}` : value;
    return query;
  }

  async function httpApi(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const body = await readBody(req, MAX_LAMBDA_PAYLOAD);
    if (!body) {
      res.writeHead(413, { 'content-type': 'application/json', connection: 'close' });
      res.end(JSON.stringify({ message: 'Request Entity Too Large' }));
      req.resume();
      return;
    }
    const now = Date.now();
    const cookies = req.headers.cookie?.split(';').map((c) => c.trim());
    const query = queryOf(url);
    const event: APIGatewayProxyEventV2 = {
      version: '2.0',
      routeKey: '$default',
      rawPath: url.pathname,
      rawQueryString: url.search.slice(1),
      ...(cookies ? { cookies } : {}),
      headers: headersOf(req),
      ...(query ? { queryStringParameters: query } : {}),
      requestContext: {
        accountId: 'local',
        apiId: 'local',
        domainName,
        domainPrefix: host,
        http: {
          method: req.method ?? 'GET',
          path: url.pathname,
          protocol: `HTTP/${req.httpVersion}`,
          sourceIp: req.socket.remoteAddress ?? '127.0.0.1',
          userAgent: req.headers['user-agent'] ?? '',
        },
        requestId: randomUUID(),
        routeKey: '$default',
        stage: '$default',
        time: new Date(now).toISOString(),
        timeEpoch: now,
      },
      ...(body.length > 0 ? { body: body.toString('base64') } : {}),
      isBase64Encoded: body.length > 0,
    };
    const result = await required().http(event);
    writeResult(res, result);
  }

  function writeResult(res: ServerResponse, result: APIGatewayProxyResultV2): void {
    const structured: APIGatewayProxyStructuredResultV2 =
      typeof result === 'object' && result !== null && 'statusCode' in result
        ? result
        : { statusCode: 200, body: JSON.stringify(result), headers: { 'content-type': 'application/json' } };
    const body = structured.body
      ? Buffer.from(structured.body, structured.isBase64Encoded ? 'base64' : 'utf8')
      : Buffer.alloc(0);
    if (body.length > MAX_LAMBDA_PAYLOAD) {
      res.writeHead(502, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ message: 'Internal Server Error' }));
      return;
    }
    const headers: Record<string, string | string[]> = {};
    for (const [key, value] of Object.entries(structured.headers ?? {})) headers[key] = String(value);
    if (structured.cookies?.length) headers['set-cookie'] = structured.cookies;
    headers['content-length'] = String(body.length);
    res.writeHead(structured.statusCode ?? 200, headers);
    res.end(body);
  }

  function wsEvent(
    routeKey: '$connect' | '$disconnect' | '$default',
    connectionId: string,
    extra: Partial<WebSocketEvent> & { sourceIp?: string; userAgent?: string; connectedAt?: number } = {},
  ): WebSocketEvent {
    const now = Date.now();
    const { sourceIp, userAgent, connectedAt, ...rest } = extra;
    return {
      isBase64Encoded: false,
      ...rest,
      requestContext: {
        routeKey,
        eventType: routeKey === '$connect' ? 'CONNECT' : routeKey === '$disconnect' ? 'DISCONNECT' : 'MESSAGE',
        ...(routeKey === '$default' ? { messageId: randomBytes(8).toString('base64') } : {}),
        extendedRequestId: randomUUID(),
        requestTime: new Date(now).toUTCString(),
        requestTimeEpoch: now,
        messageDirection: 'IN',
        stage,
        connectedAt: connectedAt ?? now,
        requestId: randomUUID(),
        domainName,
        connectionId,
        apiId: 'local',
        identity: { sourceIp: sourceIp ?? '127.0.0.1', userAgent: userAgent ?? '' },
      },
    };
  }

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    upgrade(req, socket, head).catch(() => socket.destroy());
  });

  async function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const url = new URL(req.url ?? '/', base);
    if (url.pathname !== '/v1/websocket' && url.pathname !== `/${stage}`) {
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    // API Gateway's connection ids: 16 characters of base64 (with `=`, sometimes `+` or `/`).
    const connectionId = randomBytes(11).toString('base64').slice(0, 15).concat('=');
    const connectedAt = Date.now();
    const sourceIp = req.socket.remoteAddress ?? '127.0.0.1';
    const userAgent = req.headers['user-agent'] ?? '';
    const query = queryOf(url);
    const result = await required().ws(
      wsEvent('$connect', connectionId, {
        headers: headersOf(req),
        ...(query ? { queryStringParameters: query } : {}),
        sourceIp,
        userAgent,
        connectedAt,
      }),
    );
    const structured = result as APIGatewayProxyStructuredResultV2;
    const status = structured?.statusCode ?? 200;
    if (status < 200 || status > 299) {
      const body = structured.body ?? '';
      socket.end(
        `HTTP/1.1 ${status} ${status === 401 ? 'Unauthorized' : 'Forbidden'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const entry: Open = { socket: ws, connectedAt, lastActiveAt: Date.now(), sourceIp, userAgent };
      open.set(connectionId, entry);
      ws.on('message', (data, isBinary) => {
        entry.lastActiveAt = Date.now();
        const buffer = Buffer.isBuffer(data) ? data : Buffer.concat(Array.isArray(data) ? data : [Buffer.from(data)]);
        run(
          required().ws(
            wsEvent('$default', connectionId, {
              body: isBinary ? buffer.toString('base64') : buffer.toString('utf8'),
              isBase64Encoded: isBinary,
              connectedAt,
            }),
          ),
        );
      });
      ws.on('close', () => {
        open.delete(connectionId);
        run(required().ws(wsEvent('$disconnect', connectionId, { connectedAt })));
      });
      ws.on('error', () => {});
    });
  }

  async function manage(req: IncomingMessage, res: ServerResponse, connectionId: string): Promise<void> {
    const entry = open.get(connectionId);
    const gone = () => {
      res.writeHead(410, { 'content-type': 'application/json', 'x-amzn-errortype': 'GoneException' });
      res.end(JSON.stringify({ message: null }));
    };
    if (req.method === 'POST') {
      const body = await readBody(req, MAX_FRAME_BYTES);
      if (!body) {
        res.writeHead(413, { 'content-type': 'application/json', 'x-amzn-errortype': 'PayloadTooLargeException' });
        res.end(JSON.stringify({ message: 'Message too long' }));
        req.resume();
        return;
      }
      if (!entry || entry.socket.readyState !== entry.socket.OPEN) return gone();
      // API Gateway sends what is posted as a text frame.
      await new Promise<void>((resolve, reject) =>
        entry.socket.send(body.toString('utf8'), (error) => (error ? reject(error) : resolve())),
      ).catch(() => undefined);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
      return;
    }
    req.resume();
    if (!entry) return gone();
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          ConnectedAt: new Date(entry.connectedAt).toISOString(),
          Identity: { SourceIp: entry.sourceIp, UserAgent: entry.userAgent },
          LastActiveAt: new Date(entry.lastActiveAt).toISOString(),
        }),
      );
      return;
    }
    if (req.method === 'DELETE') {
      entry.socket.close(1000, 'Goodbye');
      res.writeHead(204);
      res.end();
      return;
    }
    res.writeHead(405, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ message: 'method not allowed' }));
  }

  async function lambdaInvoke(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req, 256 * 1024);
    const payload = JSON.parse(body?.toString('utf8') || '{}') as DrainEvent;
    if (req.headers['x-amz-invocation-type'] === 'Event') {
      res.writeHead(202, { 'content-type': 'application/json' });
      res.end();
      run(required().ws(payload));
      return;
    }
    const result = await required().ws(payload);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(result));
  }

  return {
    url: base,
    port,
    callbackUrl: `${base}/${stage}`,
    lambdaEndpoint: base,
    get connections() {
      return new Map([...open].map(([id, entry]) => [id, entry.socket]));
    },
    attach(next) {
      handlers = next;
    },
    async close() {
      for (const entry of open.values()) entry.socket.terminate();
      wss.close();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
      while (background.size > 0) await Promise.allSettled([...background]);
    },
  };
}
