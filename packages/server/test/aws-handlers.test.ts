/**
 * The Lambda handlers called directly with typed API Gateway events (what API Gateway would send),
 * on DynamoDB Local and s3rver: bad input and unknown routes answer 4xx JSON, $connect refuses bad
 * credentials with 401, client frames are answered as the standalone socket answers them, live
 * delivery keeps FIFO order under concurrent notifies, a gone connection falls back to a wake-up
 * push, a removed device's connection is closed. Plus the S3 attachment store, the sweep, the
 * configuration, and the local @connections API through the real AWS SDK client.
 */
import { randomUUID } from 'node:crypto';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { S3AttachmentStore } from '../src/aws/attachments-s3.ts';
import { loadAwsConfig } from '../src/aws/config.ts';
import { type ConnectionsApi, ManagementApi, type PostResult } from '../src/aws/connections.ts';
import { createHttpHandler } from '../src/aws/http-handler.ts';
import { type AwsRuntime, type DrainEvent, createAwsRuntime } from '../src/aws/runtime.ts';
import { createSweepHandler } from '../src/aws/sweep-handler.ts';
import { type WebSocketEvent, createWsHandler } from '../src/aws/ws-handler.ts';
import { ConfigError } from '../src/standalone/config.ts';
import { TestDevice, api, freshNumber } from './support/harness.ts';
import { type ServerlessTestServer, startServerlessTestServer } from './support/serverless.ts';

/** A @connections API that records what was posted and can pretend connections are gone. */
class FakeConnections implements ConnectionsApi {
  readonly posted = new Map<string, string[]>();
  readonly closed: string[] = [];
  readonly gone = new Set<string>();
  async post(connectionId: string, data: string): Promise<PostResult> {
    if (this.gone.has(connectionId)) return 'gone';
    if (data.length > 128 * 1024) return 'too_large';
    const list = this.posted.get(connectionId) ?? [];
    list.push(data);
    this.posted.set(connectionId, list);
    // Another invocation's post takes a moment: lets concurrent drains interleave if they could.
    await new Promise((resolve) => setTimeout(resolve, 1));
    return 'ok';
  }
  async close(connectionId: string): Promise<boolean> {
    this.closed.push(connectionId);
    return true;
  }
  frames(connectionId: string): any[] {
    return (this.posted.get(connectionId) ?? []).map((text) => JSON.parse(text));
  }
}

function httpEvent(
  method: string,
  path: string,
  options: { body?: string | Buffer; headers?: Record<string, string>; query?: string } = {},
): APIGatewayProxyEventV2 {
  const now = Date.now();
  const body = options.body === undefined ? undefined : Buffer.from(options.body);
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath: path,
    rawQueryString: options.query ?? '',
    headers: { host: 'api.example', ...options.headers },
    requestContext: {
      accountId: '123456789012',
      apiId: 'api',
      domainName: 'api.example',
      domainPrefix: 'api',
      http: { method, path, protocol: 'HTTP/1.1', sourceIp: '192.0.2.1', userAgent: 'test' },
      requestId: randomUUID(),
      routeKey: '$default',
      stage: '$default',
      time: new Date(now).toISOString(),
      timeEpoch: now,
    },
    ...(body ? { body: body.toString('base64'), isBase64Encoded: true } : { isBase64Encoded: false }),
  };
}

function wsEvent(
  routeKey: '$connect' | '$disconnect' | '$default',
  connectionId: string,
  extra: Partial<WebSocketEvent> = {},
): WebSocketEvent {
  const now = Date.now();
  return {
    isBase64Encoded: false,
    ...extra,
    requestContext: {
      routeKey,
      eventType: routeKey === '$connect' ? 'CONNECT' : routeKey === '$disconnect' ? 'DISCONNECT' : 'MESSAGE',
      extendedRequestId: randomUUID(),
      requestTime: new Date(now).toUTCString(),
      requestTimeEpoch: now,
      messageDirection: 'IN',
      stage: 'prod',
      connectedAt: now,
      requestId: randomUUID(),
      domainName: 'ws.example',
      connectionId,
      apiId: 'ws',
      identity: { sourceIp: '192.0.2.1' },
    },
  };
}

