import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { type RawData, type WebSocket, WebSocketServer } from 'ws';
import type { Core } from '../core/index.ts';
import type { DeliveryNotifier, Device } from '../core/ports.ts';
import type { SocketTokens } from '../core/socket-tokens.ts';
import { type App, envelopeJson } from '../http/app.ts';
import { parseBasicAuthorization } from '../http/basic-auth.ts';

/*
 * Live delivery over WebSocket (step 7), standalone: one connection per device session.
 *
 * Frames are JSON text. Server → client: {type:"envelope", envelope}, {type:"queue-empty"} once the
 * backlog at connect time is delivered, {type:"response", id, status, body} answering a request
 * (with retryAfter, in seconds, on a 429: the Retry-After header the HTTP answer would carry),
 * {type:"error", code, message}. Client → server: {type:"ack", guid} after the client stored the
 * decrypted message (the server deletes it then), and {type:"request", id, method, path, body} to
 * call the HTTP API over the socket as the socket's device (e.g. sends, so a busy client needs no
 * HTTP round trip per message).
 *
 * Close codes: 1001 when the server shuts down (reconnect), 4403 (DEVICE_REMOVED_CLOSE_CODE) when
 * the device was removed from its account (do not reconnect: its credentials no longer work).
 */

/** The close code of the sockets of a device that was removed (DELETE /v1/devices/{deviceId}). */
export const DEVICE_REMOVED_CLOSE_CODE = 4403;

/** Unacknowledged envelopes in flight per connection; delivery pauses there until acks arrive. */
const MAX_IN_FLIGHT = 256;
/** Request frames of one socket being served at once; reading pauses at this many. */
const MAX_ACTIVE_REQUESTS = 32;
const PING_INTERVAL_MS = 30_000;
/** Paths a socket request may call: the device's own API, minus the socket and blob streams. */
const SOCKET_REQUEST_PATH = /^\/v1\/(keys|messages|devices)(\/|$|\?)/;

export interface SocketMetrics {
  socketOpened(): void;
  socketClosed(): void;
  envelopesDelivered(count: number): void;
}

class Connection {
  private inFlight = new Set<string>();
  private cursor: string | undefined;
  private draining = false;
  private dirty = false;
  private backlogDone = false;
  private activeRequests = 0;
  /** The device was removed: the socket closes once the requests being served are answered. */
  private removed = false;
  alive = true;

  constructor(
    readonly device: Device,
    readonly socket: WebSocket,
    private readonly server: SocketServer,
  ) {}

  /** Sends everything queued after what this connection already sent; re-runs if notified meanwhile. */
  async drain(): Promise<void> {
    if (this.draining) {
      this.dirty = true;
      return;
    }
    this.draining = true;
    try {
      // The queue was read to its end (a short page), not just up to the in-flight window.
      let reachedEnd = false;
      do {
        this.dirty = false;
        reachedEnd = false;
        while (this.inFlight.size < MAX_IN_FLIGHT && this.socket.readyState === this.socket.OPEN && !this.removed) {
          const room = MAX_IN_FLIGHT - this.inFlight.size;
          const page = await this.server.core.storage.fetchQueue(
            this.device.accountId,
            this.device.deviceId,
            Math.min(room, 100),
            this.server.core.clock.now(),
            this.cursor,
          );
          for (const envelope of page) {
            this.inFlight.add(envelope.guid);
            this.cursor = envelope.cursor;
            this.send({ type: 'envelope', envelope: envelopeJson(envelope) });
          }
          if (page.length < Math.min(room, 100)) {
            reachedEnd = true;
            break;
          }
        }
      } while (this.dirty && !this.removed);
      // queue-empty means the backlog at connect time was delivered; with a full window it was not
      // yet (the acks that open the window run drain again).
      if (!this.backlogDone && reachedEnd) {
        this.backlogDone = true;
        this.send({ type: 'queue-empty' });
      }
    } finally {
      this.draining = false;
    }
  }

