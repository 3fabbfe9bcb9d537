/**
 * Bad input on every route of the API, over real HTTP against the real standalone server: each
 * request gets a 4xx with a JSON `{error: {code, message}}`, never a 5xx, and changes nothing (the
 * whole SQLite database, the attachment files, the dev SMS log, and what the API reports).
 *
 * The routes come from the server's own /openapi.json at test time: a route added without
 * bad-input cases here fails the coverage test.
 */
import { createECDH, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { join, relative } from 'node:path';
import { IdentityKeyPair } from '@hush/protocol';
import { nodeCrypto as crypto } from '@hush/protocol/node';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readLatestDevCode } from '../src/sms/dev-sms-sender.ts';
import { TestDevice, type TestServer, api, b64, devSmsFile, freshNumber, startTestServer } from './support/harness.ts';

type Res = { status: number; body: any; headers: Headers | Record<string, string | string[] | undefined> };

interface Ctx {
  server: TestServer;
  alice: TestDevice;
  bob: TestDevice;
  /** An envelope in Bob's queue (from Alice). */
  bobGuid: string;
  /** A verified, not yet used verification session, and its number. */
  verified: { id: string; number: string };
  /** A started session whose code was never submitted. */
  unverified: { id: string; number: string };
  /** A registration body that would succeed with `verified`. */
  registration: Record<string, any>;
  /** Valid keys signed by Alice's identity, and keys signed by Bob's (another identity). */
  aliceKeys: Awaited<ReturnType<TestDevice['generateKeys']>>;
  bobKeys: Awaited<ReturnType<TestDevice['generateKeys']>>;
  /** A PUT /v1/devices/link body that would link a device to Alice's account with a valid code. */
  link: Record<string, any>;
}

interface Case {
  name: string;
  send: (ctx: Ctx) => Promise<Res>;
  status: number;
  /** The expected `error.code`, when the route promises a specific one. */
  code?: string;
}

const MAX_JSON_BODY = 512 * 1024;
const MAX_MESSAGE_BYTES = 96 * 1024;
const MAX_ATTACHMENT_BYTES = 100 * 1024 * 1024;

const bytes = (...parts: (number[] | Uint8Array)[]) => Buffer.concat(parts.map((p) => Buffer.from(p)));
/** A well-formed EC key with the wrong type byte, a truncated one, a Kyber key with the wrong type byte... */
const ecKey = (typeByte = 0x05, length = 33) => b64(bytes([typeByte], randomBytes(length - 1)));
const kyberKey = (typeByte = 0x08, length = 1569) => b64(bytes([typeByte], randomBytes(length - 1)));

// ---- requests -------------------------------------------------------------------------------

/** A raw HTTP request on a connection of its own (so an early answer cannot disturb other requests). */
function rawHttp(
  server: { url: string },
  method: string,
  path: string,
  options: { headers?: Record<string, string | number>; body?: Buffer | string; chunks?: Iterable<Buffer> } = {},
): Promise<Res> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = httpRequest(`${server.url}${path}`, { method, agent: false, headers: options.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        answered = true;
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try {
          body = text ? JSON.parse(text) : null;
        } catch {
          // not JSON: keep the text
        }
        resolve({ status: res.statusCode ?? 0, body, headers: res.headers });
        req.destroy();
      });
    });
    // After an early answer the server may stop reading; the rest of the upload is moot then.
    req.on('error', (error) => {
      if (!answered) reject(error);
    });
    if (options.chunks) {
      (async () => {
        for (const chunk of options.chunks ?? []) {
          if (answered || req.destroyed) return;
          if (!req.write(chunk)) await new Promise((r) => req.once('drain', r));
        }
        req.end();
      })().catch(() => {});
    } else {
      req.end(options.body);
    }
  });
}

const contentTypeOf = (res: Res) =>
  res.headers instanceof Headers ? res.headers.get('content-type') : String(res.headers['content-type'] ?? '');

type Auth = (ctx: Ctx) => TestDevice | undefined;
const asAlice: Auth = (ctx) => ctx.alice;
const anonymous: Auth = () => undefined;

/** A JSON request with `body` as the caller wrote it. */
const json = (ctx: Ctx, method: string, path: string, body: unknown, auth: Auth) => {
  const device = auth(ctx);
  return api(ctx.server, method, path, { body, ...(device ? { auth: device } : {}) });
};

/** A request with a raw body and content type. */
const raw = (ctx: Ctx, method: string, path: string, text: string, contentType: string | undefined, auth: Auth) => {
  const device = auth(ctx);
  return api(ctx.server, method, path, {
    rawBody: text,
    headers: { ...(contentType ? { 'content-type': contentType } : {}) },
    ...(device ? { auth: device } : {}),
  });
};

/**
 * The cases every JSON-body route must reject: broken JSON, JSON that is not an object, wrong
 * content types, and a body over 512 KiB, declared or streamed.
 */
function jsonBodyCases(
  method: string,
  path: (ctx: Ctx) => string,
  auth: Auth,
  validBody: (ctx: Ctx) => unknown,
): Case[] {
  const malformed = ['{', '{"a":', "{'a': 1}", '{"a": 1,}', 'nul', '\u0000', '{}}'];
  const notObjects = ['null', '[]', '"text"', '42', 'true'];
  const oversized = (ctx: Ctx) => {
    // Valid JSON, just too big.
    const body = JSON.stringify({ ...(validBody(ctx) as object), padding: 'x'.repeat(MAX_JSON_BODY) });
    const device = auth(ctx);
    return {
      body,
      headers: { 'content-type': 'application/json', ...(device ? { authorization: device.authorization } : {}) },
    };
  };
  return [
    ...malformed.map(
      (text): Case => ({
        name: `malformed JSON ${JSON.stringify(text)}`,
        send: (ctx) => raw(ctx, method, path(ctx), text, 'application/json', auth),
        status: 400,
        code: 'invalid_request',
      }),
    ),
    {
      name: 'an empty body declared as JSON',
      send: (ctx) => raw(ctx, method, path(ctx), '', 'application/json', auth),
      status: 400,
      code: 'invalid_request',
    },
    ...notObjects.map(
      (text): Case => ({
        name: `JSON that is not an object: ${text}`,
        send: (ctx) => raw(ctx, method, path(ctx), text, 'application/json', auth),
        status: 400,
        code: 'invalid_request',
      }),
    ),
    ...['text/plain', 'application/x-www-form-urlencoded', 'application/octet-stream', 'application/xml'].map(
      (type): Case => ({
        name: `a valid body sent as ${type}`,
        send: (ctx) => raw(ctx, method, path(ctx), JSON.stringify(validBody(ctx)), type, auth),
        status: 415,
      }),
    ),
    {
      name: 'a valid body without a content type',
      send: (ctx) => raw(ctx, method, path(ctx), JSON.stringify(validBody(ctx)), undefined, auth),
      status: 415,
    },
    {
      name: 'a body over 512 KiB with Content-Length',
      send: (ctx) => {
        const { body, headers } = oversized(ctx);
        return rawHttp(ctx.server, method, path(ctx), {
          body,
          headers: { ...headers, 'content-length': Buffer.byteLength(body) },
        });
      },
      status: 413,
      code: 'payload_too_large',
    },
    {
      name: 'a body over 512 KiB streamed without a length (chunked)',
      send: (ctx) => {
        const { body, headers } = oversized(ctx);
        const buffer = Buffer.from(body);
        const chunks = Array.from({ length: Math.ceil(buffer.length / 65536) }, (_, i) =>
          buffer.subarray(i * 65536, (i + 1) * 65536),
        );
        return rawHttp(ctx.server, method, path(ctx), { chunks, headers });
      },
      status: 413,
      code: 'payload_too_large',
    },
  ];
}

