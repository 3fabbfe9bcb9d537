/**
 * The load generator of `npm run bench:server`: simulated devices in one process of their own
 * (forked by bench/server.ts with `node --import tsx`), talking to the server over loopback
 * WebSockets exactly as a client does. See bench/README.md ("Server benchmark").
 *
 * - Devices register through the real API: verification session, the dev SMS code from the
 *   server's dev-sms.log, POST /v1/accounts with XEdDSA-signed prekeys made by @hush/protocol.
 * - Each active device holds one authenticated socket. It sends 1 KiB envelopes as request frames
 *   (PUT /v1/messages/{accountId}) over that socket and acks every envelope it receives on it.
 * - Content is opaque to the server: 12 header bytes (send time as float64 from this process's
 *   performance.now(), then a per sender→receiver sequence number) and 1012 random bytes. The
 *   receiver reads the header back for latency and to check FIFO order (no gap, no duplicate).
 *
 * Commands arrive over the IPC channel (`LoadCommand`); each is answered with `{id, value}` or
 * `{id, error}`.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import { IdentityKeyPair } from '@hush/protocol';
import { nodeCrypto } from '@hush/protocol/node';
import WebSocket from 'ws';
import { TestDevice, type TestServer } from '../packages/server/test/support/harness.ts';

/** `target` names a server (and the devices registered on it): one run can drive two. */
export type LoadCommand = { id: number; url: string; target: string } & (
  | { cmd: 'register'; dataDir: string; devices: number }
  | { cmd: 'connect' }
  | { cmd: 'closed'; window: number; warmupMs: number; measureMs: number }
  | { cmd: 'open'; rate: number; warmupMs: number; measureMs: number }
  | { cmd: 'idle-register'; dataDir: string; accounts: number }
  | { cmd: 'idle-open'; sockets: number }
  | { cmd: 'idle-close' }
  | { cmd: 'cpu' }
  | { cmd: 'limits' }
);

export interface PhaseResult {
  /** Envelopes received (and acked) during the measured window, per second. */
  deliveredPerSecond: number;
  delivered: number;
  measuredMs: number;
  /** Send → receipt at the receiver, ms, for envelopes received in the window. */
  latency: Percentiles;
  /** Send → the 200 answer (stored durably), ms, for answers received in the window. */
  answer: Percentiles;
  /** Whole phase (warm-up, window and drain). */
  sent: number;
  ok: number;
  failed: number;
  received: number;
  fifoViolations: number;
  /** Open loop only: sends not issued because a device had too many unanswered. */
  skipped: number;
  /** Open loop only: the rate actually issued during the window. */
  issuedPerSecond: number;
  /** The largest number of unanswered sends at once. */
  maxOutstanding: number;
}

export interface Percentiles {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

const MESSAGE_BYTES = 1024;
const HEADER_BYTES = 12; // a multiple of 3, so the base64 of header and body concatenate
const PAYLOADS = Array.from({ length: 64 }, () => randomBytes(MESSAGE_BYTES - HEADER_BYTES).toString('base64'));
/** Open loop: a device with this many unanswered sends skips its turn (the server is far behind). */
const MAX_OUTSTANDING_PER_DEVICE = 2_000;
const DRAIN_TIMEOUT_MS = 60_000;

interface Account {
  accountId: string;
  registrationId: number;
  authorization: string;
}

class Phase {
  running = true;
  measureFrom = Number.POSITIVE_INFINITY;
  measureTo = Number.POSITIVE_INFINITY;
  readonly latencies: number[] = [];
  readonly answers: number[] = [];
  sent = 0;
  ok = 0;
  failed = 0;
  received = 0;
  deliveredInWindow = 0;
  fifoViolations = 0;
  skipped = 0;
  issuedInWindow = 0;
  outstanding = 0;
  maxOutstanding = 0;
  firstFailure: string | undefined;
}

let phase = new Phase();
const loopDelay = monitorEventLoopDelay({ resolution: 1 });
loopDelay.enable();

/** Like the server: a socket's frames of one event-loop turn leave in one write. */
const corked = new Set<Duplex>();
function cork(ws: WebSocket): void {
  const stream = (ws as unknown as { _socket?: Duplex })._socket;
  if (!stream || corked.has(stream)) return;
  if (corked.size === 0) {
    setImmediate(() => {
      for (const c of corked) c.uncork();
      corked.clear();
    });
  }
  corked.add(stream);
  stream.cork();
}

class LiveDevice {
  ws!: WebSocket;
  /** The devices of the same server: the ones this one sends to. */
  peers: LiveDevice[] = [];
  private nextRequestId = 1;
  private readonly pending = new Map<number, number>();
  private readonly seqTo = new Map<string, number>();
  private readonly seqFrom = new Map<string, number>();
  private turn = 0;
  /** Closed loop: send another as soon as one is answered. */
  refill = false;