  send(frame: unknown): void {
    this.sendText(JSON.stringify(frame));
  }

  /**
   * Closes the socket of a removed device with 4403, at once, or, while requests of the socket are
   * being served, once they are answered: a device that removes itself over its own socket gets
   * its 204 before the close. Nothing more is delivered meanwhile.
   */
  closeRemoved(): void {
    this.removed = true;
    if (this.activeRequests > 0) return;
    if (this.socket.readyState === this.socket.OPEN || this.socket.readyState === this.socket.CONNECTING) {
      this.socket.close(DEVICE_REMOVED_CLOSE_CODE, 'device removed');
    }
  }

  /** Frames sent in one turn of the event loop leave in one write (see SocketServer.cork). */
  sendText(text: string): void {
    if (this.socket.readyState !== this.socket.OPEN) return;
    this.server.cork(this.socket);
    this.socket.send(text);
  }

  async onFrame(data: RawData): Promise<void> {
    let frame: { type?: unknown; guid?: unknown; id?: unknown; method?: unknown; path?: unknown; body?: unknown };
    try {
      frame = JSON.parse(data.toString());
    } catch {
      return this.send({ type: 'error', code: 'invalid_frame', message: 'frames are JSON objects' });
    }
    if (frame?.type === 'ack' && typeof frame.guid === 'string') {
      const guid = frame.guid;
      const deleted = await this.server.core.storage.deleteEnvelope(this.device.accountId, this.device.deviceId, guid);
      if (deleted) this.server.metrics?.envelopesDelivered(1);
      const wasInFlight = this.inFlight.delete(guid);
      if (wasInFlight && this.inFlight.size === MAX_IN_FLIGHT - 1) await this.drain();
      return;
    }
    if (frame?.type === 'request' && typeof frame.path === 'string' && typeof frame.method === 'string') {
      // Backpressure: with MAX_ACTIVE_REQUESTS unanswered, the socket reads nothing more until one
      // is answered, so a client sending faster than the server stores is slowed down by TCP
      // instead of piling up requests (and memory) in the server.
      if (++this.activeRequests === MAX_ACTIVE_REQUESTS) this.socket.pause();
      try {
        return await this.onRequest(frame.id, frame.method, frame.path, frame.body);
      } finally {
        if (this.activeRequests-- === MAX_ACTIVE_REQUESTS) this.socket.resume();
        if (this.removed && this.activeRequests === 0) this.closeRemoved();
      }
    }
    this.send({ type: 'error', code: 'invalid_frame', message: 'unknown frame type' });
  }

  private async onRequest(id: unknown, method: string, path: string, body: unknown): Promise<void> {
    const answer = (status: number, code: string, message: string) =>
      this.send({ type: 'response', id, status, body: { error: { code, message } } });
    let request: Request;
    try {
      // Checked after URL parsing, which resolves `..` and `%2e%2e` segments (and `\` as `/`).
      const url = new URL(path, 'http://socket.invalid');
      if (url.origin !== 'http://socket.invalid' || !SOCKET_REQUEST_PATH.test(url.pathname)) {
        return answer(404, 'not_found', 'not available over the socket');
      }
      request = socketRequest(url, method.toUpperCase(), body);
    } catch {
      // An unparsable path, an invalid method, or a body on GET.
      return answer(400, 'invalid_request', 'not a valid request');
    }
    const response = await this.server.app.fetch(request, { device: this.device });
    const text = bodyText(response) ?? (await response.text());
    // A frame has no headers: a 429's Retry-After travels as `retryAfter` (seconds) in the frame.
    const retryAfter = response.status === 429 ? response.headers.get('retry-after') : null;
    const retryField = retryAfter && /^\d+$/.test(retryAfter) ? `,"retryAfter":${retryAfter}` : '';
    if (text && response.headers.get('content-type')?.startsWith('application/json')) {
      // The app's JSON goes into the frame as it is, not parsed and serialized once more.
      const idField = id === undefined ? '' : `"id":${JSON.stringify(id)},`;
      return this.sendText(`{"type":"response",${idField}"status":${response.status},"body":${text}${retryField}}`);
    }
    this.send({
      type: 'response',
      id,
      status: response.status,
      body: text ? JSON.parse(text) : null,
      ...(retryField ? { retryAfter: Number(retryAfter) } : {}),
    });
  }
}

