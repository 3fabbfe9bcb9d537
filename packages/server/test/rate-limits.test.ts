/**
 * Rate limits on key fetches and sends, against the real standalone server on loopback (HTTP and
 * WebSocket): a key-fetch flood is refused with 429, Retry-After and a JSON error code, drains no
 * one-time key past the limit, and leaves other requesters alone; sends past the per-device limit
 * are refused over HTTP and over the socket alike and store nothing; the windows end (the server
 * clock moved by faking Date). Also the in-memory limiter itself and the defaults' invariants.
 */
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  DEFAULT_KEY_FETCH_LIMITS,
  DEFAULT_SEND_LIMITS,
  KEY_FETCH_ACCOUNT_WINDOW_MS,
  KEY_FETCH_TARGET_WINDOW_MS,
  SEND_WINDOW_MS,
  VERIFICATION_CODE_TTL_MS,
  VERIFICATION_SESSION_RETENTION_MS,
  VERIFIED_SESSION_TTL_MS,
} from '../src/core/limits.ts';
import { LocalRateLimiter } from '../src/core/rate-limiter.ts';
import { type SocketClient, TestDevice, type TestServer, api, b64, startTestServer } from './support/harness.ts';

const fetchBundle = (server: TestServer, by: TestDevice, target: TestDevice, device: number | '*' = 1) =>
  api(server, 'GET', `/v1/keys/${target.accountId}/${device}`, { auth: by });

const keyCount = async (server: TestServer, device: TestDevice) =>
  (await api(server, 'GET', '/v1/keys/count', { auth: device })).body as { preKeys: number; pqPreKeys: number };

/** Expects a 429 over HTTP: Retry-After in (0, windowSeconds], the JSON error code rate_limited. */
function expectRateLimited(res: { status: number; body: any; headers: Headers }, windowMs: number): void {
  expect(res.status, JSON.stringify(res.body)).toBe(429);
  expect(res.body.error.code).toBe('rate_limited');
  expect(typeof res.body.error.message).toBe('string');
  const retryAfter = Number(res.headers.get('retry-after'));
  expect(Number.isInteger(retryAfter)).toBe(true);
  expect(retryAfter).toBeGreaterThan(0);
  expect(retryAfter).toBeLessThanOrEqual(windowMs / 1000);
}

/** Sets the server's clock (Date: the server runs in this process) to `time` for `fn`. */
async function at<T>(time: number, fn: () => Promise<T>): Promise<T> {
  vi.useFakeTimers({ toFake: ['Date'], now: time });
  try {
    return await fn();
  } finally {
    vi.useRealTimers();
  }
}
/** Moves the server's clock forward by `ms` for `fn`. */
const later = <T>(ms: number, fn: () => Promise<T>): Promise<T> => at(Date.now() + ms, fn);

describe('LocalRateLimiter', () => {
  const T0 = 1_700_000_000_000;

  it('counts amounts in a window that starts at the first take', () => {
    const limiter = new LocalRateLimiter();
    expect(limiter.take('a', 4, 10, 60_000, T0)).toEqual({ ok: true, resetAt: T0 + 60_000 });
    expect(limiter.take('a', 6, 10, 60_000, T0 + 1_000)).toEqual({ ok: true, resetAt: T0 + 60_000 });
    expect(limiter.take('a', 1, 10, 60_000, T0 + 59_999)).toEqual({ ok: false, resetAt: T0 + 60_000 });
    expect(limiter.take('a', 1, 10, 60_000, T0 + 60_000)).toEqual({ ok: true, resetAt: T0 + 120_000 });
  });

  it('does not count a refused take: a smaller one still fits', () => {
    const limiter = new LocalRateLimiter();
    expect(limiter.take('a', 8, 10, 60_000, T0).ok).toBe(true);
    expect(limiter.take('a', 3, 10, 60_000, T0).ok).toBe(false);
    expect(limiter.take('a', 3, 10, 60_000, T0).ok).toBe(false);
    expect(limiter.take('a', 2, 10, 60_000, T0).ok).toBe(true);
    expect(limiter.take('a', 1, 10, 60_000, T0).ok).toBe(false);
  });

  it('keeps keys apart and refuses a take larger than the limit outright', () => {
    const limiter = new LocalRateLimiter();
    expect(limiter.take('a', 10, 10, 1_000, T0).ok).toBe(true);
    expect(limiter.take('b', 10, 10, 1_000, T0).ok).toBe(true);
    expect(limiter.take('c', 11, 10, 1_000, T0).ok).toBe(false);
  });

  it('forgets ended windows, so memory follows the active keys', () => {
    const limiter = new LocalRateLimiter();
    for (let i = 0; i < 1_000; i++) limiter.take(`device-${i}`, 1, 10, 60_000, T0);
    expect(limiter.size).toBe(1_000);
    limiter.take('late', 1, 10, 60_000, T0 + 60_000);
    expect(limiter.size).toBe(1);
  });
});