/** Cases that send `validBody` with one part changed; each must be rejected. */
function variants(
  method: string,
  path: (ctx: Ctx) => string,
  auth: Auth,
  validBody: (ctx: Ctx) => Record<string, any>,
  list: [name: string, change: Change, status: number, code?: string][],
): Case[] {
  return list.map(([name, change, status, code]) => ({
    name,
    send: (ctx) => {
      const body = structuredClone(validBody(ctx));
      const changed = change(body, ctx);
      return json(ctx, method, path(ctx), changed === undefined ? body : changed, auth);
    },
    status,
    ...(code ? { code } : {}),
  }));
}

/** A broken Authorization header on a route that takes no other input. */
const garbageCredentials = (method: string, path: string): Case[] =>
  ['Basic', 'Basic !!!', `Basic ${b64(Buffer.from('no-colon-here'))}`, 'Bearer abc', 'x'.repeat(2000)].map(
    (header): Case => ({
      name: `Authorization ${JSON.stringify(header.slice(0, 24))}`,
      send: (ctx) => api(ctx.server, method, path, { auth: header }),
      status: 401,
      code: 'unauthorized',
    }),
  );

type Change = (body: Record<string, any>, ctx: Ctx) => unknown;
/** The object holding `path` ("preKeys.0.keyId") in `body`, and the last key. */
function locate(body: Record<string, any>, path: string): [Record<string, any>, string] {
  const keys = path.split('.');
  const last = keys.pop() as string;
  return [keys.reduce((o, k) => o[k], body), last];
}
const setWith =
  (path: string, value: (body: Record<string, any>, ctx: Ctx) => unknown): Change =>
  (body, ctx) => {
    const [holder, key] = locate(body, path);
    holder[key] = value(body, ctx);
  };
const setAt = (path: string, value: unknown) => setWith(path, () => value);
const omit =
  (path: string): Change =>
  (body) => {
    const [holder, key] = locate(body, path);
    delete holder[key];
  };

// ---- valid bodies, each case changes one thing ---------------------------------------------

const validSend = (ctx: Ctx) => ({
  messages: [{ deviceId: 1, registrationId: ctx.bob.registrationId, type: 1, content: b64(Buffer.from('ciphertext')) }],
  timestamp: Date.now(),
});
const validMulti = (ctx: Ctx) => ({
  type: 7,
  content: b64(Buffer.from('sender-key ciphertext')),
  timestamp: Date.now(),
  recipients: [{ accountId: ctx.bob.accountId, devices: [{ deviceId: 1, registrationId: ctx.bob.registrationId }] }],
});
const validUpload = (ctx: Ctx) => structuredClone(ctx.aliceKeys) as Record<string, any>;
const validPush = () => ({
  webPush: {
    endpoint: 'https://push.example.com/send/abc',
    keys: {
      p256dh: createECDH('prime256v1').generateKeys().toString('base64url'),
      auth: randomBytes(16).toString('base64url'),
    },
  },
});
const validLink = (ctx: Ctx) => structuredClone(ctx.link);
const validProvisioning = () => ({ body: b64(randomBytes(200)) });
const provisioningAddress = randomBytes(16).toString('base64url');
const provisioningPath = () => `/v1/provisioning/${provisioningAddress}`;
/** Not provisioning addresses: too short, too long, characters outside base64url. */
const badAddresses = [
  'a'.repeat(21),
  'a'.repeat(65),
  `${'a'.repeat(22)}.`,
  `${'a'.repeat(22)}%2B`,
  `${'a'.repeat(22)}%20`,
];
const sessionPath = (ctx: Ctx) => `/v1/verification/sessions/${ctx.unverified.id}/code`;
const sendPath = (ctx: Ctx) => `/v1/messages/${ctx.bob.accountId}`;
const fixed = (path: string) => () => path;

const manyECKeys = (n: number) => Array.from({ length: n }, (_, i) => ({ keyId: 5000 + i, publicKey: ecKey() }));