/** An HTTP method token (RFC 9110), as `new Request` accepts it. */
const METHOD_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * The Request a request frame stands for. The frame's body is already parsed: the app gets it back
 * from `json()` as it is, instead of as a string serialized into a body stream and parsed again,
 * which cost more than all the rest of a send. Whatever else the app might ask of the request (the
 * body stream, a signal, clone()) comes from a real Request, made on first use. `body` reads null,
 * so the body-limit middleware has nothing to count: the socket's maxPayload (512 KiB, the HTTP
 * JSON body limit too) already bounds the frame and so the body. Throws as `new Request` would for
 * an invalid method or a body on GET or HEAD.
 */
function socketRequest(url: URL, method: string, body: unknown): Request {
  if (body === undefined) return new Request(url, { method });
  if (!METHOD_TOKEN.test(method) || method === 'GET' || method === 'HEAD') {
    throw new TypeError('not a valid request');
  }
  let real: Request | undefined;
  const fields: Record<PropertyKey, unknown> = {
    url: url.href,
    method,
    headers: new Headers({ 'content-type': 'application/json' }),
    body: null,
    json: () => Promise.resolve(body),
    text: () => Promise.resolve(JSON.stringify(body)),
  };
  return new Proxy(fields, {
    get(target, key) {
      if (key in target) return target[key];
      real ??= new Request(url, {
        method,
        body: JSON.stringify(body),
        headers: { 'content-type': 'application/json' },
      });
      const value = Reflect.get(real, key, real);
      return typeof value === 'function' ? value.bind(real) : value;
    },
  }) as unknown as Request;
}

/**
 * The body of a response the app made with `c.json()`, read without `response.text()`. Under
 * @hono/node-server, Response is a lightweight class that keeps [status, body, headers] until
 * something asks for the real Response, and text() makes one, with a body stream to read back
 * (a quarter of the cost of a send over the socket). Its key is a private symbol named "cache";
 * when that is not there (another Response class) this returns undefined and the caller reads
 * text() as usual.
 */
function bodyText(response: Response): string | undefined {
  for (const key of Object.getOwnPropertySymbols(response)) {
    if (key.description !== 'cache') continue;
    const cache = (response as unknown as Record<symbol, unknown>)[key];
    const body = Array.isArray(cache) ? cache[1] : undefined;
    return typeof body === 'string' ? body : undefined;
  }
  return undefined;
}