  constructor(
    readonly account: Account,
    readonly index: number,
  ) {}

  get outstanding(): number {
    return this.pending.size;
  }

  async connect(url: string): Promise<void> {
    this.ws = await openSocket(url, this.account.authorization);
    this.ws.on('message', (data: Buffer) => this.onFrame(data));
  }

  /** Sends one 1 KiB envelope to the next device in turn (never to itself). */
  send(): void {
    const peers = this.peers;
    const to = peers[(this.index + 1 + (this.turn++ % (peers.length - 1))) % peers.length] as LiveDevice;
    const seq = (this.seqTo.get(to.account.accountId) ?? 0) + 1;
    this.seqTo.set(to.account.accountId, seq);
    const id = this.nextRequestId++;
    const now = performance.now();
    const header = Buffer.allocUnsafe(HEADER_BYTES);
    header.writeDoubleLE(now, 0);
    header.writeUInt32LE(seq, 8);
    const content = header.toString('base64') + PAYLOADS[id % PAYLOADS.length];
    this.pending.set(id, now);
    phase.sent++;
    phase.outstanding++;
    if (phase.outstanding > phase.maxOutstanding) phase.maxOutstanding = phase.outstanding;
    cork(this.ws);
    this.ws.send(
      `{"type":"request","id":${id},"method":"PUT","path":"/v1/messages/${to.account.accountId}","body":{"messages":[{"deviceId":1,"registrationId":${to.account.registrationId},"type":1,"content":"${content}"}],"timestamp":${Date.now()}}}`,
    );
  }

