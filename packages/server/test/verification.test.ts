/**
 * Phone-number verification (step 2): E.164 parsing, the wrong-code limit, code expiry, the resend
 * cool-down, hourly limits per number and per client address, codes kept only as keyed hashes, and
 * one account per verified session. Over real HTTP against the real standalone server, except the
 * expiry tests that need a clock: those run the same core on SQLite with a clock the test sets.
 */
import { createHmac } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { IdentityKeyPair, KyberPreKeyRecord, SignedPreKeyRecord } from '@hush/protocol';
import { nodeCrypto as crypto } from '@hush/protocol/node';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { type Clock, type SmsSender, createCore } from '../src/core/index.ts';
import { readLatestDevCode } from '../src/sms/dev-sms-sender.ts';
import { SqliteStorage } from '../src/storage/sqlite/sqlite-storage.ts';
import { TestDevice, type TestServer, api, b64, devSmsFile, freshNumber, startTestServer } from './support/harness.ts';

const MINUTE = 60_000;

async function start(server: TestServer, number: string) {
  return api(server, 'POST', '/v1/verification/sessions', { body: { number } });
}

async function startOk(server: TestServer, number = freshNumber()) {
  const started = await start(server, number);
  expect(started.status, JSON.stringify(started.body)).toBe(200);
  const code = await readLatestDevCode(devSmsFile(server), started.body.number);
  expect(code).toMatch(/^\d{6}$/);
  return { id: started.body.id as string, number: started.body.number as string, code: code as string };
}

const submit = (server: TestServer, id: string, code: string) =>
  api(server, 'POST', `/v1/verification/sessions/${id}/code`, { body: { code } });

/** A six-digit code that is not `code`. */
const wrong = (code: string, n = 1) => String((Number(code) + n) % 1_000_000).padStart(6, '0');

/** A registration body for a new device with real keys. */
async function registration(sessionId: string) {
  const device = new TestDevice(await IdentityKeyPair.generate(crypto), '');
  return {
    device,
    body: {
      verificationSessionId: sessionId,
      password: device.password,
      identityKey: b64(device.identity.publicKey.serialize()),
      registrationId: device.registrationId,
      ...(await device.generateKeys(2)),
    },
  };
}

function expectRateLimited(res: { status: number; body: any; headers: Headers }, maxSeconds: number) {
  expect(res.status, JSON.stringify(res.body)).toBe(429);
  expect(res.body.error.code).toBe('rate_limited');
  const retryAfter = Number(res.headers.get('retry-after'));
  expect(Number.isInteger(retryAfter)).toBe(true);
  expect(retryAfter).toBeGreaterThan(0);
  expect(retryAfter).toBeLessThanOrEqual(maxSeconds);
  return retryAfter;
}

function sessionsFor(server: TestServer, number: string): number {
  const db = new Database(server.config.databasePath, { readonly: true });
  try {
    return (db.prepare('SELECT count(*) AS n FROM verification_sessions WHERE number = ?').get(number) as { n: number })
      .n;
  } finally {
    db.close();
  }
}

function codesSentTo(server: TestServer, number: string): number {
  return readFileSync(devSmsFile(server), 'utf8')
    .split('\n')
    .filter((line) => line.trim() && JSON.parse(line).number === number).length;
}

