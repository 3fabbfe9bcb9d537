process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

import {
  type KeyObject,
  createDecipheriv,
  createECDH,
  createPublicKey,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  sign,
  verify,
} from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent, type Server, createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SNSClient } from '@aws-sdk/client-sns';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DevPushSender } from '../src/push/dev-push-sender.ts';
import { WAKE_PAYLOAD, WebPushSender, generateVapidKeys, parsePushSubscription } from '../src/push/web-push-sender.ts';
import { DevSmsSender, readLatestDevCode } from '../src/sms/dev-sms-sender.ts';
import { SmsDeliveryError, SnsSmsSender } from '../src/sms/sns-sms-sender.ts';
import { SNS_INTERNAL_ERROR, SNS_INVALID_PARAMETER, SNS_THROTTLED, SnsFake } from './fakes/sns-fake.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hush-senders-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('DevSmsSender', () => {
  it('prints the code and appends one JSON line per code; readLatestDevCode reads the newest per number', async () => {
    const file = join(dir, 'sms-1', 'nested', 'dev-sms.log');
    const printed: string[] = [];
    let t = 1_000;
    const sender = new DevSmsSender(file, { output: (line) => printed.push(line), now: () => t++ });

    expect(await readLatestDevCode(file, '+14155550123')).toBeUndefined();
    await sender.sendVerificationCode('+14155550123', '111111');
    await sender.sendVerificationCode('+447700900123', '222222');
    await sender.sendVerificationCode('+14155550123', '333333');

    expect(printed).toEqual([
      '[dev sms] +14155550123 code 111111',
      '[dev sms] +447700900123 code 222222',
      '[dev sms] +14155550123 code 333333',
    ]);
    const lines = (await readFile(file, 'utf8')).trimEnd().split('\n');
    expect(lines.map((l) => JSON.parse(l))).toEqual([
      { number: '+14155550123', code: '111111', sentAt: 1000 },
      { number: '+447700900123', code: '222222', sentAt: 1001 },
      { number: '+14155550123', code: '333333', sentAt: 1002 },
    ]);
    expect(await readLatestDevCode(file, '+14155550123')).toBe('333333');
    expect(await readLatestDevCode(file, '+447700900123')).toBe('222222');
    expect(await readLatestDevCode(file, '+4915112345678')).toBeUndefined();
  });

  it('writes to a stream, keeps concurrent sends whole and in order, and skips a torn line', async () => {
    const file = join(dir, 'sms-2', 'dev-sms.log');
    let out = '';
    const sender = new DevSmsSender(file, { output: { write: (s: string) => (out += s) } });
    const codes = Array.from({ length: 50 }, (_, i) => String(100000 + i));
    await Promise.all(codes.map((code) => sender.sendVerificationCode('+14155550123', code)));

    const records = (await readFile(file, 'utf8'))
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(records.map((r) => r.code)).toEqual(codes);
    expect(out.trimEnd().split('\n')).toHaveLength(50);
    expect(await readLatestDevCode(file, '+14155550123')).toBe('100049');

    // A half-written last line (e.g. a crash mid-append by some other writer) is ignored.
    await writeFile(file, '{"number":"+14155550123","code":"99', { flag: 'a' });
    expect(await readLatestDevCode(file, '+14155550123')).toBe('100049');
  });

  it('a second sender (another process, say) appends to the same file', async () => {
    const file = join(dir, 'sms-3', 'dev-sms.log');
    const quiet = { output: () => {} };
    await new DevSmsSender(file, quiet).sendVerificationCode('+14155550123', '123456');
    await new DevSmsSender(file, quiet).sendVerificationCode('+14155550123', '654321');
    expect(await readLatestDevCode(file, '+14155550123')).toBe('654321');
  });
});