describe('limit constants', () => {
  it('a swept verification session could no longer have been registered', () => {
    expect(VERIFICATION_SESSION_RETENTION_MS).toBeGreaterThan(VERIFIED_SESSION_TTL_MS - VERIFICATION_CODE_TTL_MS);
  });

  it('the default send limit passes the largest multi-recipient send and 1,000 envelopes/s per device', () => {
    expect(DEFAULT_SEND_LIMITS.envelopesPerDevicePerMinute).toBeGreaterThanOrEqual(1_000 * 6);
    expect(DEFAULT_SEND_LIMITS.envelopesPerDevicePerMinute / (SEND_WINDOW_MS / 1000)).toBeGreaterThanOrEqual(1_000);
  });

  it('the default key-fetch limits let a client start a group of 1,000 members', () => {
    expect(DEFAULT_KEY_FETCH_LIMITS.perAccountPerHour).toBeGreaterThanOrEqual(1_000);
    expect(DEFAULT_KEY_FETCH_LIMITS.perTargetPer10Minutes).toBeGreaterThanOrEqual(10);
  });
});

describe('key-fetch limits (defaults: 30 per target per 10 minutes)', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.close();
    if (server) rmSync(server.dataDir, { recursive: true, force: true });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('a flood from one account gets 429 past the limit and drains no one-time key past it; others are unaffected', async () => {
    const LIMIT = DEFAULT_KEY_FETCH_LIMITS.perTargetPer10Minutes;
    const FLOOD = LIMIT + 15;
    const bob = await TestDevice.register(server, { keys: 60 });
    const mallory = await TestDevice.register(server);
    const alice = await TestDevice.register(server);
    expect(await keyCount(server, bob)).toEqual({ preKeys: 60, pqPreKeys: 60 });

    // Sequential, then a parallel burst: the count is atomic either way.
    const responses: Awaited<ReturnType<typeof fetchBundle>>[] = [];
    for (let i = 0; i < LIMIT - 5; i++) responses.push(await fetchBundle(server, mallory, bob, i % 2 ? '*' : 1));
    responses.push(
      ...(await Promise.all(Array.from({ length: FLOOD - (LIMIT - 5) }, () => fetchBundle(server, mallory, bob)))),
    );
    const statuses = responses.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(LIMIT);
    expect(statuses.filter((s) => s === 429)).toHaveLength(FLOOD - LIMIT);
    for (const refused of responses.filter((r) => r.status === 429)) {
      expectRateLimited(refused, KEY_FETCH_TARGET_WINDOW_MS);
      expect(refused.body.devices).toBeUndefined();
    }
    expect(await keyCount(server, bob)).toEqual({ preKeys: 60 - LIMIT, pqPreKeys: 60 - LIMIT });

    // Another requester is not affected, and mallory may still fetch other accounts' keys.
    expect((await fetchBundle(server, alice, bob)).status).toBe(200);
    expect((await fetchBundle(server, mallory, alice)).status).toBe(200);
    expect(await keyCount(server, bob)).toEqual({ preKeys: 60 - LIMIT - 1, pqPreKeys: 60 - LIMIT - 1 });
  });

  it('counts per account (a linked device of the requester shares the limit), and not a 404', async () => {
    const bob = await TestDevice.register(server, { keys: 40 });
    const mallory = await TestDevice.register(server);
    const laptop = await TestDevice.link(server, mallory);
    const LIMIT = DEFAULT_KEY_FETCH_LIMITS.perTargetPer10Minutes;
    for (let i = 0; i < 5; i++) {
      const missing = await fetchBundle(server, mallory, bob, 2);
      expect(missing.status).toBe(404);
      expect(missing.body.error.code).toBe('device_not_found');
    }
    for (let i = 0; i < LIMIT; i++) {
      expect((await fetchBundle(server, i % 2 ? laptop : mallory, bob)).status).toBe(200);
    }
    expectRateLimited(await fetchBundle(server, laptop, bob), KEY_FETCH_TARGET_WINDOW_MS);
    expectRateLimited(await fetchBundle(server, mallory, bob, '*'), KEY_FETCH_TARGET_WINDOW_MS);
    expect(await keyCount(server, bob)).toEqual({ preKeys: 40 - LIMIT, pqPreKeys: 40 - LIMIT });
  });

  it('the limit ends with its 10-minute window (the server clock moved by faking Date)', async () => {
    const bob = await TestDevice.register(server, { keys: 40 });
    const mallory = await TestDevice.register(server);
    const LIMIT = DEFAULT_KEY_FETCH_LIMITS.perTargetPer10Minutes;
    const start = Date.now(); // the window starts at the first fetch, not before
    await Promise.all(Array.from({ length: LIMIT }, () => fetchBundle(server, mallory, bob)));
    const refused = await fetchBundle(server, mallory, bob);
    expectRateLimited(refused, KEY_FETCH_TARGET_WINDOW_MS);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(KEY_FETCH_TARGET_WINDOW_MS / 1000 - 60);

    await at(start + KEY_FETCH_TARGET_WINDOW_MS - 1_000, async () => {
      expectRateLimited(await fetchBundle(server, mallory, bob), KEY_FETCH_TARGET_WINDOW_MS);
    });
    await later(KEY_FETCH_TARGET_WINDOW_MS + 1_000, async () => {
      expect((await fetchBundle(server, mallory, bob)).status).toBe(200);
    });
    expect(await keyCount(server, bob)).toEqual({ preKeys: 40 - LIMIT - 1, pqPreKeys: 40 - LIMIT - 1 });
  });
});