describe('verification over HTTP (default limits)', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server.close();
  });

  it('parses common ways of writing a number into E.164', async () => {
    const cases: [string, string][] = [
      ['+1 415 555 2671', '+14155552671'],
      ['+1 (415) 555-2671', '+14155552671'],
      ['+1.415.555.2671', '+14155552671'],
      [' +14155552671 ', '+14155552671'],
      ['+44 20 7946 0958', '+442079460958'],
      ['+49 30 901820', '+4930901820'],
      ['+33 1 42 68 53 00', '+33142685300'],
    ];
    for (const [input, e164] of cases) {
      const res = await start(server, input);
      expect(res.status, `${input}: ${JSON.stringify(res.body)}`).toBe(200);
      expect(res.body).toMatchObject({ number: e164, verified: false });
      expect(res.body.id).toMatch(/^[0-9a-f-]{36}$/);
      // The code went to the normalized number.
      expect(await readLatestDevCode(devSmsFile(server), e164)).toMatch(/^\d{6}$/);
    }
  });

  it('rejects junk and invalid numbers with 400 invalid_number, and sends nothing', async () => {
    const before = readFileSync(devSmsFile(server), 'utf8');
    for (const input of [
      'hello',
      '+',
      '+1',
      '4155552671', // no country code
      '004155552671',
      '+1 415 555 267', // too short
      '+1 415 555 26711', // too long
      '+1 000 555 2671', // no such area code
      '+999 123 4567', // no such country code
      '+44 20 7946',
      '+1-800-FLOWERS',
      '++14155552671',
      '+1 415 555 2671 +1',
    ]) {
      const res = await start(server, input);
      expect(res.status, `${input}: ${JSON.stringify(res.body)}`).toBe(400);
      expect(res.body.error.code, input).toBe('invalid_number');
      expect(res.body.error.message).toEqual(expect.any(String));
    }
    expect(readFileSync(devSmsFile(server), 'utf8')).toBe(before);
  });

  it('after 5 wrong codes the session is locked: 429 with Retry-After, even for the right code', async () => {
    const session = await startOk(server);
    for (let i = 1; i <= 5; i++) {
      const res = await submit(server, session.id, wrong(session.code, i));
      expect(res.status, JSON.stringify(res.body)).toBe(400);
      expect(res.body.error).toMatchObject({ code: 'invalid_code', attemptsLeft: 5 - i });
    }
    const right = await submit(server, session.id, session.code);
    expectRateLimited(right, 10 * 60);
    expectRateLimited(await submit(server, session.id, session.code), 10 * 60);
    // Not verified: it cannot create an account.
    const { body } = await registration(session.id);
    const refused = await api(server, 'POST', '/v1/accounts', { body });
    expect(refused.status).toBe(403);
    expect(refused.body.error.code).toBe('number_not_verified');
    // A new session for the same number starts with a fresh allowance.
    const again = await startOk(server, session.number);
    expect((await submit(server, again.id, again.code)).status).toBe(200);
  });

  it('4 wrong codes still leave the right one accepted (the limit is exactly 5)', async () => {
    const session = await startOk(server);
    for (let i = 1; i <= 4; i++) expect((await submit(server, session.id, wrong(session.code, i))).status).toBe(400);
    const res = await submit(server, session.id, session.code);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ id: session.id, number: session.number, verified: true });
  });

  it('parallel guesses cannot get past the limit', async () => {
    const session = await startOk(server);
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => submit(server, session.id, wrong(session.code, i + 1))),
    );
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 400)).toHaveLength(5);
    expect(statuses.filter((s) => s === 429)).toHaveLength(15);
    expectRateLimited(await submit(server, session.id, session.code), 10 * 60);
  });

  it('codes that are not six digits count as wrong codes', async () => {
    const session = await startOk(server);
    for (const code of ['12345', '1234567', ` ${session.code}`, `${session.code}\n`, '١٢٣٤٥٦']) {
      const res = await submit(server, session.id, code);
      expect(res.status, JSON.stringify(code)).toBe(400);
      expect(res.body.error.code).toBe('invalid_code');
    }
    expectRateLimited(await submit(server, session.id, session.code), 10 * 60);
  });

  it('a verified session creates exactly one account; using it again is 409', async () => {
    const session = await startOk(server);
    expect((await submit(server, session.id, session.code)).status).toBe(200);
    const first = await registration(session.id);
    const created = await api(server, 'POST', '/v1/accounts', { body: first.body });
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    expect(created.body).toMatchObject({ deviceId: 1, number: session.number });
    first.device.accountId = created.body.accountId;

    const second = await registration(session.id);
    const reused = await api(server, 'POST', '/v1/accounts', { body: second.body });
    expect(reused.status).toBe(409);
    expect(reused.body.error.code).toBe('verification_session_used');
    // The same body again is refused too, and the first account is untouched and still works.
    expect((await api(server, 'POST', '/v1/accounts', { body: first.body })).status).toBe(409);
    const db = new Database(server.config.databasePath, { readonly: true });
    try {
      expect(db.prepare('SELECT id FROM accounts WHERE number = ?').all(session.number)).toEqual([
        { id: created.body.accountId },
      ]);
    } finally {
      db.close();
    }
    expect((await api(server, 'GET', '/v1/keys/count', { auth: first.device })).status).toBe(200);
  });

  it('registrations racing on one verified session: exactly one account, the others 409', async () => {
    const session = await startOk(server);
    expect((await submit(server, session.id, session.code)).status).toBe(200);
    const bodies = await Promise.all(Array.from({ length: 6 }, () => registration(session.id)));
    const results = await Promise.all(bodies.map(({ body }) => api(server, 'POST', '/v1/accounts', { body })));
    expect(results.map((r) => r.status).sort()).toEqual([200, 409, 409, 409, 409, 409]);
    for (const r of results.filter((r) => r.status === 409))
      expect(r.body.error.code).toBe('verification_session_used');
    const db = new Database(server.config.databasePath, { readonly: true });
    try {
      expect(db.prepare('SELECT count(*) AS n FROM accounts WHERE number = ?').get(session.number)).toEqual({ n: 1 });
    } finally {
      db.close();
    }
  });

  it('an unverified session cannot create an account (403), also after a wrong code', async () => {
    const session = await startOk(server);
    const { body } = await registration(session.id);
    const refused = await api(server, 'POST', '/v1/accounts', { body });
    expect(refused.status).toBe(403);
    expect(refused.body.error.code).toBe('number_not_verified');
    expect((await submit(server, session.id, wrong(session.code))).status).toBe(400);
    expect((await api(server, 'POST', '/v1/accounts', { body })).status).toBe(403);
    const db = new Database(server.config.databasePath, { readonly: true });
    try {
      expect(db.prepare('SELECT count(*) AS n FROM accounts WHERE number = ?').get(session.number)).toEqual({ n: 0 });
    } finally {
      db.close();
    }
    // Verifying afterwards makes the same body work: the refusals consumed nothing.
    expect((await submit(server, session.id, session.code)).status).toBe(200);
    expect((await api(server, 'POST', '/v1/accounts', { body })).status).toBe(200);
  });

  it('an unknown session is 404 for codes and for registration', async () => {
    const id = '00000000-0000-4000-8000-000000000000';
    const res = await submit(server, id, '123456');
    expect(res.status).toBe(404);
    expect(res.body.error.code).toBe('verification_session_not_found');
    const { body } = await registration(id);
    const registered = await api(server, 'POST', '/v1/accounts', { body });
    expect(registered.status).toBe(404);
    expect(registered.body.error.code).toBe('verification_session_not_found');
  });

  it('stores and logs codes only as keyed hashes: no code appears in the database files or the logs', async () => {
    const sessions = [];
    for (let i = 0; i < 5; i++) sessions.push(await startOk(server));
    const guesses: string[] = [];
    for (const s of sessions) {
      const guess = wrong(s.code, 7);
      guesses.push(guess);
      expect((await submit(server, s.id, guess)).status).toBe(400);
      expect((await submit(server, s.id, s.code)).status).toBe(200);
    }
    const [first] = sessions;
    const { body } = await registration(first?.id as string);
    expect((await api(server, 'POST', '/v1/accounts', { body })).status).toBe(200);

    const files = readdirSync(server.dataDir)
      .filter((name) => name.startsWith('hush.sqlite'))
      .map((name) => join(server.dataDir, name));
    expect(files).toContain(server.config.databasePath);
    const stored = Buffer.concat(files.map((f) => readFileSync(f)));
    const logs = server.logs();
    expect(logs).toContain('/v1/verification/sessions/:id/code'); // the requests were logged
    for (const needle of [...sessions.map((s) => s.code), ...guesses]) {
      expect(stored.includes(Buffer.from(needle)), `code ${needle} in the database`).toBe(false);
      // As a token: six digits can occur by chance inside the logs' timestamps, ids and durations.
      const token = new RegExp(`(?<![0-9A-Za-z])${needle}(?![0-9A-Za-z])`);
      expect(token.test(logs), `code ${needle} in the logs`).toBe(false);
    }
    // The scan can see codes where they are: the dev SMS log is meant to hold them.
    const devLog = readFileSync(devSmsFile(server), 'utf8');
    for (const s of sessions) expect(devLog).toContain(s.code);

    // What is stored is HMAC-SHA256(server secret, id ‖ 0 ‖ code), with the secret outside the database.
    const secret = readFileSync(server.config.secretFile);
    expect(stored.includes(secret)).toBe(false);
    const db = new Database(server.config.databasePath, { readonly: true });
    try {
      const columns = db
        .prepare("SELECT name FROM pragma_table_info('verification_sessions')")
        .all()
        .map((c) => (c as { name: string }).name);
      expect(columns).not.toContain('code');
      for (const s of sessions) {
        const row = db.prepare('SELECT code_hash FROM verification_sessions WHERE id = ?').get(s.id) as {
          code_hash: Buffer;
        };
        const expected = createHmac('sha256', secret).update(s.id).update('\0').update(s.code).digest();
        expect(Buffer.from(row.code_hash).equals(expected)).toBe(true);
      }
    } finally {
      db.close();
    }
  });

  it('a code submitted more than 10 minutes after it was sent is refused with 410 (server clock moved)', async () => {
    const session = await startOk(server);
    // The standalone server reads Date.now(); only Date is faked, timers and I/O stay real.
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + 10 * MINUTE + 1000 });
    try {
      const res = await submit(server, session.id, session.code);
      expect(res.status, JSON.stringify(res.body)).toBe(410);
      expect(res.body.error.code).toBe('code_expired');
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('resend cool-down', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ HUSH_VERIFY_RESEND_COOLDOWN_SECONDS: '30' });
  });
  afterAll(async () => {
    await server.close();
  });

  it('a second code for the same number within 30 s is refused with 429 and Retry-After; no code is sent', async () => {
    const number = freshNumber();
    await startOk(server, number);
    const again = await start(server, `+1 ${number.slice(2, 5)} ${number.slice(5)}`); // the same number, written differently
    expectRateLimited(again, 30);
    expect(sessionsFor(server, number)).toBe(1);
    expect(codesSentTo(server, number)).toBe(1);
    // Another number is not held back by this one's cool-down.
    await startOk(server);
  });
});