/** Every route of /openapi.json, keyed `METHOD /path`, with the bad input it must reject. */
const routes: Record<string, Case[]> = {
  'POST /v1/verification/sessions': [
    ...jsonBodyCases('POST', fixed('/v1/verification/sessions'), anonymous, () => ({ number: freshNumber() })),
    ...variants('POST', fixed('/v1/verification/sessions'), anonymous, () => ({ number: freshNumber() }), [
      ['number missing', omit('number'), 400, 'invalid_request'],
      ['number as a JSON number', setAt('number', 14155552671), 400, 'invalid_request'],
      ['number null', setAt('number', null), 400, 'invalid_request'],
      ['number as an array', (b) => ({ number: [b.number] }), 400, 'invalid_request'],
      ['number empty', setAt('number', ''), 400, 'invalid_request'],
      ['number of 65 characters', setAt('number', `+1${'4'.repeat(63)}`), 400, 'invalid_request'],
      ['number that is words', setAt('number', 'call me maybe'), 400, 'invalid_number'],
      ['number without a country code', setAt('number', '4155552671'), 400, 'invalid_number'],
      ['number too short', setAt('number', '+1 415 555 267'), 400, 'invalid_number'],
      ['number with an unassigned country code', setAt('number', '+999 1234567'), 400, 'invalid_number'],
    ]),
  ],
  'POST /v1/verification/sessions/{id}/code': [
    ...jsonBodyCases('POST', sessionPath, anonymous, () => ({ code: '123456' })),
    ...variants('POST', sessionPath, anonymous, () => ({ code: '123456' }), [
      ['code missing', omit('code'), 400, 'invalid_request'],
      ['code as a JSON number', setAt('code', 123456), 400, 'invalid_request'],
      ['code empty', setAt('code', ''), 400, 'invalid_request'],
      ['code of 17 characters', setAt('code', '1'.repeat(17)), 400, 'invalid_request'],
    ]),
    ...['not-a-uuid', '12345', `${randomUUID()}x`, '../accounts'].map(
      (id): Case => ({
        name: `session id ${JSON.stringify(id)}`,
        send: (ctx) =>
          json(ctx, 'POST', `/v1/verification/sessions/${encodeURIComponent(id)}/code`, { code: '1' }, anonymous),
        status: 400,
        code: 'invalid_request',
      }),
    ),
    {
      name: 'an unknown session',
      send: (ctx) => json(ctx, 'POST', `/v1/verification/sessions/${randomUUID()}/code`, { code: '123456' }, anonymous),
      status: 404,
      code: 'verification_session_not_found',
    },
  ],
  'POST /v1/accounts': [
    ...jsonBodyCases('POST', fixed('/v1/accounts'), anonymous, (ctx) => ctx.registration),
    ...variants('POST', fixed('/v1/accounts'), anonymous, (ctx) => ctx.registration, [
      ...[
        'verificationSessionId',
        'password',
        'identityKey',
        'registrationId',
        'signedPreKey',
        'pqLastResortPreKey',
      ].map((key): [string, Change, number, string] => [`${key} missing`, omit(key), 400, 'invalid_request']),
      ['verificationSessionId not a UUID', setAt('verificationSessionId', 'session-1'), 400, 'invalid_request'],
      [
        'an unknown verification session',
        setAt('verificationSessionId', randomUUID()),
        404,
        'verification_session_not_found',
      ],
      [
        'a session that was never verified',
        (b, ctx) => {
          b.verificationSessionId = ctx.unverified.id;
        },
        403,
        'number_not_verified',
      ],
      [
        'registrationId as a string',
        (b) => ({ ...b, registrationId: String(b.registrationId) }),
        400,
        'invalid_request',
      ],
      ['registrationId 0', setAt('registrationId', 0), 400, 'invalid_request'],
      ['registrationId 16384', setAt('registrationId', 16384), 400, 'invalid_request'],
      ['registrationId 1.5', setAt('registrationId', 1.5), 400, 'invalid_request'],
      ['password as a number', setAt('password', 123456789012345), 400, 'invalid_request'],
      ['password of 19 characters', setAt('password', 'p'.repeat(19)), 400, 'weak_password'],
      ['password of 513 characters', setAt('password', 'p'.repeat(513)), 400, 'invalid_request'],
      ['name of 65 characters', setAt('name', 'n'.repeat(65)), 400, 'invalid_request'],
      ['name as an object', setAt('name', { first: 'A' }), 400, 'invalid_request'],
      ['identityKey not base64', setAt('identityKey', 'not base64!'), 400, 'invalid_request'],
      ['identityKey as a byte array', setAt('identityKey', [5, 1, 2]), 400, 'invalid_request'],
      ['identityKey with type byte 0x08', setAt('identityKey', ecKey(0x08)), 400, 'invalid_key'],
      ['identityKey of 32 bytes', setAt('identityKey', b64(randomBytes(32))), 400, 'invalid_key'],
      ['identityKey of 34 bytes', setAt('identityKey', ecKey(0x05, 34)), 400, 'invalid_key'],
      ['identityKey empty', setAt('identityKey', ''), 400, 'invalid_key'],
      [
        'identityKey of another identity than the one that signed the keys',
        (b, ctx) => {
          b.identityKey = b64(ctx.bob.identity.publicKey.serialize());
        },
        400,
        'invalid_signature',
      ],
      ['signedPreKey with type byte 0x08', setWith('signedPreKey.publicKey', () => ecKey(0x08)), 400, 'invalid_key'],
      ['signedPreKey of 32 bytes', setWith('signedPreKey.publicKey', () => b64(randomBytes(32))), 400, 'invalid_key'],
      [
        'signedPreKey signed by another identity',
        setWith('signedPreKey', (_b, ctx) => ctx.bobKeys.signedPreKey),
        400,
        'invalid_signature',
      ],
      [
        'signedPreKey with a 63-byte signature',
        setWith('signedPreKey.signature', (b) => b64(Buffer.from(b.signedPreKey.signature, 'base64').subarray(1))),
        400,
        'invalid_signature',
      ],
      ['signedPreKey keyId -1', setAt('signedPreKey.keyId', -1), 400, 'invalid_request'],
      ['signedPreKey keyId 2^24', setAt('signedPreKey.keyId', 0x1000000), 400, 'invalid_request'],
      ['signedPreKey keyId as a string', setAt('signedPreKey.keyId', '1'), 400, 'invalid_request'],
      ['signedPreKey without a signature', omit('signedPreKey.signature'), 400, 'invalid_request'],
      ['pqLastResortPreKey is an EC key', setWith('pqLastResortPreKey.publicKey', () => ecKey()), 400, 'invalid_key'],
      [
        'pqLastResortPreKey with type byte 0x05',
        setWith('pqLastResortPreKey.publicKey', () => kyberKey(0x05)),
        400,
        'invalid_key',
      ],
      [
        'pqLastResortPreKey truncated',
        setWith('pqLastResortPreKey.publicKey', () => kyberKey(0x08, 1568)),
        400,
        'invalid_key',
      ],
      [
        'pqLastResortPreKey signed by another identity',
        setWith('pqLastResortPreKey', (_b, ctx) => ctx.bobKeys.pqLastResortPreKey),
        400,
        'invalid_signature',
      ],
      [
        'a one-time Kyber prekey signed by another identity',
        (b, ctx) => void b.pqPreKeys.push({ ...ctx.bobKeys.pqPreKeys[0], keyId: 9999 }),
        400,
        'invalid_signature',
      ],
      [
        'a one-time EC prekey with type byte 0x08',
        setWith('preKeys.0.publicKey', () => ecKey(0x08)),
        400,
        'invalid_key',
      ],
      ['101 one-time EC prekeys', setAt('preKeys', manyECKeys(101)), 400, 'invalid_request'],
      [
        '101 one-time Kyber prekeys',
        setWith('pqPreKeys', (b) => Array.from({ length: 101 }, (_, i) => ({ ...b.pqPreKeys[0], keyId: 7000 + i }))),
        400,
        'invalid_request',
      ],
      [
        'duplicate one-time EC prekey ids',
        setWith('preKeys.1.keyId', (b) => b.preKeys[0].keyId),
        400,
        'duplicate_key_id',
      ],
      [
        'duplicate one-time Kyber prekey ids',
        setWith('pqPreKeys.1.keyId', (b) => b.pqPreKeys[0].keyId),
        400,
        'duplicate_key_id',
      ],
      ['preKeys not an array', setAt('preKeys', { keyId: 1 }), 400, 'invalid_request'],
    ]),
  ],
  'PUT /v1/keys': [
    ...jsonBodyCases('PUT', fixed('/v1/keys'), asAlice, validUpload),
    ...variants('PUT', fixed('/v1/keys'), asAlice, validUpload, [
      ['preKeys not an array', setAt('preKeys', 'keys'), 400, 'invalid_request'],
      ['a prekey keyId as a string', setAt('preKeys.0.keyId', '1'), 400, 'invalid_request'],
      ['a prekey keyId -1', setAt('preKeys.0.keyId', -1), 400, 'invalid_request'],
      ['a prekey keyId 2^24', setAt('preKeys.0.keyId', 0x1000000), 400, 'invalid_request'],
      ['a prekey without a public key', omit('preKeys.0.publicKey'), 400, 'invalid_request'],
      ['a prekey that is not base64', setAt('preKeys.0.publicKey', '%%%'), 400, 'invalid_request'],
      ['a prekey with type byte 0x08', setWith('preKeys.1.publicKey', () => ecKey(0x08)), 400, 'invalid_key'],
      ['a prekey of 34 bytes', setWith('preKeys.2.publicKey', () => ecKey(0x05, 34)), 400, 'invalid_key'],
      ['a prekey of 1 byte', setAt('preKeys.2.publicKey', b64(Buffer.from([5]))), 400, 'invalid_key'],
      [
        'a Kyber prekey with type byte 0x05',
        setWith('pqPreKeys.0.publicKey', () => kyberKey(0x05)),
        400,
        'invalid_key',
      ],
      ['a Kyber prekey that is an EC key', setWith('pqPreKeys.0.publicKey', () => ecKey()), 400, 'invalid_key'],
      [
        'a Kyber prekey of 1570 bytes',
        setWith('pqPreKeys.0.publicKey', () => kyberKey(0x08, 1570)),
        400,
        'invalid_key',
      ],
      ['a Kyber prekey without a signature', omit('pqPreKeys.0.signature'), 400, 'invalid_request'],
      [
        'a Kyber prekey signed by another identity',
        setWith('pqPreKeys.2', (b, ctx) => ({ ...ctx.bobKeys.pqPreKeys[0], keyId: b.pqPreKeys[2].keyId })),
        400,
        'invalid_signature',
      ],
      [
        'a Kyber prekey with a flipped signature bit',
        (b) => {
          const sig = Buffer.from(b.pqPreKeys[0].signature, 'base64');
          sig[10] = (sig[10] ?? 0) ^ 1;
          b.pqPreKeys[0].signature = b64(sig);
        },
        400,
        'invalid_signature',
      ],
      [
        'a signed prekey signed by another identity',
        (_b, ctx) => ({ signedPreKey: ctx.bobKeys.signedPreKey }),
        400,
        'invalid_signature',
      ],
      [
        'a signed prekey whose signature is random',
        (b) => ({ signedPreKey: { ...b.signedPreKey, signature: b64(randomBytes(64)) } }),
        400,
        'invalid_signature',
      ],
      [
        'a signed prekey whose signature is all 0xff',
        (b) => ({ signedPreKey: { ...b.signedPreKey, signature: b64(Buffer.alloc(64, 0xff)) } }),
        400,
        'invalid_signature',
      ],
      [
        'a signed prekey with a 65-byte signature',
        (b) => ({ signedPreKey: { ...b.signedPreKey, signature: b64(randomBytes(65)) } }),
        400,
        'invalid_signature',
      ],
      [
        'a signed prekey with type byte 0x08',
        (b) => ({ signedPreKey: { ...b.signedPreKey, publicKey: ecKey(0x08) } }),
        400,
        'invalid_key',
      ],
      [
        'a last-resort Kyber key signed by another identity',
        (_b, ctx) => ({ pqLastResortPreKey: ctx.bobKeys.pqLastResortPreKey }),
        400,
        'invalid_signature',
      ],
      [
        "a last-resort Kyber key with the signed prekey's signature",
        (b) => ({ pqLastResortPreKey: { ...b.pqLastResortPreKey, signature: b.signedPreKey.signature } }),
        400,
        'invalid_signature',
      ],
      ['101 one-time EC prekeys', () => ({ preKeys: manyECKeys(101) }), 400, 'invalid_request'],
      [
        '101 one-time Kyber prekeys',
        (b) => ({ pqPreKeys: Array.from({ length: 101 }, (_, i) => ({ ...b.pqPreKeys[0], keyId: 7000 + i })) }),
        400,
        'invalid_request',
      ],
      ['duplicate EC prekey ids', setWith('preKeys.2.keyId', (b) => b.preKeys[0].keyId), 400, 'duplicate_key_id'],
      [
        'duplicate Kyber prekey ids',
        setWith('pqPreKeys.2.keyId', (b) => b.pqPreKeys[1].keyId),
        400,
        'duplicate_key_id',
      ],
    ]),
  ],
  'GET /v1/keys/count': garbageCredentials('GET', '/v1/keys/count'),
  'GET /v1/keys/{accountId}/{deviceId}': [
    ...(
      [
        ['an accountId that is not a UUID', () => '/v1/keys/not-an-account/1', 400, 'invalid_request'],
        ['an accountId with a trailing character', (c) => `/v1/keys/${c.bob.accountId}0/1`, 400, 'invalid_request'],
        ['deviceId 0', (c) => `/v1/keys/${c.bob.accountId}/0`, 400, 'invalid_request'],
        ['deviceId 128', (c) => `/v1/keys/${c.bob.accountId}/128`, 400, 'invalid_request'],
        ['deviceId -1', (c) => `/v1/keys/${c.bob.accountId}/-1`, 400, 'invalid_request'],
        ['deviceId 1.5', (c) => `/v1/keys/${c.bob.accountId}/1.5`, 400, 'invalid_request'],
        ['deviceId "abc"', (c) => `/v1/keys/${c.bob.accountId}/abc`, 400, 'invalid_request'],
        ['deviceId "**"', (c) => `/v1/keys/${c.bob.accountId}/**`, 400, 'invalid_request'],
        ['an unknown account', () => `/v1/keys/${randomUUID()}/1`, 404, 'account_not_found'],
        ['an unknown account, all devices', () => `/v1/keys/${randomUUID()}/*`, 404, 'account_not_found'],
        ['an unknown device of a known account', (c) => `/v1/keys/${c.bob.accountId}/2`, 404, 'device_not_found'],
      ] as [string, (c: Ctx) => string, number, string][]
    ).map(
      ([name, path, status, code]): Case => ({
        name,
        send: (ctx) => api(ctx.server, 'GET', path(ctx), { auth: ctx.alice }),
        status,
        code,
      }),
    ),
  ],
  'PUT /v1/messages/multi': [
    ...jsonBodyCases('PUT', fixed('/v1/messages/multi'), asAlice, validMulti),
    ...variants('PUT', fixed('/v1/messages/multi'), asAlice, validMulti, [
      ...['type', 'content', 'timestamp', 'recipients'].map((key): [string, Change, number, string] => [
        `${key} missing`,
        omit(key),
        400,
        'invalid_request',
      ]),
      ['no recipients', setAt('recipients', []), 400, 'invalid_request'],
      ['1001 recipients', setWith('recipients', (b) => Array(1001).fill(b.recipients[0])), 400, 'invalid_request'],
      ['a recipient accountId that is not a UUID', setAt('recipients.0.accountId', 'bob'), 400, 'invalid_request'],
      ['an unknown recipient', setWith('recipients.0.accountId', () => randomUUID()), 404, 'account_not_found'],
      ['the same recipient twice', (b) => void b.recipients.push(b.recipients[0]), 400, 'duplicate_recipient'],
      ['deviceId as a string', setAt('recipients.0.devices.0.deviceId', '1'), 400, 'invalid_request'],
      ['deviceId as a boolean', setAt('recipients.0.devices.0.deviceId', true), 400, 'invalid_request'],
      ['deviceId 0', setAt('recipients.0.devices.0.deviceId', 0), 400, 'invalid_request'],
      ['registrationId 0', setAt('recipients.0.devices.0.registrationId', 0), 400, 'invalid_request'],
      [
        '7 devices of one recipient',
        setWith('recipients.0.devices', (b) => Array(7).fill(b.recipients[0].devices[0])),
        400,
        'invalid_request',
      ],
      ['an unknown device of the recipient', setAt('recipients.0.devices.0.deviceId', 2), 409, 'mismatched_devices'],
      [
        'a stale registrationId',
        setWith('recipients.0.devices.0.registrationId', (_b, c) => (c.bob.registrationId % 16383) + 1),
        410,
        'stale_devices',
      ],
      ['type 256', setAt('type', 256), 400, 'invalid_request'],
      ['type as a string', setAt('type', '7'), 400, 'invalid_request'],
      ['timestamp -1', setAt('timestamp', -1), 400, 'invalid_request'],
      ['timestamp 1.5', setAt('timestamp', 1.5), 400, 'invalid_request'],
      ['timestamp as a string', setAt('timestamp', String(Date.now())), 400, 'invalid_request'],
      ['content not base64', setAt('content', 'not base64!'), 400, 'invalid_request'],
      ['content empty', setAt('content', ''), 400, 'empty_message'],
      ['content over 96 KiB', setAt('content', b64(randomBytes(MAX_MESSAGE_BYTES + 1))), 413, 'payload_too_large'],
      ['an empty message id', setAt('id', ''), 400, 'invalid_request'],
      ['a message id of 129 characters', setAt('id', 'i'.repeat(129)), 400, 'invalid_request'],
    ]),
  ],
  'PUT /v1/messages/{accountId}': [
    ...jsonBodyCases('PUT', sendPath, asAlice, validSend),
    ...variants('PUT', sendPath, asAlice, validSend, [
      ['messages missing', omit('messages'), 400, 'invalid_request'],
      ['timestamp missing', omit('timestamp'), 400, 'invalid_request'],
      ['messages not an array', setAt('messages', { deviceId: 1 }), 400, 'invalid_request'],
      ['13 messages', setWith('messages', (b) => Array(13).fill(b.messages[0])), 400, 'invalid_request'],
      ['deviceId as a string', setAt('messages.0.deviceId', '1'), 400, 'invalid_request'],
      ['deviceId as a boolean', setAt('messages.0.deviceId', true), 400, 'invalid_request'],
      ['deviceId as an array', setAt('messages.0.deviceId', [1]), 400, 'invalid_request'],
      ['deviceId 0', setAt('messages.0.deviceId', 0), 400, 'invalid_request'],
      ['deviceId 128', setAt('messages.0.deviceId', 128), 400, 'invalid_request'],
      ['registrationId as a string', setAt('messages.0.registrationId', '5'), 400, 'invalid_request'],
      ['registrationId 16384', setAt('messages.0.registrationId', 16384), 400, 'invalid_request'],
      ['type -1', setAt('messages.0.type', -1), 400, 'invalid_request'],
      ['type 256', setAt('messages.0.type', 256), 400, 'invalid_request'],
      ['content missing', omit('messages.0.content'), 400, 'invalid_request'],
      ['content not base64', setAt('messages.0.content', '***'), 400, 'invalid_request'],
      ['content as a byte array', setAt('messages.0.content', [1, 2, 3]), 400, 'invalid_request'],
      ['content empty', setAt('messages.0.content', ''), 400, 'empty_message'],
      [
        'content over 96 KiB',
        setWith('messages.0.content', () => b64(randomBytes(MAX_MESSAGE_BYTES + 1))),
        413,
        'payload_too_large',
      ],
      ['the same device twice', (b) => void b.messages.push(b.messages[0]), 400, 'duplicate_device'],
      ['an unknown device', setAt('messages.0.deviceId', 3), 409, 'mismatched_devices'],
      ['no messages for an account with a device', setAt('messages', []), 409, 'mismatched_devices'],
      ['timestamp -1', setAt('timestamp', -1), 400, 'invalid_request'],
      ['timestamp beyond 2^53', setAt('timestamp', 2 ** 53 + 2), 400, 'invalid_request'],
      ['an empty message id', setAt('id', ''), 400, 'invalid_request'],
      ['a message id as a number', setAt('id', 7), 400, 'invalid_request'],
    ]),
    ...(
      [
        ['an accountId that is not a UUID', '/v1/messages/bob', 400, 'invalid_request'],
        ['an accountId with a path in it', '/v1/messages/..%2Fkeys', 400, 'invalid_request'],
        ['an unknown account', `/v1/messages/${randomUUID()}`, 404, 'account_not_found'],
      ] as [string, string, number, string][]
    ).map(
      ([name, path, status, code]): Case => ({
        name,
        send: (ctx) => json(ctx, 'PUT', path, validSend(ctx), asAlice),
        status,
        code,
      }),
    ),
  ],
  'GET /v1/messages': ['0', '101', '-1', '1.5', 'abc', '', '1e400', '0x', '%00', '5&limit=6'].map(
    (limit): Case => ({
      name: `limit=${limit}`,
      send: (ctx) => api(ctx.server, 'GET', `/v1/messages?limit=${limit}`, { auth: ctx.bob }),
      status: 400,
      code: 'invalid_request',
    }),
  ),
  'DELETE /v1/messages/{guid}': [
    ...['not-a-guid', '1', `${randomUUID().slice(0, -1)}g`, '%2e%2e%2fkeys'].map(
      (guid): Case => ({
        name: `guid ${JSON.stringify(guid)}`,
        send: (ctx) => api(ctx.server, 'DELETE', `/v1/messages/${guid}`, { auth: ctx.bob }),
        status: 400,
        code: 'invalid_request',
      }),
    ),
    {
      name: 'an unknown guid',
      send: (ctx) => api(ctx.server, 'DELETE', `/v1/messages/${randomUUID()}`, { auth: ctx.bob }),
      status: 404,
      code: 'message_not_found',
    },
  ],
  'POST /v1/websocket/token': [
    ...garbageCredentials('POST', '/v1/websocket/token'),
    {
      name: 'a body over 512 KiB',
      send: (ctx) =>
        rawHttp(ctx.server, 'POST', '/v1/websocket/token', {
          body: 'x'.repeat(MAX_JSON_BODY + 1),
          headers: { authorization: ctx.alice.authorization, 'content-length': MAX_JSON_BODY + 1 },
        }),
      status: 413,
      code: 'payload_too_large',
    },
  ],
  'POST /v1/attachments': [
    {
      name: 'an empty body',
      send: (ctx) =>
        api(ctx.server, 'POST', '/v1/attachments', {
          auth: ctx.alice,
          rawBody: '',
          headers: { 'content-type': 'application/octet-stream' },
        }),
      status: 400,
      code: 'empty_attachment',
    },
    {
      name: 'an empty body, chunked',
      send: (ctx) =>
        rawHttp(ctx.server, 'POST', '/v1/attachments', {
          chunks: [],
          headers: { authorization: ctx.alice.authorization, 'content-type': 'application/octet-stream' },
        }),
      status: 400,
      code: 'empty_attachment',
    },
    {
      name: 'no body at all',
      send: (ctx) => api(ctx.server, 'POST', '/v1/attachments', { auth: ctx.alice }),
      status: 400,
      code: 'empty_attachment',
    },
    {
      name: 'a declared length over 100 MiB',
      send: (ctx) =>
        rawHttp(ctx.server, 'POST', '/v1/attachments', {
          chunks: [randomBytes(1024)],
          headers: {
            authorization: ctx.alice.authorization,
            'content-type': 'application/octet-stream',
            'content-length': MAX_ATTACHMENT_BYTES + 1,
          },
        }),
      status: 413,
      code: 'payload_too_large',
    },
    {
      name: 'a stream of 100 MiB + 1 byte without a declared length',
      send: (ctx) => {
        const mib = randomBytes(1024 * 1024);
        const chunks = [...Array(100).fill(mib), Buffer.from([1])];
        return rawHttp(ctx.server, 'POST', '/v1/attachments', {
          chunks,
          headers: { authorization: ctx.alice.authorization, 'content-type': 'application/octet-stream' },
        });
      },
      status: 413,
      code: 'payload_too_large',
    },
  ],
  'GET /v1/attachments/{id}': [
    ...['not-an-id', '..%2F..%2Fhush.sqlite', '%2e%2e%2fhush.sqlite', `${randomUUID()}.part`].map(
      (id): Case => ({
        name: `id ${JSON.stringify(id)}`,
        send: (ctx) => api(ctx.server, 'GET', `/v1/attachments/${id}`, { auth: ctx.alice }),
        status: 400,
        code: 'invalid_request',
      }),
    ),
    {
      name: 'an unknown id',
      send: (ctx) => api(ctx.server, 'GET', `/v1/attachments/${randomUUID()}`, { auth: ctx.alice }),
      status: 404,
      code: 'attachment_not_found',
    },
  ],
  'GET /v1/devices': garbageCredentials('GET', '/v1/devices'),
  'POST /v1/devices/link-code': [
    ...garbageCredentials('POST', '/v1/devices/link-code'),
    {
      name: 'a body over 512 KiB',
      send: (ctx) =>
        rawHttp(ctx.server, 'POST', '/v1/devices/link-code', {
          body: 'x'.repeat(MAX_JSON_BODY + 1),
          headers: { authorization: ctx.alice.authorization, 'content-length': MAX_JSON_BODY + 1 },
        }),
      status: 413,
      code: 'payload_too_large',
    },
  ],
  // Keys signed by another identity are refused too (400 invalid_signature), but only after the
  // code was found, and then they count as one of the code's 10 attempts: a change of state by
  // design, so those cases are in devices.test.ts. Everything here is refused before that.
  'PUT /v1/devices/link': [
    ...jsonBodyCases('PUT', fixed('/v1/devices/link'), anonymous, validLink),
    ...variants('PUT', fixed('/v1/devices/link'), anonymous, validLink, [
      ...['code', 'password', 'registrationId', 'signedPreKey', 'pqLastResortPreKey'].map(
        (key): [string, Change, number, string] => [`${key} missing`, omit(key), 400, 'invalid_request'],
      ),
      ['an unknown code', setWith('code', () => randomBytes(32).toString('base64url')), 403, 'link_code_invalid'],
      ['a code of another shape', setAt('code', 'not-a-code'), 403, 'link_code_invalid'],
      ['code empty', setAt('code', ''), 400, 'invalid_request'],
      ['code of 257 characters', setAt('code', 'c'.repeat(257)), 400, 'invalid_request'],
      ['code as a JSON number', setAt('code', 12345), 400, 'invalid_request'],
      ['code null', setAt('code', null), 400, 'invalid_request'],
      ['password of 19 characters', setAt('password', 'p'.repeat(19)), 400, 'weak_password'],
      ['password of 513 characters', setAt('password', 'p'.repeat(513)), 400, 'invalid_request'],
      ['registrationId 0', setAt('registrationId', 0), 400, 'invalid_request'],
      ['registrationId 16384', setAt('registrationId', 16384), 400, 'invalid_request'],
      [
        'registrationId as a string',
        (b) => ({ ...b, registrationId: String(b.registrationId) }),
        400,
        'invalid_request',
      ],
      ['name not base64', setAt('name', 'Alice’s laptop'), 400, 'invalid_request'],
      ['name as an object', setAt('name', { first: 'A' }), 400, 'invalid_request'],
      ['name empty', setAt('name', ''), 400, 'invalid_name'],
      ['name of 257 bytes', setWith('name', () => b64(randomBytes(257))), 400, 'invalid_name'],
      ['signedPreKey with type byte 0x08', setWith('signedPreKey.publicKey', () => ecKey(0x08)), 400, 'invalid_key'],
      ['signedPreKey without a signature', omit('signedPreKey.signature'), 400, 'invalid_request'],
      ['signedPreKey keyId -1', setAt('signedPreKey.keyId', -1), 400, 'invalid_request'],
      [
        'pqLastResortPreKey truncated',
        setWith('pqLastResortPreKey.publicKey', () => kyberKey(0x08, 1568)),
        400,
        'invalid_key',
      ],
      ['pqLastResortPreKey is an EC key', setWith('pqLastResortPreKey.publicKey', () => ecKey()), 400, 'invalid_key'],
      [
        'a one-time EC prekey with type byte 0x08',
        setWith('preKeys.0.publicKey', () => ecKey(0x08)),
        400,
        'invalid_key',
      ],
      [
        'duplicate one-time EC prekey ids',
        setWith('preKeys.1.keyId', (b) => b.preKeys[0].keyId),
        400,
        'duplicate_key_id',
      ],
      [
        'duplicate one-time Kyber prekey ids',
        setWith('pqPreKeys.1.keyId', (b) => b.pqPreKeys[0].keyId),
        400,
        'duplicate_key_id',
      ],
      ['101 one-time EC prekeys', setAt('preKeys', manyECKeys(101)), 400, 'invalid_request'],
      ['preKeys not an array', setAt('preKeys', { keyId: 1 }), 400, 'invalid_request'],
    ]),
  ],
  'DELETE /v1/devices/{deviceId}': [
    ...garbageCredentials('DELETE', '/v1/devices/2'),
    ...['two', '0', '128', '1.5', '-1', '2x'].map(
      (id): Case => ({
        name: `device id ${JSON.stringify(id)}`,
        send: (ctx) => api(ctx.server, 'DELETE', `/v1/devices/${id}`, { auth: ctx.alice }),
        status: 400,
        code: 'invalid_request',
      }),
    ),
    {
      name: 'device 1',
      send: (ctx) => api(ctx.server, 'DELETE', '/v1/devices/1', { auth: ctx.alice }),
      status: 400,
      code: 'primary_device_not_removable',
    },
    {
      name: 'a device the account does not have',
      send: (ctx) => api(ctx.server, 'DELETE', '/v1/devices/5', { auth: ctx.alice }),
      status: 404,
      code: 'device_not_found',
    },
  ],
  'PUT /v1/provisioning/{address}': [
    ...garbageCredentials('PUT', provisioningPath()),
    ...jsonBodyCases('PUT', provisioningPath, asAlice, validProvisioning),
    ...variants('PUT', provisioningPath, asAlice, validProvisioning, [
      ['body missing', omit('body'), 400, 'invalid_request'],
      ['body not base64', setAt('body', 'not base64!'), 400, 'invalid_request'],
      ['body as a JSON number', setAt('body', 42), 400, 'invalid_request'],
      ['body empty', setAt('body', ''), 400, 'empty_provisioning_message'],
      ['body of 65537 bytes', setWith('body', () => b64(randomBytes(65_537))), 413, 'payload_too_large'],
    ]),
    ...badAddresses.map(
      (address): Case => ({
        name: `address ${JSON.stringify(address)}`,
        send: (ctx) => json(ctx, 'PUT', `/v1/provisioning/${address}`, validProvisioning(), asAlice),
        status: 400,
        code: 'invalid_request',
      }),
    ),
  ],
  'GET /v1/provisioning/{address}': badAddresses.map(
    (address): Case => ({
      name: `address ${JSON.stringify(address)}`,
      send: (ctx) => api(ctx.server, 'GET', `/v1/provisioning/${address}`),
      status: 400,
      code: 'invalid_request',
    }),
  ),
  'PUT /v1/devices/push': [
    ...jsonBodyCases('PUT', fixed('/v1/devices/push'), asAlice, validPush),
    ...variants('PUT', fixed('/v1/devices/push'), asAlice, validPush, [
      ['webPush missing', omit('webPush'), 400, 'invalid_request'],
      ['webPush as a string', setAt('webPush', 'https://push.example.com/x'), 400, 'invalid_request'],
      ['an endpoint that is not a URL', setAt('webPush.endpoint', 'push me'), 400, 'invalid_request'],
      ['an http endpoint', setAt('webPush.endpoint', 'http://push.example.com/x'), 400, 'invalid_subscription'],
      ['a javascript: endpoint', setAt('webPush.endpoint', 'javascript:alert(1)'), 400],
      ['keys missing', omit('webPush.keys'), 400, 'invalid_request'],
      ['p256dh empty', setAt('webPush.keys.p256dh', ''), 400, 'invalid_request'],
      [
        'p256dh of 33 bytes',
        setWith('webPush.keys.p256dh', () => randomBytes(33).toString('base64url')),
        400,
        'invalid_subscription',
      ],
      ['p256dh not base64url', setAt('webPush.keys.p256dh', '!'.repeat(87)), 400, 'invalid_subscription'],
      [
        'auth of 15 bytes',
        setWith('webPush.keys.auth', () => randomBytes(15).toString('base64url')),
        400,
        'invalid_subscription',
      ],
    ]),
  ],
};