describe('SnsSmsSender against the local SNS fake', () => {
  let sns: SnsFake;
  const client = (maxAttempts = 1) =>
    new SNSClient({
      region: 'us-east-1',
      endpoint: sns.endpoint,
      credentials: { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local-test-secret' },
      maxAttempts,
    });

  beforeAll(async () => {
    sns = await SnsFake.start();
  });
  afterAll(async () => {
    await sns.close();
  });
  beforeEach(() => {
    sns.published.length = 0;
    sns.requests.length = 0;
  });

  it('publishes a transactional SMS with the number and the code', async () => {
    await new SnsSmsSender(client()).sendVerificationCode('+14155550123', '123456');
    expect(sns.published).toHaveLength(1);
    const [sent] = sns.published;
    expect(sent?.phoneNumber).toBe('+14155550123');
    expect(sent?.message).toBe('Your Hush code: 123456');
    expect(sent?.messageAttributes).toEqual({
      'AWS.SNS.SMS.SMSType': { dataType: 'String', stringValue: 'Transactional' },
    });
    expect(sent?.authorization).toMatch(
      /^AWS4-HMAC-SHA256 Credential=AKIDLOCALTEST\/\d{8}\/us-east-1\/sns\/aws4_request/,
    );
    expect(sns.requests).toEqual([expect.objectContaining({ action: 'Publish', status: 200 })]);
  });

  it('sets the sender ID when one is configured, and rejects a malformed one', async () => {
    await new SnsSmsSender(client(), { senderId: 'Hush' }).sendVerificationCode('+447700900123', '000042');
    expect(sns.published[0]?.messageAttributes['AWS.SNS.SMS.SenderID']).toEqual({
      dataType: 'String',
      stringValue: 'Hush',
    });
    expect(sns.published[0]?.messageAttributes['AWS.SNS.SMS.SMSType']?.stringValue).toBe('Transactional');
    expect(() => new SnsSmsSender(client(), { senderId: 'Hush Messenger!' })).toThrow(/sender ID/);
    expect(() => new SnsSmsSender(client(), { senderId: '123456' })).toThrow(/sender ID/);
  });

  it('an SNS error surfaces as a thrown SmsDeliveryError that names neither number nor code', async () => {
    sns.failNext(SNS_INVALID_PARAMETER);
    const error = await new SnsSmsSender(client()).sendVerificationCode('+14155550123', '987654').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(SmsDeliveryError);
    expect(error).toMatchObject({ code: 'InvalidParameter', retryable: false, httpStatus: 400 });
    expect((error as Error).message).not.toMatch(/987654|4155550123/);
    expect(sns.published).toHaveLength(0);
  });

  it('the fake itself rejects what SNS rejects (a number that is not E.164)', async () => {
    const error = await new SnsSmsSender(client()).sendVerificationCode('4155550123', '111111').catch((e) => e);
    expect(error).toMatchObject({ name: 'SmsDeliveryError', code: 'InvalidParameter', httpStatus: 400 });
  });

  it('throttling is a retryable error', async () => {
    sns.failNext(SNS_THROTTLED);
    const error = await new SnsSmsSender(client()).sendVerificationCode('+14155550123', '111111').catch((e) => e);
    expect(error).toBeInstanceOf(SmsDeliveryError);
    expect(error).toMatchObject({ code: 'Throttled', retryable: true, httpStatus: 429 });
  });

  it('a 500 is retryable; a client with retries gets the SMS through on the next attempt', async () => {
    sns.failNext(SNS_INTERNAL_ERROR);
    const once = await new SnsSmsSender(client(1)).sendVerificationCode('+14155550123', '111111').catch((e) => e);
    expect(once).toMatchObject({ code: 'InternalError', retryable: true, httpStatus: 500 });

    sns.requests.length = 0;
    sns.failNext(SNS_INTERNAL_ERROR);
    await new SnsSmsSender(client(3)).sendVerificationCode('+14155550123', '222222');
    expect(sns.requests.map((r) => r.status)).toEqual([500, 200]);
    expect(sns.published.map((p) => p.message)).toEqual(['Your Hush code: 222222']);
  });

  it('an unreachable SNS endpoint is a retryable error', async () => {
    const gone = await SnsFake.start();
    const endpoint = gone.endpoint;
    await gone.close();
    const unreachable = new SNSClient({
      region: 'us-east-1',
      endpoint,
      credentials: { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local-test-secret' },
      maxAttempts: 1,
    });
    const error = await new SnsSmsSender(unreachable).sendVerificationCode('+14155550123', '111111').catch((e) => e);
    expect(error).toMatchObject({ name: 'SmsDeliveryError', code: 'ECONNREFUSED', retryable: true });
  });
});

describe('DevPushSender', () => {
  it('records only account id, device id and time, in memory and in the file', async () => {
    const file = join(dir, 'push', 'dev-push.log');
    let t = 5_000;
    const push = new DevPushSender({ file, now: () => t++ });
    const subscription = JSON.stringify({
      endpoint: 'https://push.example/secret-capability',
      keys: { p256dh: 'p256dh-value', auth: 'auth-value' },
    });
    await push.wake({ accountId: 'acc-1', deviceId: 1, pushSubscription: subscription });
    await push.wake({ accountId: 'acc-2', deviceId: 3 });

    expect(push.wakes).toEqual([
      { accountId: 'acc-1', deviceId: 1, at: 5000 },
      { accountId: 'acc-2', deviceId: 3, at: 5001 },
    ]);
    expect(push.wakesFor('acc-1', 1)).toEqual([{ accountId: 'acc-1', deviceId: 1, at: 5000 }]);
    const text = await readFile(file, 'utf8');
    expect(text).not.toMatch(/secret-capability|p256dh|auth-value/);
    expect(
      text
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l)),
    ).toEqual(push.wakes);
    push.clear();
    expect(push.wakes).toEqual([]);
  });

  it('never throws, also when the file cannot be written', async () => {
    const blocker = join(dir, 'not-a-dir');
    await writeFile(blocker, 'x');
    const warnings: unknown[] = [];
    const push = new DevPushSender({ file: join(blocker, 'dev-push.log'), logger: { warn: (o) => warnings.push(o) } });
    await expect(push.wake({ accountId: 'acc-1', deviceId: 2 })).resolves.toBeUndefined();
    expect(push.wakes).toHaveLength(1);
    expect(warnings).toEqual([expect.objectContaining({ accountId: 'acc-1', deviceId: 2 })]);
  });
});