describe('hourly limits', () => {
  let perNumber: TestServer;
  let perClient: TestServer;
  beforeAll(async () => {
    perNumber = await startTestServer({ HUSH_VERIFY_PER_NUMBER_PER_HOUR: '3' });
    perClient = await startTestServer({ HUSH_VERIFY_PER_CLIENT_PER_HOUR: '3' });
  });
  afterAll(async () => {
    await perNumber.close();
    await perClient.close();
  });

  it('per number: the 4th session in an hour is 429 with Retry-After, whatever the spelling; other numbers go on', async () => {
    const number = freshNumber();
    const spaced = `+1 ${number.slice(2, 5)} ${number.slice(5, 8)} ${number.slice(8)}`;
    await startOk(perNumber, number);
    await startOk(perNumber, spaced);
    await startOk(perNumber, number);
    const retryAfter = expectRateLimited(await start(perNumber, spaced), 3600);
    expect(retryAfter).toBeGreaterThan(3500);
    expectRateLimited(await start(perNumber, number), 3600);
    expect(sessionsFor(perNumber, number)).toBe(3);
    expect(codesSentTo(perNumber, number)).toBe(3);
    await startOk(perNumber);
  });

  it('per client address: the 4th session in an hour from one address is 429 with Retry-After', async () => {
    for (let i = 0; i < 3; i++) await startOk(perClient);
    const number = freshNumber();
    const retryAfter = expectRateLimited(await start(perClient, number), 3600);
    expect(retryAfter).toBeGreaterThan(3500);
    expect(sessionsFor(perClient, number)).toBe(0);
    expect(codesSentTo(perClient, number)).toBe(0);
  });
});