const result = (r: unknown) => r as APIGatewayProxyStructuredResultV2;
const json = (r: unknown) => JSON.parse(result(r).body ?? 'null');

describe('AWS handlers', () => {
  let deployment: ServerlessTestServer;
  let runtime: AwsRuntime;
  let fake: FakeConnections;
  const drains: DrainEvent[] = [];
  let http: ReturnType<typeof createHttpHandler>;
  let ws: ReturnType<typeof createWsHandler>;

  beforeAll(async () => {
    deployment = await startServerlessTestServer();
    fake = new FakeConnections();
    // A runtime of its own on the deployment's tables and bucket, with a recording @connections API.
    runtime = createAwsRuntime(deployment.http.config, {
      connectionsApi: fake,
      push: deployment.push,
      logDestination: { write: () => {} },
      invokeDrain: async (event) => {
        drains.push(event);
      },
    });
    http = createHttpHandler(runtime);
    ws = createWsHandler(runtime);
  }, 90_000);
  afterAll(async () => {
    runtime?.close();
    await deployment?.close();
  });

  describe('http-handler', () => {
    it('answers health, the contract, and 404 JSON for an unknown route', async () => {
      expect(json(await http(httpEvent('GET', '/healthz')))).toEqual({ status: 'ok' });
      const openapi = result(await http(httpEvent('GET', '/openapi.json')));
      expect(openapi.statusCode).toBe(200);
      const missing = result(await http(httpEvent('GET', '/v1/nothing-here')));
      expect(missing.statusCode).toBe(404);
      expect(JSON.parse(missing.body ?? '')).toEqual({ error: { code: 'not_found', message: 'no such route' } });
    });

    it('takes a JSON body as API Gateway sends text: not base64-encoded', async () => {
      const event = httpEvent('POST', '/v1/verification/sessions', { headers: { 'content-type': 'application/json' } });
      const answer = result(
        await http({ ...event, body: JSON.stringify({ number: freshNumber() }), isBase64Encoded: false }),
      );
      expect(answer.statusCode).toBe(200);
      expect(JSON.parse(answer.body ?? '')).toMatchObject({ verified: false });
    });

    it('bad input → 4xx JSON, never 5xx', async () => {
      const cases: [APIGatewayProxyEventV2, number][] = [
        [
          httpEvent('POST', '/v1/verification/sessions', {
            body: '{',
            headers: { 'content-type': 'application/json' },
          }),
          400,
        ],
        [
          httpEvent('POST', '/v1/verification/sessions', {
            body: JSON.stringify({ number: 'not a number' }),
            headers: { 'content-type': 'application/json' },
          }),
          400,
        ],
        // A malformed code, then a well-formed code for a session that does not exist.
        [
          httpEvent('POST', `/v1/verification/sessions/${randomUUID()}/code`, {
            body: '{}',
            headers: { 'content-type': 'application/json' },
          }),
          400,
        ],
        [
          httpEvent('POST', `/v1/verification/sessions/${randomUUID()}/code`, {
            body: '{"code":"123456"}',
            headers: { 'content-type': 'application/json' },
          }),
          404,
        ],
        [httpEvent('PUT', '/v1/keys', { body: '{}', headers: { 'content-type': 'application/json' } }), 401],
        [httpEvent('GET', '/v1/messages', { headers: { authorization: 'Basic bm9wZQ==' } }), 401],
        [httpEvent('GET', '/v1/keys/not-a-uuid/1', { headers: { authorization: 'Basic bm9wZQ==' } }), 401],
        [httpEvent('GET', '/v1/provisioning/short'), 400],
      ];
      for (const [event, status] of cases) {
        const answer = result(await http(event));
        expect(answer.statusCode, `${event.requestContext.http.method} ${event.rawPath}`).toBe(status);
        expect(JSON.parse(answer.body ?? '').error.code).toEqual(expect.any(String));
      }
    });

    it('registers, uploads and downloads an attachment (binary through base64 events, stored in S3)', async () => {
      const device = await TestDevice.register(deployment);
      const blob = Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 7) & 0xff));
      const upload = result(
        await http(
          httpEvent('POST', '/v1/attachments', {
            body: blob,
            headers: { authorization: device.authorization, 'content-type': 'application/octet-stream' },
          }),
        ),
      );
      expect(upload.statusCode).toBe(200);
      const { id, size } = JSON.parse(upload.body ?? '');
      expect(size).toBe(blob.length);
      const download = result(
        await http(httpEvent('GET', `/v1/attachments/${id}`, { headers: { authorization: device.authorization } })),
      );
      expect(download.statusCode).toBe(200);
      expect(download.isBase64Encoded).toBe(true);
      expect(Buffer.from(download.body ?? '', 'base64').equals(blob)).toBe(true);
      const empty = result(
        await http(
          httpEvent('POST', '/v1/attachments', {
            body: Buffer.alloc(0),
            headers: { authorization: device.authorization },
          }),
        ),
      );
      expect(empty.statusCode).toBe(400);
    });
  });

  describe('ws-handler', () => {
    it('$connect with missing, malformed, wrong or forged credentials → 401 JSON, nothing recorded', async () => {
      const device = await TestDevice.register(deployment);
      const wrong = `Basic ${Buffer.from(`${device.accountId}.1:wrong-password-wrong-password`).toString('base64')}`;
      const attempts: Partial<WebSocketEvent>[] = [
        {},
        { headers: { Authorization: 'Bearer x' } },
        { headers: { authorization: wrong } },
        { queryStringParameters: { token: 'a.b.c.d.e' } },
        { queryStringParameters: { token: 'garbage' } },
      ];
      for (const extra of attempts) {
        const id = `bad-${randomUUID()}`;
        const answer = result(await ws(wsEvent('$connect', id, extra)));
        expect(answer.statusCode).toBe(401);
        expect(JSON.parse(answer.body ?? '')).toEqual({ error: { code: 'unauthorized', message: 'unauthorized' } });
        expect(await runtime.connections.get(id)).toBeNull();
      }
      expect(drains.filter((d) => d.connectionId.startsWith('bad-'))).toEqual([]);
    });

    it('$connect with a socket token (single use) or Basic credentials records the connection and asks for a drain', async () => {
      const device = await TestDevice.register(deployment);
      const token = (await api(deployment, 'POST', '/v1/websocket/token', { auth: device })).body.token;
      const first = `tok-${randomUUID()}`;
      expect(result(await ws(wsEvent('$connect', first, { queryStringParameters: { token } }))).statusCode).toBe(200);
      expect(drains).toContainEqual({ hush: 'drain', connectionId: first });
      const again = result(await ws(wsEvent('$connect', `tok-${randomUUID()}`, { queryStringParameters: { token } })));
      expect(again.statusCode).toBe(401);
      const basic = `basic-${randomUUID()}`;
      expect(
        result(await ws(wsEvent('$connect', basic, { headers: { Authorization: device.authorization } }))).statusCode,
      ).toBe(200);
      expect(await runtime.connections.byDevice(device.accountId, 1)).toEqual(expect.arrayContaining([first, basic]));
      // The drain event delivers the (empty) backlog: queue-empty.
      await ws({ hush: 'drain', connectionId: basic });
      expect(fake.frames(basic)).toEqual([{ type: 'queue-empty' }]);
      await ws(wsEvent('$disconnect', basic));
      await ws(wsEvent('$disconnect', first));
      expect(await runtime.connections.byDevice(device.accountId, 1)).toEqual([]);
    });

    it('answers client frames as the standalone socket does', async () => {
      const alice = await TestDevice.register(deployment);
      const bob = await TestDevice.register(deployment);
      const id = `frames-${randomUUID()}`;
      await ws(wsEvent('$connect', id, { headers: { authorization: bob.authorization } }));
      const send = (body: string) => ws(wsEvent('$default', id, { body }));
      await send('not json');
      await send(JSON.stringify({ type: 'dance' }));
      await send(JSON.stringify({ type: 'request', id: 1, method: 'GET', path: '/v1/attachments/x' }));
      await send(JSON.stringify({ type: 'request', id: 2, method: 'GET', path: '/v1/../v1/websocket/token' }));
      await send(JSON.stringify({ type: 'request', id: 3, method: 'GET', path: '/v1/keys/count', body: { x: 1 } }));
      await send(JSON.stringify({ type: 'request', id: 4, method: 'GET', path: '/v1/keys/count' }));
      await send(
        JSON.stringify({
          type: 'request',
          id: 5,
          method: 'PUT',
          path: `/v1/messages/${alice.accountId}`,
          body: { messages: 'no' },
        }),
      );
      const frames = fake.frames(id);
      // The first frame found the backlog undelivered (no drain ran yet): it drained first.
      expect(frames[0]).toEqual({ type: 'queue-empty' });
      expect(frames.slice(1)).toEqual([
        { type: 'error', code: 'invalid_frame', message: 'frames are JSON objects' },
        { type: 'error', code: 'invalid_frame', message: 'unknown frame type' },
        {
          type: 'response',
          id: 1,
          status: 404,
          body: { error: { code: 'not_found', message: 'not available over the socket' } },
        },
        {
          type: 'response',
          id: 2,
          status: 404,
          body: { error: { code: 'not_found', message: 'not available over the socket' } },
        },
        {
          type: 'response',
          id: 3,
          status: 400,
          body: { error: { code: 'invalid_request', message: 'not a valid request' } },
        },
        { type: 'response', id: 4, status: 200, body: { preKeys: 5, pqPreKeys: 5 } },
        expect.objectContaining({ type: 'response', id: 5, status: 400 }),
      ]);
      // A frame from a connection that is not recorded: 410, and the connection is closed.
      const stranger = `stranger-${randomUUID()}`;
      expect(result(await ws(wsEvent('$default', stranger, { body: '{"type":"ack","guid":"x"}' }))).statusCode).toBe(
        410,
      );
      expect(fake.closed).toContain(stranger);
    });

    it('a request over the connection of a replaced device closes that connection only, unanswered', async () => {
      const number = freshNumber();
      const old = await TestDevice.register(deployment, { number });
      const id = `replaced-${randomUUID()}`;
      await ws(wsEvent('$connect', id, { headers: { authorization: old.authorization } }));
      await ws({ hush: 'drain', connectionId: id });
      // The number is registered again: the old account and its device are gone.
      await TestDevice.register(deployment, { number });
      await ws(
        wsEvent('$default', id, {
          body: JSON.stringify({ type: 'request', id: 1, method: 'GET', path: '/v1/keys/count' }),
        }),
      );
      expect(fake.closed).toContain(id);
      expect(await runtime.connections.get(id)).toBeNull();
      expect(fake.frames(id).filter((f) => f.type === 'response')).toEqual([]);
    });

    it('delivers in FIFO order, each envelope once, under concurrent notifies; acks delete', async () => {
      const alice = await TestDevice.register(deployment);
      const bob = await TestDevice.register(deployment);
      const id = `fifo-${randomUUID()}`;
      await ws(wsEvent('$connect', id, { headers: { authorization: bob.authorization } }));
      await ws({ hush: 'drain', connectionId: id });
      // 30 sends at once, each notifying through its own "invocation" of the HTTP function.
      const sends = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          http(
            httpEvent('PUT', `/v1/messages/${bob.accountId}`, {
              headers: { authorization: alice.authorization, 'content-type': 'application/json' },
              body: JSON.stringify({
                messages: [
                  {
                    deviceId: 1,
                    registrationId: bob.registrationId,
                    type: 3,
                    content: Buffer.from(`m${i}`).toString('base64'),
                  },
                ],
                timestamp: 1_000 + i,
              }),
            }),
          ),
        ),
      );
      for (const s of sends) expect(result(s).statusCode).toBe(200);
      const envelopes = fake
        .frames(id)
        .filter((f) => f.type === 'envelope')
        .map((f) => f.envelope);
      const queue = (await api(deployment, 'GET', '/v1/messages?limit=100', { auth: bob })).body.messages;
      expect(envelopes.map((e: { guid: string }) => e.guid)).toEqual(queue.map((e: { guid: string }) => e.guid));
      expect(new Set(envelopes.map((e: { guid: string }) => e.guid)).size).toBe(30);
      for (const e of envelopes)
        await ws(wsEvent('$default', id, { body: JSON.stringify({ type: 'ack', guid: e.guid }) }));
      expect((await api(deployment, 'GET', '/v1/messages', { auth: bob })).body.messages).toEqual([]);
      // No wake-up push for a device with a live connection.
      expect(deployment.push.wakesFor(bob.accountId, 1)).toEqual([]);
    });

    it('a connection that is gone is forgotten and the device gets a wake-up push instead', async () => {
      const alice = await TestDevice.register(deployment);
      const bob = await TestDevice.register(deployment);
      const id = `gone-${randomUUID()}`;
      await ws(wsEvent('$connect', id, { headers: { authorization: bob.authorization } }));
      // Older than the grace for a just-opened connection: 410 means gone.
      const { UpdateCommand, DynamoDBDocumentClient } = await import('@aws-sdk/lib-dynamodb');
      const { DynamoDBClient } = await import('@aws-sdk/client-dynamodb');
      const doc = DynamoDBDocumentClient.from(
        new DynamoDBClient({
          endpoint: runtime.config.aws.endpoints.dynamodb ?? '',
          region: 'us-east-1',
          credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
        }),
      );
      await doc.send(
        new UpdateCommand({
          TableName: runtime.connections.table,
          Key: { pk: `C#${id}`, sk: 'C' },
          UpdateExpression: 'SET connectedAt = :old',
          ExpressionAttributeValues: { ':old': Date.now() - 60_000 },
        }),
      );
      doc.destroy();
      fake.gone.add(id);
      expect((await alice.sendText(deployment, bob, new TextEncoder().encode('hi'))).status).toBe(200);
      // The deployment's HTTP function found the row, got 410 from the gateway and dropped it; a
      // notify through this runtime (whose fake says gone too) finds nothing and wakes the device.
      await runtime.delivery.notify(bob.accountId, 1);
      await runtime.work.settle();
      expect(await runtime.connections.get(id)).toBeNull();
      expect(await runtime.connections.byDevice(bob.accountId, 1)).toEqual([]);
      expect(deployment.push.wakesFor(bob.accountId, 1).length).toBeGreaterThanOrEqual(1);
    });

    it('a removed device has its connection closed', async () => {
      const primary = await TestDevice.register(deployment);
      const linked = await TestDevice.link(deployment, primary);
      const id = `removed-${randomUUID()}`;
      await ws(wsEvent('$connect', id, { headers: { authorization: linked.authorization } }));
      const removal = result(
        await http(
          httpEvent('DELETE', `/v1/devices/${linked.deviceId}`, { headers: { authorization: primary.authorization } }),
        ),
      );
      expect(removal.statusCode).toBe(204);
      expect(fake.closed).toContain(id);
      expect(await runtime.connections.get(id)).toBeNull();
    });
  });

  describe('local @connections API through @aws-sdk/client-apigatewaymanagementapi', () => {
    it('posts to an open connection, 410 GoneException otherwise, deletes', async () => {
      const device = await TestDevice.register(deployment);
      const socket = await device.connect(deployment);
      await socket.next((f) => f.type === 'queue-empty');
      const [connectionId] = await deployment.ws.connections.byDevice(device.accountId, 1);
      const management = ManagementApi.create(deployment.gateway.callbackUrl, {
        region: 'us-east-1',
        credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
      });
      try {
        expect(await management.post(connectionId as string, '{"type":"hello"}')).toBe('ok');
        expect(await socket.next((f) => f.type === 'hello')).toEqual({ type: 'hello' });
        expect(await management.post('AAAAAAAAAAAAAAA=', '{}')).toBe('gone');
        expect(await management.post(connectionId as string, 'x'.repeat(130 * 1024))).toBe('too_large');
        expect(await management.close(connectionId as string)).toBe(true);
        await new Promise<void>((resolve) => socket.ws.once('close', () => resolve()));
        expect(await management.close(connectionId as string)).toBe(false);
      } finally {
        management.client.destroy();
      }
    });
  });

  describe('S3 attachment store and the sweep', () => {
    it('refuses an expired blob on read, and the sweep deletes it', async () => {
      const store = runtime.attachments as S3AttachmentStore;
      const now = Date.now();
      const body = (bytes: number) =>
        new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(new Uint8Array(bytes).fill(1));
            controller.close();
          },
        });
      const old = await store.put(randomUUID(), body(10), 100, now - 1);
      const fresh = await store.put(randomUUID(), body(10), 100, now + 60_000);
      await expect(store.put(randomUUID(), body(101), 100, now + 60_000)).rejects.toMatchObject({ status: 413 });
      expect(await store.get(old.id, now)).toBeNull();
      expect(await store.get('../etc', now)).toBeNull();
      const found = await store.get(fresh.id, now);
      expect(found?.meta).toMatchObject({ id: fresh.id, size: 10 });
      expect(new Uint8Array(await new Response(found?.body).arrayBuffer())).toEqual(new Uint8Array(10).fill(1));
      const sweep = createSweepHandler(runtime);
      const swept = await sweep();
      expect(swept.attachments).toBeGreaterThanOrEqual(1);
      expect(await store.get(fresh.id, now)).not.toBeNull();
      // Purge records only (TTL does the rest): no envelope count.
      const purgesOnly = createSweepHandler({ ...runtime, config: { ...runtime.config, sweep: 'purges' } });
      expect((await purgesOnly()).envelopes).toBe(0);
    });

    it('stores a blob larger than one part as a multipart upload', async () => {
      const store = runtime.attachments as S3AttachmentStore;
      const size = 9 * 1024 * 1024;
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent >= size) return controller.close();
          const chunk = new Uint8Array(Math.min(1024 * 1024, size - sent)).fill(sent / (1024 * 1024));
          sent += chunk.byteLength;
          controller.enqueue(chunk);
        },
      });
      const meta = await store.put(randomUUID(), body, 100 * 1024 * 1024, Date.now() + 60_000);
      expect(meta.size).toBe(size);
      const found = await store.get(meta.id, Date.now());
      const bytes = new Uint8Array(await new Response(found?.body).arrayBuffer());
      expect(bytes.length).toBe(size);
      expect(bytes[size - 1]).toBe(8);
    });
  });
});