  private onFrame(data: Buffer): void {
    const now = performance.now();
    const frame = JSON.parse(data.toString());
    if (frame.type === 'envelope') {
      const envelope = frame.envelope;
      cork(this.ws);
      this.ws.send(`{"type":"ack","guid":"${envelope.guid}"}`);
      const header = Buffer.from((envelope.content as string).slice(0, 16), 'base64');
      const sentAt = header.readDoubleLE(0);
      const seq = header.readUInt32LE(8);
      const last = this.seqFrom.get(envelope.sourceAccountId) ?? 0;
      if (seq !== last + 1) phase.fifoViolations++;
      this.seqFrom.set(envelope.sourceAccountId, seq);
      phase.received++;
      if (now >= phase.measureFrom && now < phase.measureTo) {
        phase.deliveredInWindow++;
        phase.latencies.push(now - sentAt);
      }
    } else if (frame.type === 'response') {
      const sentAt = this.pending.get(frame.id);
      if (sentAt === undefined) return;
      this.pending.delete(frame.id);
      phase.outstanding--;
      if (frame.status === 200) {
        phase.ok++;
        if (now >= phase.measureFrom && now < phase.measureTo) phase.answers.push(now - sentAt);
      } else {
        phase.failed++;
        phase.firstFailure ??= `${frame.status} ${JSON.stringify(frame.body)}`;
      }
      if (this.refill && phase.running) this.send();
    } else if (frame.type === 'error') {
      phase.failed++;
      phase.firstFailure ??= JSON.stringify(frame);
    }
  }
}

interface Target {
  devices: LiveDevice[];
  idleAccounts: Account[];
  idleSockets: WebSocket[];
}
const targets = new Map<string, Target>();
function target(name: string): Target {
  let t = targets.get(name);
  if (!t) {
    t = { devices: [], idleAccounts: [], idleSockets: [] };
    targets.set(name, t);
  }
  return t;
}
let numberCounter = 0;

/** Distinct valid US numbers, unique within a run (each run uses a fresh data directory). */
function nextNumber(): string {
  return `+1415${String(2_000_000 + numberCounter++).padStart(7, '0')}`;
}

function basic(accountId: string, password: string): string {
  return `Basic ${Buffer.from(`${accountId}.1:${password}`).toString('base64')}`;
}

function openSocket(url: string, authorization: string): Promise<WebSocket> {
  const ws = new WebSocket(`${url.replace('http', 'ws')}/v1/websocket`, {
    headers: { authorization },
    perMessageDeflate: false,
  });
  return new Promise((resolve, reject) => {
    // Authenticated and drained: the server sends queue-empty once the backlog is delivered.
    const onMessage = (data: Buffer) => {
      if (!data.toString().includes('"queue-empty"')) return;
      ws.off('message', onMessage);
      resolve(ws);
    };
    ws.on('message', onMessage);
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
  });
}

/** Runs `task(i)` for i in [0, count) with at most `limit` running at once. */
async function pool(count: number, limit: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
}

async function post(url: string, path: string, body: unknown): Promise<any> {
  const response = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`POST ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

/** Active devices: each registers with keys of its own (the harness's TestDevice). */
async function register(url: string, dataDir: string, count: number): Promise<LiveDevice[]> {
  const server = { url, dataDir } as TestServer;
  const registered: TestDevice[] = new Array(count);
  await pool(count, 8, async (i) => {
    registered[i] = await TestDevice.register(server, { number: nextNumber(), keys: 0 });
  });
  const devices = registered.map(
    (d, i) =>
      new LiveDevice({ accountId: d.accountId, registrationId: d.registrationId, authorization: d.authorization }, i),
  );
  for (const d of devices) d.peers = devices;
  return devices;
}

/**
 * Idle accounts, many of them: the same real API calls, but one set of public keys (identity,
 * XEdDSA-signed prekey, signed Kyber last-resort key, no one-time keys) made once and uploaded for
 * every account, and the dev SMS log read once per batch instead of once per number. Every
 * account still gets its own verification session, code, password and device.
 */
async function registerIdle(url: string, dataDir: string, count: number): Promise<Account[]> {
  const identity = await IdentityKeyPair.generate(nodeCrypto);
  const keys = await new TestDevice(identity, '').generateKeys(0);
  const identityKey = Buffer.from(identity.publicKey.serialize()).toString('base64');
  const smsLog = join(dataDir, 'dev-sms.log');
  const accounts: Account[] = [];
  const BATCH = 500;
  for (let start = 0; start < count; start += BATCH) {
    const size = Math.min(BATCH, count - start);
    const sessions: { id: string; number: string }[] = new Array(size);
    await pool(size, 16, async (i) => {
      sessions[i] = await post(url, '/v1/verification/sessions', { number: nextNumber() });
    });
    const codes = new Map<string, string>();
    for (const line of (await readFile(smsLog, 'utf8')).split('\n')) {
      if (line) {
        const record = JSON.parse(line) as { number: string; code: string };
        codes.set(record.number, record.code);
      }
    }
    await pool(size, 16, async (i) => {
      const session = sessions[i] as { id: string; number: string };
      await post(url, `/v1/verification/sessions/${session.id}/code`, { code: codes.get(session.number) });
      const password = randomBytes(24).toString('base64');
      const registrationId = 1 + (randomBytes(2).readUInt16LE(0) % 0x3fff);
      const created = await post(url, '/v1/accounts', {
        verificationSessionId: session.id,
        password,
        identityKey,
        registrationId,
        ...keys,
      });
      accounts.push({
        accountId: created.accountId,
        registrationId,
        authorization: basic(created.accountId, password),
      });
    });
  }
  return accounts;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until every send is answered and every stored envelope has arrived. */
async function drain(): Promise<void> {
  const deadline = performance.now() + DRAIN_TIMEOUT_MS;
  while (phase.outstanding > 0 || phase.received < phase.ok) {
    if (performance.now() > deadline) {
      throw new Error(`drain timed out: ${phase.outstanding} unanswered, ${phase.ok - phase.received} undelivered`);
    }
    await sleep(20);
  }
}

function percentiles(values: number[]): Percentiles {
  if (values.length === 0) return { n: 0, p50: 0, p90: 0, p99: 0, max: 0 };
  const sorted = Float64Array.from(values).sort();
  const at = (p: number) =>
    sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] as number;
  return { n: sorted.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: sorted[sorted.length - 1] as number };
}

function result(p: Phase): PhaseResult {
  const measuredMs = p.measureTo - p.measureFrom;
  if (p.failed > 0) throw new Error(`${p.failed} sends failed; first: ${p.firstFailure}`);
  if (p.fifoViolations > 0) throw new Error(`${p.fifoViolations} envelopes arrived out of order or twice`);
  return {
    deliveredPerSecond: (p.deliveredInWindow * 1000) / measuredMs,
    delivered: p.deliveredInWindow,
    measuredMs,
    latency: percentiles(p.latencies),
    answer: percentiles(p.answers),
    sent: p.sent,
    ok: p.ok,
    failed: p.failed,
    received: p.received,
    fifoViolations: p.fifoViolations,
    skipped: p.skipped,
    issuedPerSecond: (p.issuedInWindow * 1000) / measuredMs,
    maxOutstanding: p.maxOutstanding,
  };
}

/** Closed loop: every device keeps `window` sends unanswered; the server sets the pace. */
async function closedLoop(
  devices: LiveDevice[],
  window: number,
  warmupMs: number,
  measureMs: number,
): Promise<PhaseResult> {
  phase = new Phase();
  const start = performance.now();
  phase.measureFrom = start + warmupMs;
  phase.measureTo = phase.measureFrom + measureMs;
  for (const d of devices) d.refill = true;
  for (let k = 0; k < window; k++) for (const d of devices) d.send();
  await sleep(warmupMs + measureMs);
  phase.running = false;
  for (const d of devices) d.refill = false;
  await drain();
  return result(phase);
}

/** Open loop: sends issued on a fixed schedule (`rate` per second, round robin over devices). */
async function openLoop(
  devices: LiveDevice[],
  rate: number,
  warmupMs: number,
  measureMs: number,
): Promise<PhaseResult> {
  phase = new Phase();
  const start = performance.now();
  phase.measureFrom = start + warmupMs;
  phase.measureTo = phase.measureFrom + measureMs;
  const end = phase.measureTo;
  let issued = 0;
  let next = 0;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const now = performance.now();
      const due = Math.floor(((Math.min(now, end) - start) * rate) / 1000) - issued;
      for (let k = 0; k < due; k++) {
        const d = devices[next++ % devices.length] as LiveDevice;
        issued++;
        if (d.outstanding >= MAX_OUTSTANDING_PER_DEVICE) {
          phase.skipped++;
          continue;
        }
        d.send();
        if (now >= phase.measureFrom && now < phase.measureTo) phase.issuedInWindow++;
      }
      if (now >= end) {
        clearInterval(timer);
        resolve();
      }
    }, 1);
  });
  phase.running = false;
  await drain();
  return result(phase);
}

async function closeAll(sockets: WebSocket[]): Promise<void> {
  await Promise.all(
    sockets.map(
      (ws) =>
        new Promise<void>((resolve) => {
          if (ws.readyState === WebSocket.CLOSED) return resolve();
          ws.once('close', () => resolve());
          ws.close();
        }),
    ),
  );
}

async function handle(command: LoadCommand): Promise<unknown> {
  const t = target(command.target);
  switch (command.cmd) {
    case 'register':
      t.devices = await register(command.url, command.dataDir, command.devices);
      return t.devices.length;
    case 'connect':
      await closeAll(t.devices.map((d) => d.ws).filter(Boolean));
      await pool(t.devices.length, 32, (i) => (t.devices[i] as LiveDevice).connect(command.url));
      return t.devices.length;
    case 'closed':
      return closedLoop(t.devices, command.window, command.warmupMs, command.measureMs);
    case 'open':
      return openLoop(t.devices, command.rate, command.warmupMs, command.measureMs);
    case 'idle-register':
      await closeAll(t.devices.map((d) => d.ws).filter(Boolean));
      t.idleAccounts = await registerIdle(command.url, command.dataDir, command.accounts);
      return t.idleAccounts.length;
    case 'idle-open': {
      const sockets: WebSocket[] = new Array(command.sockets);
      await pool(command.sockets, 64, async (i) => {
        const account = t.idleAccounts[i % t.idleAccounts.length] as Account;
        sockets[i] = await openSocket(command.url, account.authorization);
      });
      t.idleSockets = sockets;
      return sockets.length;
    }
    case 'idle-close':
      await closeAll(t.idleSockets);
      t.idleSockets = [];
      return 0;
    case 'cpu': {
      const usage = process.cpuUsage();
      const delay = { p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 };
      loopDelay.reset();
      return { ...usage, loopDelayP99: delay.p99, loopDelayMax: delay.max };
    }
    case 'limits':
      return (await readFile('/proc/self/limits', 'utf8').catch(() => '')).match(/Max open files\s+(\d+)/)?.[1];
  }
}

if (!process.send) throw new Error('server-load runs as a child of bench/server.ts');
process.on('message', (command: LoadCommand) => {
  handle(command).then(
    (value) => process.send?.({ id: command.id, value }),
    (error: unknown) => process.send?.({ id: command.id, error: (error as Error).stack ?? String(error) }),
  );
});
process.once('disconnect', () => process.exit(0));
process.send({ ready: true });