describe('code expiry and session age, on the core with a set clock', () => {
  /** The clock the core reads; the test moves it. */
  class SetClock implements Clock {
    constructor(public time: number) {}
    now(): number {
      return this.time;
    }
  }
  /** Records codes instead of sending texts. */
  class RecordingSms implements SmsSender {
    readonly sent: { number: string; code: string }[] = [];
    async sendVerificationCode(number: string, code: string): Promise<void> {
      this.sent.push({ number, code });
    }
  }

  let storage: SqliteStorage;
  afterEach(() => storage?.close());

  function makeCore(clock: Clock, sms: SmsSender) {
    storage = SqliteStorage.open(':memory:');
    return createCore({
      storage,
      sms,
      push: { wake: async () => {} },
      notifier: { notify: async () => false, disconnect: async () => {} },
      clock,
      codeSecret: new Uint8Array(32).fill(7),
      verificationLimits: { resendCooldownMs: 0, perNumberPerHour: 100, perClientPerHour: 100 },
    });
  }

  it('a code is accepted up to 10 minutes after sending and refused (410, even the right one) after', async () => {
    const clock = new SetClock(1_700_000_000_000);
    const sms = new RecordingSms();
    const core = makeCore(clock, sms);

    const onTime = await core.verification.startSession('+1 415 555 2671', '127.0.0.1');
    const late = await core.verification.startSession('+1 415 555 2672', '127.0.0.1');
    expect(onTime.expiresAt).toBe(clock.time + 10 * MINUTE);
    const [onTimeCode, lateCode] = sms.sent.map((s) => s.code) as [string, string];

    clock.time += 10 * MINUTE;
    await expect(core.verification.submitCode(onTime.id, onTimeCode)).resolves.toMatchObject({ verified: true });
    clock.time += 1;
    await expect(core.verification.submitCode(late.id, lateCode)).rejects.toMatchObject({
      status: 410,
      code: 'code_expired',
    });
    // Wrong codes after expiry are refused the same way and do not count.
    await expect(core.verification.submitCode(late.id, '000000')).rejects.toMatchObject({ status: 410 });
    expect((await storage.getVerificationSession(late.id))?.verified).toBe(false);
  });

  it('a verified session can create the account for an hour after it was started, not later', async () => {
    const clock = new SetClock(1_700_000_000_000);
    const sms = new RecordingSms();
    const core = makeCore(clock, sms);
    const keysFor = async () => {
      const identity = await IdentityKeyPair.generate(crypto);
      const signed = await SignedPreKeyRecord.generate(crypto, identity, 1);
      const lastResort = await KyberPreKeyRecord.generate(crypto, identity, 2);
      return {
        password: 'a-long-random-device-password',
        identityKey: identity.publicKey.serialize(),
        registrationId: 42,
        signedPreKey: { keyId: 1, publicKey: signed.keyPair.publicKey.serialize(), signature: signed.signature },
        pqLastResortPreKey: {
          keyId: 2,
          publicKey: lastResort.keyPair.publicKey.serialize(),
          signature: lastResort.signature,
        },
      };
    };
    const a = await core.verification.startSession('+14155552671', 'client');
    const b = await core.verification.startSession('+14155552672', 'client');
    for (const [i, s] of [a, b].entries()) await core.verification.submitCode(s.id, sms.sent[i]?.code as string);

    clock.time += 60 * MINUTE;
    await expect(core.accounts.register({ verificationSessionId: a.id, ...(await keysFor()) })).resolves.toMatchObject({
      number: '+14155552671',
    });
    clock.time += 1;
    await expect(core.accounts.register({ verificationSessionId: b.id, ...(await keysFor()) })).rejects.toMatchObject({
      status: 410,
      code: 'verification_session_expired',
    });
    expect(await storage.getAccountByNumber('+14155552672')).toBeNull();
  });

  it('the hourly windows open again after an hour', async () => {
    const clock = new SetClock(1_700_000_000_000);
    const sms = new RecordingSms();
    storage = SqliteStorage.open(':memory:');
    const core = createCore({
      storage,
      sms,
      push: { wake: async () => {} },
      notifier: { notify: async () => false, disconnect: async () => {} },
      clock,
      codeSecret: new Uint8Array(32),
      verificationLimits: { resendCooldownMs: 30_000, perNumberPerHour: 3, perClientPerHour: 100 },
    });
    await core.verification.startSession('+14155552671', 'c');
    // Cool-down: 30 s. (A refused request still counts towards the hourly limit.)
    clock.time += 29_999;
    await expect(core.verification.startSession('+14155552671', 'c')).rejects.toMatchObject({
      status: 429,
      retryAfterSeconds: 1,
    });
    clock.time += 1;
    await core.verification.startSession('+14155552671', 'c');
    // Per number: the 4th request in the hour is refused until the hour that began with the 1st is over.
    clock.time += 30_000;
    await expect(core.verification.startSession('+14155552671', 'c')).rejects.toMatchObject({
      status: 429,
      code: 'rate_limited',
      retryAfterSeconds: 60 * 60 - 60,
    });
    clock.time = 1_700_000_000_000 + 60 * MINUTE - 1;
    await expect(core.verification.startSession('+14155552671', 'c')).rejects.toMatchObject({ status: 429 });
    clock.time += 1;
    await expect(core.verification.startSession('+14155552671', 'c')).resolves.toMatchObject({
      number: '+14155552671',
    });
    expect(sms.sent).toHaveLength(3);
  });
});