// ---- state ------------------------------------------------------------------------------------

/** Every row of every table, read from the SQLite file through a separate read-only connection. */
function databaseRows(path: string): Record<string, string[]> {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    const tables = db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
      .all()
      .map((r) => (r as { name: string }).name);
    const hex = (_k: string, v: unknown) =>
      v && typeof v === 'object' && (v as { type?: string }).type === 'Buffer'
        ? Buffer.from((v as { data: number[] }).data).toString('hex')
        : v;
    return Object.fromEntries(
      tables.map((t) => [
        t,
        db
          .prepare(`SELECT * FROM "${t}"`)
          .all()
          .map((row) => JSON.stringify(row, hex))
          .sort(),
      ]),
    );
  } finally {
    db.close();
  }
}

/** Files under the data directory that requests may write (not the database, which is read above). */
function files(dir: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    const name = relative(dir, path);
    if (name.startsWith('hush.sqlite') || name === 'dev-push.log') continue;
    out[name] = statSync(path).size;
  }
  return out;
}

async function apiState(ctx: Ctx) {
  const count = async (d: TestDevice) => (await api(ctx.server, 'GET', '/v1/keys/count', { auth: d })).body;
  const queue = async (d: TestDevice) =>
    (await api(ctx.server, 'GET', '/v1/messages', { auth: d })).body.messages.map((m: { guid: string }) => m.guid);
  const devices = async (d: TestDevice) => (await api(ctx.server, 'GET', '/v1/devices', { auth: d })).body;
  return {
    keys: { alice: await count(ctx.alice), bob: await count(ctx.bob) },
    queues: { alice: await queue(ctx.alice), bob: await queue(ctx.bob) },
    devices: { alice: await devices(ctx.alice), bob: await devices(ctx.bob) },
  };
}