describe('WebPushSender against a local push service', () => {
  interface PushRequest {
    method: string;
    path: string;
    headers: Record<string, string | string[] | undefined>;
    body: Buffer;
  }
  let server: Server;
  let origin: string;
  let agent: Agent;
  const requests: PushRequest[] = [];
  const vapid = { subject: 'mailto:ops@hush.invalid', ...generateVapidKeys() };
  // The browser's side of the subscription: a P-256 key pair and a 16-byte auth secret.
  const ua = createECDH('prime256v1');
  ua.generateKeys();
  const auth = randomBytes(16);
  const subscriptionFor = (path: string) =>
    JSON.stringify({
      endpoint: `${origin}${path}`,
      expirationTime: null,
      keys: { p256dh: ua.getPublicKey().toString('base64url'), auth: auth.toString('base64url') },
    });

  let logLines: Record<string, unknown>[];
  let gone: [string, number][];
  const sender = (options: Partial<ConstructorParameters<typeof WebPushSender>[0]> = {}) => {
    const logger = pino({ level: 'debug' }, { write: (line: string) => logLines.push(JSON.parse(line)) });
    return new WebPushSender({
      vapid,
      logger,
      agent,
      timeoutMs: 1000,
      onSubscriptionGone: (accountId, deviceId) => {
        gone.push([accountId, deviceId]);
      },
      ...options,
    });
  };

  beforeAll(async () => {
    // web-push speaks HTTPS only, so the push service gets a self-signed certificate for 127.0.0.1.
    const { cert, key } = selfSignedCertificate();
    agent = new Agent({ ca: cert });
    server = createServer({ cert, key }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const path = req.url ?? '';
        requests.push({ method: req.method ?? '', path, headers: req.headers, body: Buffer.concat(chunks) });
        if (path.startsWith('/push/hang')) return; // never answers
        const status = path.startsWith('/push/gone')
          ? 410
          : path.startsWith('/push/notfound')
            ? 404
            : path.startsWith('/push/fail')
              ? 500
              : 201;
        res.writeHead(status, { location: `${origin}/message/1` });
        res.end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    origin = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    agent.destroy();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  beforeEach(() => {
    requests.length = 0;
    logLines = [];
    gone = [];
  });
  afterEach(() => {
    // Nothing the sender logs may carry the endpoint (a capability URL) or the subscription keys.
    const logged = JSON.stringify(logLines);
    expect(logged).not.toContain('/push/');
    expect(logged).not.toContain(auth.toString('base64url'));
  });

  it('sends a VAPID-signed, aes128gcm-encrypted wake-up that carries no content', async () => {
    await sender().wake({ accountId: 'acc-1', deviceId: 2, pushSubscription: subscriptionFor('/push/ok/abc') });

    expect(requests).toHaveLength(1);
    const [request] = requests as [PushRequest];
    expect(request.method).toBe('POST');
    expect(request.path).toBe('/push/ok/abc');
    expect(request.headers.ttl).toBe(String(7 * 24 * 3600));
    expect(request.headers.urgency).toBe('high');
    expect(request.headers.topic).toBe('hush-wake');
    expect(request.headers['content-encoding']).toBe('aes128gcm');
    expect(request.headers['content-type']).toBe('application/octet-stream');

    // VAPID (RFC 8292): "vapid t=<JWT signed ES256 by the VAPID key>, k=<VAPID public key>".
    const authorization = String(request.headers.authorization);
    const match = /^vapid t=([\w-]+)\.([\w-]+)\.([\w-]+), k=([\w-]+)$/.exec(authorization);
    expect(match).not.toBeNull();
    const [, header, claims, signature, k] = match as unknown as string[];
    expect(k).toBe(vapid.publicKey);
    expect(JSON.parse(Buffer.from(header as string, 'base64url').toString())).toEqual({ typ: 'JWT', alg: 'ES256' });
    const jwt = JSON.parse(Buffer.from(claims as string, 'base64url').toString());
    expect(jwt.aud).toBe(origin);
    expect(jwt.sub).toBe(vapid.subject);
    expect(jwt.exp).toBeGreaterThan(Date.now() / 1000);
    const signedBy = p256PublicKey(Buffer.from(vapid.publicKey, 'base64url'));
    const valid = verify(
      'sha256',
      Buffer.from(`${header}.${claims}`),
      { key: signedBy, dsaEncoding: 'ieee-p1363' },
      Buffer.from(signature as string, 'base64url'),
    );
    expect(valid).toBe(true);

    // The body is ciphertext for our key; decrypted it is only the wake-up marker.
    expect(request.body.length).toBeLessThan(200);
    expect(request.body.includes(Buffer.from('wake'))).toBe(false);
    expect(decryptAes128gcm(request.body, ua, auth).toString('utf8')).toBe(WAKE_PAYLOAD);
    expect(JSON.parse(WAKE_PAYLOAD)).toEqual({ type: 'wake' });

    expect(gone).toEqual([]);
    expect(logLines).toEqual([]);
  });

  it('a 410 or 404 from the push service reports the subscription as gone', async () => {
    const push = sender();
    await push.wake({ accountId: 'acc-1', deviceId: 2, pushSubscription: subscriptionFor('/push/gone/1') });
    await push.wake({ accountId: 'acc-3', deviceId: 1, pushSubscription: subscriptionFor('/push/notfound/1') });
    expect(requests.map((r) => r.path)).toEqual(['/push/gone/1', '/push/notfound/1']);
    expect(gone).toEqual([
      ['acc-1', 2],
      ['acc-3', 1],
    ]);
    expect(logLines).toEqual([]);
  });

  it('a failing onSubscriptionGone is logged, not thrown', async () => {
    const push = sender({
      onSubscriptionGone: async () => {
        throw new Error('database is down');
      },
    });
    await expect(
      push.wake({ accountId: 'acc-1', deviceId: 2, pushSubscription: subscriptionFor('/push/gone/2') }),
    ).resolves.toBeUndefined();
    expect(logLines).toEqual([expect.objectContaining({ level: 40, accountId: 'acc-1', deviceId: 2 })]);
    expect(String(logLines[0]?.err)).toContain('database is down');
  });

  it('other failures are logged and never thrown: a 500, an unanswered request, an unreachable host', async () => {
    const push = sender({ timeoutMs: 300 });
    await push.wake({ accountId: 'acc-1', deviceId: 1, pushSubscription: subscriptionFor('/push/fail/1') });
    await push.wake({ accountId: 'acc-1', deviceId: 2, pushSubscription: subscriptionFor('/push/hang/1') });
    const closed = await closedPort();
    await push.wake({
      accountId: 'acc-1',
      deviceId: 3,
      pushSubscription: subscriptionFor('/push/x').replace(origin, `https://127.0.0.1:${closed}`),
    });
    expect(gone).toEqual([]);
    expect(logLines).toHaveLength(3);
    expect(logLines[0]).toMatchObject({ level: 40, accountId: 'acc-1', deviceId: 1, statusCode: 500 });
    expect(logLines[1]).toMatchObject({ level: 40, deviceId: 2, err: expect.stringContaining('timeout') });
    expect(logLines[2]).toMatchObject({ level: 40, deviceId: 3, err: expect.stringContaining('ECONNREFUSED') });
  });

  it('a device without a subscription is a no-op; an unusable or disallowed subscription is skipped', async () => {
    const push = sender();
    await push.wake({ accountId: 'acc-1', deviceId: 1 });
    expect(logLines).toEqual([]);
    await push.wake({ accountId: 'acc-1', deviceId: 1, pushSubscription: 'not json' });
    await push.wake({
      accountId: 'acc-1',
      deviceId: 1,
      pushSubscription: subscriptionFor('/push/ok/plain').replace('https:', 'http:'),
    });
    await sender({ allowEndpoint: (url) => url.hostname === 'fcm.googleapis.com' }).wake({
      accountId: 'acc-1',
      deviceId: 1,
      pushSubscription: subscriptionFor('/push/ok/other-host'),
    });
    expect(requests).toEqual([]);
    expect(logLines).toHaveLength(3);
  });

  it('parsePushSubscription accepts a browser subscription and rejects malformed ones', () => {
    const good = JSON.parse(subscriptionFor('/push/ok/p'));
    expect(parsePushSubscription(JSON.stringify(good))).toEqual({ endpoint: good.endpoint, keys: good.keys });
    const with_ = (patch: object) => JSON.stringify({ ...good, ...patch });
    expect(parsePushSubscription(with_({ endpoint: 'ftp://x/y' }))).toBeNull();
    expect(parsePushSubscription(with_({ keys: { p256dh: good.keys.p256dh } }))).toBeNull();
    expect(parsePushSubscription(with_({ keys: { ...good.keys, auth: 'c2hvcnQ' } }))).toBeNull();
    expect(
      parsePushSubscription(with_({ keys: { ...good.keys, p256dh: randomBytes(33).toString('base64url') } })),
    ).toBeNull();
    expect(parsePushSubscription('null')).toBeNull();
  });

  it('generateVapidKeys gives a P-256 key pair; bad VAPID details fail at construction', () => {
    const keys = generateVapidKeys();
    expect(Buffer.from(keys.publicKey, 'base64url')).toHaveLength(65);
    expect(Buffer.from(keys.privateKey, 'base64url')).toHaveLength(32);
    expect(() => new WebPushSender({ vapid: { ...keys, subject: 'ops@hush' } })).toThrow();
    expect(
      () => new WebPushSender({ vapid: { ...keys, subject: 'mailto:ops@hush.invalid', privateKey: 'AAAA' } }),
    ).toThrow();
  });
});

/** RFC 8291 / RFC 8188: decrypts a single-record aes128gcm Web Push body with the subscriber's keys. */
function decryptAes128gcm(body: Buffer, ua: ReturnType<typeof createECDH>, auth: Buffer): Buffer {
  const salt = body.subarray(0, 16);
  const recordSize = body.readUInt32BE(16);
  const idLength = body.readUInt8(20);
  const asPublic = body.subarray(21, 21 + idLength);
  const record = body.subarray(21 + idLength);
  expect(idLength).toBe(65);
  expect(record.length).toBeLessThanOrEqual(recordSize);

  const ecdhSecret = ua.computeSecret(asPublic);
  const keyInfo = Buffer.concat([Buffer.from('WebPush: info\0'), ua.getPublicKey(), asPublic]);
  const ikm = Buffer.from(hkdfSync('sha256', ecdhSecret, auth, keyInfo, 32));
  const cek = Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: aes128gcm\0'), 16));
  const nonce = Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: nonce\0'), 12));
  const decipher = createDecipheriv('aes-128-gcm', cek, nonce);
  decipher.setAuthTag(record.subarray(record.length - 16));
  const padded = Buffer.concat([decipher.update(record.subarray(0, record.length - 16)), decipher.final()]);
  // Last record: content ‖ 0x02 ‖ zero padding.
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end--;
  expect(padded[end]).toBe(2);
  return padded.subarray(0, end);
}

function p256PublicKey(uncompressed: Buffer): KeyObject {
  return createPublicKey({
    key: {
      kty: 'EC',
      crv: 'P-256',
      x: uncompressed.subarray(1, 33).toString('base64url'),
      y: uncompressed.subarray(33, 65).toString('base64url'),
    },
    format: 'jwk',
  });
}

async function closedPort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/**
 * A throwaway self-signed ECDSA P-256 certificate for IP 127.0.0.1, valid for one day, built with
 * node:crypto (a minimal DER X.509 v3 encoder) so the test needs no openssl binary.
 */
function selfSignedCertificate(): { cert: string; key: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const tlv = (tag: number, ...parts: Buffer[]) => {
    const content = Buffer.concat(parts);
    const n = content.length;
    const length =
      n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : Buffer.from([0x82, n >> 8, n & 0xff]);
    return Buffer.concat([Buffer.from([tag]), length, content]);
  };
  const seq = (...parts: Buffer[]) => tlv(0x30, ...parts);
  const oid = (dotted: string) => {
    const [a = 0, b = 0, ...rest] = dotted.split('.').map(Number);
    const bytes = [40 * a + b];
    for (const arc of rest) {
      const base128 = [arc & 0x7f];
      for (let v = arc >> 7; v > 0; v >>= 7) base128.unshift((v & 0x7f) | 0x80);
      bytes.push(...base128);
    }
    return tlv(0x06, Buffer.from(bytes));
  };
  const utcTime = (d: Date) => tlv(0x17, Buffer.from(`${d.toISOString().slice(2, 19).replace(/[-T:]/g, '')}Z`));
  const ecdsaWithSha256 = seq(oid('1.2.840.10045.4.3.2'));
  const name = seq(tlv(0x31, seq(oid('2.5.4.3'), tlv(0x0c, Buffer.from('hush test push service')))));
  const day = 24 * 3600 * 1000;
  const serial = randomBytes(8);
  serial[0] = (serial[0] ?? 0) & 0x7f;
  const tbs = seq(
    tlv(0xa0, tlv(0x02, Buffer.from([2]))),
    tlv(0x02, serial),
    ecdsaWithSha256,
    name,
    seq(utcTime(new Date(Date.now() - day)), utcTime(new Date(Date.now() + day))),
    name,
    publicKey.export({ type: 'spki', format: 'der' }),
    tlv(
      0xa3,
      seq(
        seq(oid('2.5.29.19'), tlv(0x01, Buffer.from([0xff])), tlv(0x04, seq(tlv(0x01, Buffer.from([0xff]))))),
        seq(oid('2.5.29.17'), tlv(0x04, seq(tlv(0x87, Buffer.from([127, 0, 0, 1]))))),
      ),
    ),
  );
  const signature = sign('sha256', tbs, privateKey);
  const der = seq(tbs, ecdsaWithSha256, tlv(0x03, Buffer.from([0]), signature));
  const pem = `-----BEGIN CERTIFICATE-----\n${der
    .toString('base64')
    .replace(/.{64}/g, '$&\n')
    .trimEnd()}\n-----END CERTIFICATE-----\n`;
  return { cert: pem, key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}
