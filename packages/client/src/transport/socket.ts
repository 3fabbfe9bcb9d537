import { type Envelope, parseEnvelope } from './http-api.ts';

/** The subset of the WebSocket API used here; browsers, React Native and `ws` all provide it. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onclose: ((event: unknown) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
}

/** Opens a socket to `url`; Node passes the Authorization header, browsers a token in the URL. */
export type SocketFactory = (url: string, headers: Record<string, string>) => WebSocketLike;

export interface LiveConnectionOptions {
  /** ws:// or wss:// URL of GET /v1/websocket. */
  url: string;
  /** Fresh credentials for each attempt: a header (Node) or a single-use token query (browsers). */
  credentials: () => Promise<{ headers?: Record<string, string>; token?: string }>;
  open: SocketFactory;
  /** Decrypts and stores one envelope; the connection acknowledges it only after this resolves. */
  onEnvelope: (envelope: Envelope) => Promise<void>;
  onQueueEmpty?: () => void;
  onStateChange?: (state: 'connecting' | 'open' | 'closed', detail?: string) => void;
  /** Backoff bounds for reconnecting (ms). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

const OPEN = 1;

/**
 * A device's live connection: reconnects with exponential backoff and jitter, hands envelopes to
 * the client one at a time in arrival order, acknowledges each after the client stored it, and
 * carries request frames (sends) with their responses.
 */
export class LiveConnection {
  private socket: WebSocketLike | undefined;
  private stopped = false;
  private attempt = 0;
  private nextRequestId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (r: { status: number; body: unknown }) => void; reject: (e: Error) => void }
  >();
  /** Envelope handling is sequential: the ratchet needs messages in the order they are processed. */
  private chain: Promise<void> = Promise.resolve();
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private opened: Promise<void> | undefined;
  private resolveOpened: (() => void) | undefined;

  constructor(private readonly options: LiveConnectionOptions) {}

  /** Connects (and keeps reconnecting until `stop`); resolves once the first connection is open. */
  start(): Promise<void> {
    this.stopped = false;
    this.opened ??= new Promise((resolve) => {
      this.resolveOpened = resolve;
    });
    void this.connect();
    return this.opened;
  }

  get isOpen(): boolean {
    return this.socket?.readyState === OPEN;
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    this.options.onStateChange?.('connecting');
    let socket: WebSocketLike;
    try {
      const { headers, token } = await this.options.credentials();
      const url = token ? `${this.options.url}?token=${encodeURIComponent(token)}` : this.options.url;
      socket = this.options.open(url, headers ?? {});
    } catch (error) {
      this.scheduleReconnect((error as Error).message);
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
      this.options.onStateChange?.('open');
      this.resolveOpened?.();
    };
    socket.onmessage = (event) => this.onFrame(String(event.data));
    socket.onerror = () => {
      // The close event follows and schedules the reconnect.
    };
    socket.onclose = () => {
      if (this.socket === socket) this.socket = undefined;
      for (const [, waiter] of this.pending) waiter.reject(new Error('connection closed before the response'));
      this.pending.clear();
      this.options.onStateChange?.('closed');
      this.scheduleReconnect('closed');
    };
  }

  private scheduleReconnect(reason: string): void {
    if (this.stopped) return;
    const min = this.options.minBackoffMs ?? 500;
    const max = this.options.maxBackoffMs ?? 30_000;
    const delay = Math.min(max, min * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt++;
    this.options.onStateChange?.('closed', `${reason}; retrying in ${Math.round(delay)} ms`);
    this.reconnectTimer = setTimeout(() => void this.connect(), delay);
  }

  private onFrame(text: string): void {
    let frame: { type?: string; envelope?: unknown; id?: number; status?: number; body?: unknown };
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (frame.type === 'envelope') {
      const envelope = parseEnvelope(frame.envelope);
      const socket = this.socket;
      this.chain = this.chain.then(async () => {
        try {
          await this.options.onEnvelope(envelope);
        } catch {
          // Not stored, so not acknowledged: the server redelivers it on the next connection.
          return;
        }
        if (socket?.readyState === OPEN) socket.send(JSON.stringify({ type: 'ack', guid: envelope.guid }));
      });
    } else if (frame.type === 'queue-empty') {
      this.chain = this.chain.then(() => this.options.onQueueEmpty?.());
    } else if (frame.type === 'response' && typeof frame.id === 'number') {
      this.pending.get(frame.id)?.resolve({ status: frame.status ?? 0, body: frame.body });
      this.pending.delete(frame.id);
    }
  }

  /** Calls the HTTP API over the socket as this device (e.g. PUT /v1/messages/...). */
  request(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
    const socket = this.socket;
    if (socket?.readyState !== OPEN) return Promise.reject(new Error('not connected'));
    const id = this.nextRequestId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      socket.send(JSON.stringify({ type: 'request', id, method, path, ...(body === undefined ? {} : { body }) }));
    });
  }

  /** Waits until every envelope received so far has been handled. */
  idle(): Promise<void> {
    return this.chain;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this.socket?.close(1000, 'client stopping');
    this.socket = undefined;
    this.opened = undefined;
  }
}