describe('AWS configuration', () => {
  const valid = {
    HUSH_TABLE_PREFIX: 'hush-prod-',
    HUSH_ATTACHMENTS_BUCKET: 'hush-prod-attachments',
    HUSH_WS_CALLBACK_URL: 'https://abc.execute-api.eu-west-1.amazonaws.com/prod',
    HUSH_SECRET: Buffer.alloc(32, 7).toString('base64'),
  };
  it('reads a complete environment', () => {
    const config = loadAwsConfig(valid);
    expect(config.sms).toEqual({ kind: 'sns', region: 'us-east-1' });
    expect(loadAwsConfig({ ...valid, AWS_REGION: 'eu-west-1' }).sms).toEqual({ kind: 'sns', region: 'eu-west-1' });
    expect(config.secret).toHaveLength(32);
  });
  it('names every missing or bad variable, never echoing the secret', () => {
    const bad = { ...valid, HUSH_SECRET: 'c2hvcnQ=', HUSH_WS_CALLBACK_URL: 'nope', HUSH_TABLE_PREFIX: '' };
    let error: unknown;
    try {
      loadAwsConfig(bad);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as Error).message;
    expect(message).toContain('HUSH_SECRET');
    expect(message).toContain('HUSH_WS_CALLBACK_URL');
    expect(message).toContain('HUSH_TABLE_PREFIX');
    expect(message).not.toContain('c2hvcnQ=');
  });
});