describe('low limits from the configuration', () => {
  const PER_TARGET = 3;
  const PER_ACCOUNT = 5;
  const SENDS = 10;
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({
      HUSH_KEY_FETCHES_PER_TARGET_PER_10_MINUTES: String(PER_TARGET),
      HUSH_KEY_FETCHES_PER_ACCOUNT_PER_HOUR: String(PER_ACCOUNT),
      HUSH_SEND_ENVELOPES_PER_DEVICE_PER_MINUTE: String(SENDS),
    });
  });
  afterAll(async () => {
    await server?.close();
    if (server) rmSync(server.dataDir, { recursive: true, force: true });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  /** A PUT /v1/messages/{to} body with one opaque envelope per given device of `to`. */
  const sendBody = (to: TestDevice, devices = [{ deviceId: 1, registrationId: to.registrationId }]) => ({
    messages: devices.map((d) => ({ ...d, type: 1, content: b64(new TextEncoder().encode(randomUUID())) })),
    timestamp: Date.now(),
  });
  const sendHttp = (from: TestDevice, to: TestDevice) =>
    api(server, 'PUT', `/v1/messages/${to.accountId}`, { auth: from, body: sendBody(to) });
  let frameId = 0;
  async function sendSocket(socket: SocketClient, to: TestDevice): Promise<any> {
    const id = ++frameId;
    socket.ws.send(
      JSON.stringify({ type: 'request', id, method: 'PUT', path: `/v1/messages/${to.accountId}`, body: sendBody(to) }),
    );
    return socket.next((f) => f.type === 'response' && f.id === id);
  }
  const queue = async (device: TestDevice) =>
    (await api(server, 'GET', '/v1/messages', { auth: device })).body.messages as { sourceAccountId: string }[];

  it('key fetches: per target and per requesting account', async () => {
    const targets = await Promise.all(Array.from({ length: 3 }, () => TestDevice.register(server, { keys: 10 })));
    const [t0, t1, t2] = targets as [TestDevice, TestDevice, TestDevice];
    const mallory = await TestDevice.register(server);
    const alice = await TestDevice.register(server);
    for (let i = 0; i < PER_TARGET; i++) expect((await fetchBundle(server, mallory, t0)).status).toBe(200);
    expectRateLimited(await fetchBundle(server, mallory, t0), KEY_FETCH_TARGET_WINDOW_MS);
    // Refused fetches do not count against the account's total: 3 + 2 more make 5.
    expect((await fetchBundle(server, mallory, t1)).status).toBe(200);
    expect((await fetchBundle(server, mallory, t1)).status).toBe(200);
    const overall = await fetchBundle(server, mallory, t2);
    expectRateLimited(overall, KEY_FETCH_ACCOUNT_WINDOW_MS);
    expect(Number(overall.headers.get('retry-after'))).toBeGreaterThan(KEY_FETCH_TARGET_WINDOW_MS / 1000);
    expect(await keyCount(server, t2)).toEqual({ preKeys: 10, pqPreKeys: 10 });
    expect((await fetchBundle(server, alice, t2)).status).toBe(200);

    // After 10 minutes the per-target window is over, the hourly one is not; after an hour both are.
    await later(KEY_FETCH_TARGET_WINDOW_MS + 1_000, async () => {
      expectRateLimited(await fetchBundle(server, mallory, t0), KEY_FETCH_ACCOUNT_WINDOW_MS);
    });
    await later(KEY_FETCH_ACCOUNT_WINDOW_MS + 1_000, async () => {
      expect((await fetchBundle(server, mallory, t2)).status).toBe(200);
      expect((await fetchBundle(server, mallory, t0)).status).toBe(200);
    });
    expect(await keyCount(server, t0)).toEqual({ preKeys: 10 - PER_TARGET - 1, pqPreKeys: 10 - PER_TARGET - 1 });
  });

  it('sends over HTTP and over the socket share one per-device limit; a refused send stores nothing', async () => {
    const bob = await TestDevice.register(server);
    const alice = await TestDevice.register(server);
    const carol = await TestDevice.register(server);
    const socket = await alice.connect(server);
    try {
      await socket.next((f) => f.type === 'queue-empty');
      for (let i = 0; i < SENDS / 2; i++) expect((await sendHttp(alice, bob)).status).toBe(200);
      for (let i = 0; i < SENDS / 2; i++) expect((await sendSocket(socket, bob)).status).toBe(200);

      const overSocket = await sendSocket(socket, bob);
      expect(overSocket.status).toBe(429);
      expect(overSocket.body.error.code).toBe('rate_limited');
      expect(overSocket.retryAfter).toBeGreaterThan(0);
      expect(overSocket.retryAfter).toBeLessThanOrEqual(SEND_WINDOW_MS / 1000);
      expectRateLimited(await sendHttp(alice, bob), SEND_WINDOW_MS);
      const multi = await api(server, 'PUT', '/v1/messages/multi', {
        auth: alice,
        body: {
          type: 7,
          content: b64(new Uint8Array([1, 2, 3])),
          recipients: [
            { accountId: carol.accountId, devices: [{ deviceId: 1, registrationId: carol.registrationId }] },
          ],
          timestamp: Date.now(),
        },
      });
      expectRateLimited(multi, SEND_WINDOW_MS);

      expect(await queue(bob)).toHaveLength(SENDS);
      expect(await queue(carol)).toHaveLength(0);
      // Another device sends on.
      expect((await sendHttp(carol, bob)).status).toBe(200);
      expect(await queue(bob)).toHaveLength(SENDS + 1);
    } finally {
      await socket.close();
    }
  });

  it('counts envelopes: a send to several devices counts each, and a batch that does not fit is refused whole', async () => {
    const bob = await TestDevice.register(server);
    const bobLaptop = await TestDevice.link(server, bob);
    const alice = await TestDevice.register(server);
    const both = [
      { deviceId: 1, registrationId: bob.registrationId },
      { deviceId: bobLaptop.deviceId, registrationId: bobLaptop.registrationId },
    ];
    for (let i = 0; i < SENDS / 2 - 1; i++) {
      const res = await api(server, 'PUT', `/v1/messages/${bob.accountId}`, { auth: alice, body: sendBody(bob, both) });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
    }
    // 8 counted: 2 more fit, 3 do not (a multi-recipient send to bob's 2 devices and carol's 1).
    const carol = await TestDevice.register(server);
    const multi = (recipients: TestDevice[][]) =>
      api(server, 'PUT', '/v1/messages/multi', {
        auth: alice,
        body: {
          type: 7,
          content: b64(new Uint8Array([4, 5, 6])),
          recipients: recipients.map((devices) => ({
            accountId: (devices[0] as TestDevice).accountId,
            devices: devices.map((d) => ({ deviceId: d.deviceId, registrationId: d.registrationId })),
          })),
          timestamp: Date.now(),
        },
      });
    expectRateLimited(await multi([[bob, bobLaptop], [carol]]), SEND_WINDOW_MS);
    expect((await multi([[bob, bobLaptop]])).status).toBe(200);
    expectRateLimited(await multi([[carol]]), SEND_WINDOW_MS);
    expect(await queue(bob)).toHaveLength(SENDS / 2);
    expect(await queue(bobLaptop)).toHaveLength(SENDS / 2);
    expect(await queue(carol)).toHaveLength(0);
  });

  it('the send limit ends with its minute (the server clock moved by faking Date)', async () => {
    const bob = await TestDevice.register(server);
    const alice = await TestDevice.register(server);
    const socket = await alice.connect(server);
    try {
      for (let i = 0; i < SENDS; i++) expect((await sendHttp(alice, bob)).status).toBe(200);
      expectRateLimited(await sendHttp(alice, bob), SEND_WINDOW_MS);
      await later(SEND_WINDOW_MS + 1_000, async () => {
        expect((await sendSocket(socket, bob)).status).toBe(200);
        for (let i = 1; i < SENDS; i++) expect((await sendHttp(alice, bob)).status).toBe(200);
        expect((await sendSocket(socket, bob)).status).toBe(429);
      });
      expect(await queue(bob)).toHaveLength(2 * SENDS);
    } finally {
      await socket.close();
    }
  });
});