/** Accepts authenticated sockets on GET /v1/websocket and delivers queues live. */
export class SocketServer implements DeliveryNotifier {
  private readonly wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 512 * 1024 });
  private readonly byDevice = new Map<string, Set<Connection>>();
  private readonly pinger: NodeJS.Timeout;
  private readonly corked = new Set<Duplex>();
  app!: App;

  constructor(
    readonly core: Core,
    private readonly socketTokens: SocketTokens,
    private readonly logger: Logger,
    readonly metrics?: SocketMetrics,
  ) {
    this.pinger = setInterval(() => this.ping(), PING_INTERVAL_MS);
    this.pinger.unref();
  }

  /** Wires the server to an HTTP server's upgrade event and to the app that serves socket requests. */
  attach(server: Server, app: App): void {
    this.app = app;
    server.on('upgrade', (request, socket, head) => {
      this.upgrade(request, socket, head).catch((error: unknown) => {
        this.logger.error({ err: { message: (error as Error).message } }, 'websocket upgrade failed');
        socket.destroy();
      });
    });
  }

  private async authenticate(request: IncomingMessage, url: URL): Promise<Device | null> {
    const token = url.searchParams.get('token');
    if (token) return this.socketTokens.redeem(token);
    const credentials = parseBasicAuthorization(request.headers.authorization);
    if (!credentials) return null;
    try {
      return await this.core.accounts.authenticate(credentials.accountId, credentials.deviceId, credentials.password);
    } catch {
      return null;
    }
  }

  private async upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://localhost');
    if (url.pathname !== '/v1/websocket') return reject(socket, 404, 'not_found');
    const device = await this.authenticate(request, url);
    if (!device) return reject(socket, 401, 'unauthorized');
    this.wss.handleUpgrade(request, socket, head, (ws) => this.accept(device, ws));
  }

  private accept(device: Device, ws: WebSocket): void {
    const connection = new Connection(device, ws, this);
    const key = `${device.accountId}.${device.deviceId}`;
    const set = this.byDevice.get(key) ?? new Set<Connection>();
    this.byDevice.set(key, set);
    set.add(connection);
    this.metrics?.socketOpened();
    ws.on('pong', () => {
      connection.alive = true;
    });
    ws.on('message', (data) => {
      connection.onFrame(data).catch((error: unknown) => {
        this.logger.error({ err: { message: (error as Error).message } }, 'websocket frame failed');
        connection.send({ type: 'error', code: 'internal_error', message: 'internal error' });
      });
    });
    ws.on('close', () => {
      set.delete(connection);
      if (set.size === 0) this.byDevice.delete(key);
      this.metrics?.socketClosed();
    });
    connection.drain().catch((error: unknown) => {
      this.logger.error({ err: { message: (error as Error).message } }, 'websocket drain failed');
    });
  }

  /**
   * Holds the socket's writes until the end of this turn of the event loop, so that the frames of
   * one turn (under load: a device's answers and envelopes from one group commit) go out in one
   * write instead of a syscall each. ws corks and uncorks around every frame; this outer cork
   * keeps the data buffered until the uncork in setImmediate.
   */
  cork(socket: WebSocket): void {
    const stream = (socket as unknown as { _socket?: Duplex })._socket;
    if (!stream || this.corked.has(stream)) return;
    if (this.corked.size === 0) setImmediate(this.uncorkAll);
    this.corked.add(stream);
    stream.cork();
  }

  private readonly uncorkAll = (): void => {
    for (const stream of this.corked) stream.uncork();
    this.corked.clear();
  };

  async notify(accountId: string, deviceId: number): Promise<boolean> {
    const set = this.byDevice.get(`${accountId}.${deviceId}`);
    if (!set || set.size === 0) return false;
    // The envelope is already durable: the sender's answer does not wait for the socket write.
    for (const connection of set) {
      connection.drain().catch((error: unknown) => {
        this.logger.error({ err: { message: (error as Error).message } }, 'websocket drain failed');
      });
    }
    return true;
  }

  /** Closes the device's sockets with 4403: it was removed from its account. */
  async disconnect(accountId: string, deviceId: number): Promise<void> {
    const set = this.byDevice.get(`${accountId}.${deviceId}`);
    for (const connection of set ?? []) connection.closeRemoved();
  }

  private ping(): void {
    for (const set of this.byDevice.values()) {
      for (const connection of set) {
        if (!connection.alive) {
          connection.socket.terminate();
          continue;
        }
        connection.alive = false;
        connection.socket.ping();
      }
    }
  }

  get openSockets(): number {
    let n = 0;
    for (const set of this.byDevice.values()) n += set.size;
    return n;
  }

  /** Closes every socket with 1001 (going away); clients reconnect to the next instance. */
  close(): void {
    clearInterval(this.pinger);
    for (const set of this.byDevice.values()) for (const c of set) c.socket.close(1001, 'server shutting down');
    this.wss.close();
  }
}

function reject(socket: Duplex, status: 401 | 404, code: string): void {
  const body = JSON.stringify({ error: { code, message: code.replace('_', ' ') } });
  socket.end(
    `HTTP/1.1 ${status} ${status === 401 ? 'Unauthorized' : 'Not Found'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