async function snapshot(ctx: Ctx) {
  return {
    api: await apiState(ctx),
    database: databaseRows(ctx.server.config.databasePath),
    files: files(ctx.server.dataDir),
  };
}

// ---- the tests --------------------------------------------------------------------------------

describe('bad input on every route', () => {
  const ctx = {} as Ctx;

  beforeAll(async () => {
    ctx.server = await startTestServer();
    ctx.alice = await TestDevice.register(ctx.server);
    ctx.bob = await TestDevice.register(ctx.server);
    ctx.aliceKeys = await ctx.alice.generateKeys(3, 1000);
    ctx.bobKeys = await ctx.bob.generateKeys(3, 2000);

    // Bob has one envelope waiting; Alice has a push subscription: both must survive bad input.
    expect((await ctx.alice.send(ctx.server, ctx.bob, Buffer.from('hello'))).status).toBe(200);
    ctx.bobGuid = (await api(ctx.server, 'GET', '/v1/messages', { auth: ctx.bob })).body.messages[0].guid;
    expect((await api(ctx.server, 'PUT', '/v1/devices/push', { auth: ctx.alice, body: validPush() })).status).toBe(204);

    const start = async () => {
      const started = await api(ctx.server, 'POST', '/v1/verification/sessions', { body: { number: freshNumber() } });
      expect(started.status).toBe(200);
      return { id: started.body.id as string, number: started.body.number as string };
    };
    ctx.verified = await start();
    const code = await readLatestDevCode(devSmsFile(ctx.server), ctx.verified.number);
    const verified = await api(ctx.server, 'POST', `/v1/verification/sessions/${ctx.verified.id}/code`, {
      body: { code },
    });
    expect(verified.status).toBe(200);
    ctx.unverified = await start();

    const newcomer = new TestDevice(await IdentityKeyPair.generate(crypto), ctx.verified.number);
    ctx.registration = {
      verificationSessionId: ctx.verified.id,
      password: newcomer.password,
      identityKey: b64(newcomer.identity.publicKey.serialize()),
      registrationId: newcomer.registrationId,
      ...(await newcomer.generateKeys(3)),
    };

    const issued = await api(ctx.server, 'POST', '/v1/devices/link-code', { auth: ctx.alice });
    expect(issued.status).toBe(200);
    const laptop = new TestDevice(ctx.alice.identity, ctx.alice.number);
    ctx.link = {
      code: issued.body.code,
      password: laptop.password,
      registrationId: laptop.registrationId,
      name: b64(randomBytes(40)),
      ...(await laptop.generateKeys(3)),
    };
  });

  afterAll(async () => {
    await ctx.server?.close();
  });

  it('covers every route of /openapi.json', async () => {
    const doc = await api(ctx.server, 'GET', '/openapi.json');
    expect(doc.status).toBe(200);
    const operations = Object.entries<Record<string, unknown>>(doc.body.paths).flatMap(([path, ops]) =>
      Object.keys(ops).map((method) => `${method.toUpperCase()} ${path}`),
    );
    expect(operations.length).toBeGreaterThanOrEqual(15);
    expect(Object.keys(routes).sort()).toEqual([...operations].sort());
    for (const cases of Object.values(routes)) expect(cases.length).toBeGreaterThan(0);
  });

  for (const [route, cases] of Object.entries(routes)) {
    describe(route, () => {
      for (const c of cases) {
        it(`${c.name} → ${c.status}${c.code ? ` ${c.code}` : ''}, nothing changes`, async () => {
          const before = await snapshot(ctx);
          const res = await c.send(ctx);
          expect(res.status, JSON.stringify(res.body)).toBe(c.status);
          expect(contentTypeOf(res)).toMatch(/^application\/json/);
          expect(res.body).toEqual({
            error: expect.objectContaining({ code: expect.any(String), message: expect.any(String) }),
          });
          if (c.code) expect(res.body.error.code).toBe(c.code);
          expect(await snapshot(ctx)).toEqual(before);
        });
      }
    });
  }

  it('the unchanged request bodies the cases start from are accepted (controls)', async () => {
    // Each case above changed one thing in these; they must pass, so the rejections came from the change.
    const cases: [string, string, unknown, number][] = [
      ['PUT', '/v1/keys', validUpload(ctx), 204],
      ['PUT', `/v1/messages/${ctx.bob.accountId}`, validSend(ctx), 200],
      ['PUT', '/v1/messages/multi', validMulti(ctx), 200],
      ['PUT', '/v1/devices/push', validPush(), 204],
      ['PUT', provisioningPath(), validProvisioning(), 204],
    ];
    for (const [method, path, body, status] of cases) {
      const res = await api(ctx.server, method, path, { auth: ctx.alice, body });
      expect(res.status, `${method} ${path}: ${JSON.stringify(res.body)}`).toBe(status);
    }
    expect((await api(ctx.server, 'GET', provisioningPath())).status).toBe(200);
    // The link code was not used up by the rejected links: it links Alice's second device now.
    const linked = await api(ctx.server, 'PUT', '/v1/devices/link', { body: validLink(ctx) });
    expect(linked.status, JSON.stringify(linked.body)).toBe(200);
    expect(linked.body).toEqual({ accountId: ctx.alice.accountId, number: ctx.alice.number, deviceId: 2 });
    // A message of exactly 96 KiB is within the limit.
    const big = validSend(ctx);
    (big.messages[0] as { content: string }).content = b64(randomBytes(MAX_MESSAGE_BYTES));
    expect(
      (await api(ctx.server, 'PUT', `/v1/messages/${ctx.bob.accountId}`, { auth: ctx.alice, body: big })).status,
    ).toBe(200);
    expect((await api(ctx.server, 'GET', '/v1/keys/count', { auth: ctx.alice })).body).toEqual({
      preKeys: 8,
      pqPreKeys: 8,
    });
  });

  it('no rejected registration created an account or used up the verified session, which then registers once', async () => {
    const db = new Database(ctx.server.config.databasePath, { readonly: true });
    try {
      expect(db.prepare('SELECT count(*) AS n FROM accounts WHERE number = ?').get(ctx.verified.number)).toEqual({
        n: 0,
      });
      expect(db.prepare('SELECT consumed FROM verification_sessions WHERE id = ?').get(ctx.verified.id)).toEqual({
        consumed: 0,
      });
    } finally {
      db.close();
    }
    const registered = await api(ctx.server, 'POST', '/v1/accounts', { body: ctx.registration });
    expect(registered.status, JSON.stringify(registered.body)).toBe(200);
    expect(registered.body.number).toBe(ctx.verified.number);
  });

  it('after a 413 the server closes the connection instead of leaving it half-read, so the next request works', async () => {
    // One keep-alive connection for both requests: a client that reuses it must not hit a dead socket.
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const send = (body: string) =>
      new Promise<{ status: number; connection: string | undefined; text: string }>((resolve, reject) => {
        const req = httpRequest(
          `${ctx.server.url}/v1/keys`,
          {
            method: 'PUT',
            agent,
            headers: {
              authorization: ctx.alice.authorization,
              'content-type': 'application/json',
              'content-length': Buffer.byteLength(body),
            },
          },
          (res) => {
            let text = '';
            res.on('data', (chunk) => {
              text += chunk;
            });
            res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, text }));
          },
        );
        req.on('error', reject);
        req.end(body);
      });
    try {
      for (let i = 0; i < 3; i++) {
        const big = await send(JSON.stringify({ preKeys: [], padding: 'x'.repeat(MAX_JSON_BODY) }));
        expect(big.status).toBe(413);
        expect(big.connection).toBe('close');
        expect(JSON.parse(big.text).error.code).toBe('payload_too_large');
        expect((await send('{}')).status).toBe(204);
      }
    } finally {
      agent.destroy();
    }
  });

  it('unknown routes and methods answer 404 JSON', async () => {
    for (const [method, path] of [
      ['GET', '/v1/nothing'],
      ['PATCH', '/v1/keys'],
      ['POST', '/v1/messages'],
      ['PUT', '/v1/messages'],
      ['GET', '/v2/keys/count'],
    ] as const) {
      const res = await api(ctx.server, method, path, { auth: ctx.alice });
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(res.body.error.code).toBe('not_found');
    }
  });

  it('no request failed with an internal error (the log has no error entries)', () => {
    const errors = ctx.server
      .logs()
      .split('\n')
      .filter((line) => line.trim())
      .map((line) => JSON.parse(line))
      .filter((entry) => entry.level >= 50 || entry.status >= 500);
    expect(errors).toEqual([]);
    // The dev SMS log is the one place codes are kept; bad input added nothing to it.
    // Alice, Bob, the verified and the unverified session: four codes, none from bad input.
    expect(readFileSync(devSmsFile(ctx.server), 'utf8').trim().split('\n')).toHaveLength(4);
  });
});
