import { randomUUID } from 'node:crypto';
import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { HTTPException } from 'hono/http-exception';
import type { Logger } from 'pino';
import { sameHash } from '../core/credentials.ts';
import { ApiError, PayloadTooLargeError, badRequest, notFound, unauthorized } from '../core/errors.ts';
import type { Core } from '../core/index.ts';
import type { AttachmentStore, Device, QueuedEnvelope } from '../core/ports.ts';
import type { SocketTokens } from '../core/socket-tokens.ts';
import { parsePushSubscription } from '../push/web-push-sender.ts';
import { SmsDeliveryError } from '../sms/sns-sms-sender.ts';
import { parseBasicAuthorization } from './basic-auth.ts';
import { docsPage } from './docs.ts';
import * as S from './schemas.ts';

/** Largest JSON body accepted (a 96 KiB message is 128 KiB as base64, plus the envelope). */
const MAX_JSON_BODY = 512 * 1024;
export const MAX_ATTACHMENT_BYTES = 100 * 1024 * 1024;
export const ATTACHMENT_TTL_MS = 30 * 24 * 60 * 60 * 1000;

export interface HttpMetrics {
  request(method: string, route: string, status: number, seconds: number): void;
  render(): Promise<{ contentType: string; body: string }>;
}

export interface AppDeps {
  core: Core;
  attachments: AttachmentStore;
  socketTokens: SocketTokens;
  logger: Logger;
  metrics?: HttpMetrics;
  /** The caller's network address, for per-client rate limits; each deployment knows its own. */
  clientAddress: (c: Context<AppEnv>) => string;
}

/**
 * Requests may also arrive as frames over a device's own WebSocket; the socket layer passes the
 * device it authenticated at the upgrade as `env.device`, which nothing outside the process can set.
 */
export type AppEnv = { Bindings: { device?: Device }; Variables: { device: Device } };

const b64 = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
const bytes = (base64: string) => new Uint8Array(Buffer.from(base64, 'base64'));

export function envelopeJson(e: QueuedEnvelope) {
  return {
    guid: e.guid,
    type: e.type,
    sourceAccountId: e.sourceAccountId,
    sourceDeviceId: e.sourceDeviceId,
    destinationDeviceId: e.destinationDeviceId,
    timestamp: e.timestamp,
    serverTimestamp: e.serverTimestamp,
    content: b64(e.content),
  };
}

function errorResponse(c: Context, error: ApiError) {
  if (error.retryAfterSeconds !== undefined) c.header('Retry-After', String(error.retryAfterSeconds));
  // The rest of an oversized body may be left unread, so this connection cannot carry another request.
  if (error instanceof PayloadTooLargeError) c.header('Connection', 'close');
  return c.json({ error: { code: error.code, message: error.message, ...error.details } }, error.status);
}

const json = <T extends z.ZodType>(schema: T, description: string) => ({
  content: { 'application/json': { schema } },
  description,
});
const errors = {
  400: json(S.ErrorBody, 'Bad request'),
  401: json(S.ErrorBody, 'Missing or wrong credentials'),
  429: json(S.ErrorBody, 'Rate limited (see Retry-After)'),
};
const basicAuth = [{ basicAuth: [] }];
const body = <T extends z.ZodType>(schema: T) => ({
  body: { content: { 'application/json': { schema } }, required: true },
});

export function createApp(deps: AppDeps) {
  const { core, logger } = deps;
  const app = new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (!result.success) {
        const issue = result.error.issues[0];
        const where = issue?.path.join('.') || 'body';
        return c.json({ error: { code: 'invalid_request', message: `${where}: ${issue?.message ?? 'invalid'}` } }, 400);
      }
    },
  });

  app.onError((error, c) => {
    if (error instanceof ApiError) return errorResponse(c, error);
    if (error instanceof SmsDeliveryError) {
      // Not the client's fault: SMS delivery failed upstream. Try again later.
      c.header('Retry-After', '30');
      return c.json(
        { error: { code: 'sms_unavailable', message: 'the code could not be sent; try again later' } },
        503,
      );
    }
    if (error instanceof HTTPException && error.status < 500) {
      const code = error.status === 413 ? 'payload_too_large' : 'invalid_request';
      return c.json({ error: { code, message: error.message || 'bad request' } }, error.status);
    }
    logger.error(
      { err: { type: (error as Error).name, message: (error as Error).message, stack: (error as Error).stack } },
      'request failed',
    );
    return c.json({ error: { code: 'internal_error', message: 'internal error' } }, 500);
  });
  app.notFound((c) => c.json({ error: { code: 'not_found', message: 'no such route' } }, 404));

  // Access log and metrics: method, route pattern, status, time. Never bodies, queries or headers.
  app.use('*', async (c, next) => {
    const started = performance.now();
    await next();
    const seconds = (performance.now() - started) / 1000;
    const route = c.req.routePath || 'unmatched';
    deps.metrics?.request(c.req.method, route, c.res.status, seconds);
    if (!c.env?.device)
      logger.info({ method: c.req.method, route, status: c.res.status, ms: Math.round(seconds * 1000) }, 'http');
  });
  app.use('/v1/*', async (c, next) => {
    if (c.req.path === '/v1/attachments' && c.req.method === 'POST') return next();
    return bodyLimit({
      maxSize: MAX_JSON_BODY,
      onError: () => {
        throw new PayloadTooLargeError(MAX_JSON_BODY);
      },
    })(c, next);
  });

  app.openAPIRegistry.registerComponent('securitySchemes', 'basicAuth', {
    type: 'http',
    scheme: 'basic',
    description: 'accountId.deviceId : device password',
  });

  const authenticate = async (c: Context<AppEnv>, next: () => Promise<void>) => {
    const preset = c.env?.device;
    if (preset) {
      // A socket outlives the credentials it was opened with: a re-registered number drops the
      // device, a removed device may be followed by another one linked under the same id.
      const current = await core.storage.getDevice(preset.accountId, preset.deviceId);
      if (!current || !sameHash(current.passwordHash, preset.passwordHash)) throw unauthorized();
      c.set('device', current);
      return next();
    }
    const credentials = parseBasicAuthorization(c.req.header('authorization'));
    if (!credentials) throw unauthorized();
    c.set(
      'device',
      await core.accounts.authenticate(credentials.accountId, credentials.deviceId, credentials.password),
    );
    return next();
  };
  for (const path of [
    '/v1/keys',
    '/v1/keys/*',
    '/v1/messages',
    '/v1/messages/*',
    '/v1/websocket/token',
    '/v1/attachments',
    '/v1/attachments/*',
    '/v1/devices',
  ]) {
    app.use(path, authenticate);
  }
  // Under these prefixes, two routes authorize otherwise: a new device links itself with its link
  // code, and fetches its provisioning message knowing only the random address it chose.
  app.use('/v1/devices/*', (c, next) =>
    c.req.method === 'PUT' && c.req.path === '/v1/devices/link' ? next() : authenticate(c, next),
  );
  app.use('/v1/provisioning/*', (c, next) =>
    c.req.method === 'GET' || c.req.method === 'HEAD' ? next() : authenticate(c, next),
  );

  // ---- verification (step 2) ----
  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/verification/sessions',
      summary: 'Start verifying a phone number; an SMS code is sent',
      request: body(S.StartVerificationRequest),
      responses: { 200: json(S.VerificationSessionResponse, 'Session started'), ...errors },
    }),
    async (c) => {
      const { number } = c.req.valid('json');
      const session = await core.verification.startSession(number, deps.clientAddress(c));
      return c.json({ ...session, verified: false }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/verification/sessions/{id}/code',
      summary: 'Submit the SMS code',
      request: { params: z.object({ id: z.uuid() }), ...body(S.SubmitCodeRequest) },
      responses: { 200: json(S.VerificationSessionResponse, 'Verified'), ...errors },
    }),
    async (c) => {
      const session = await core.verification.submitCode(c.req.valid('param').id, c.req.valid('json').code);
      return c.json({ ...session, expiresAt: 0 }, 200);
    },
  );

  // ---- accounts (steps 2-3) ----
  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/accounts',
      summary: 'Create (or re-create) the account of a verified number, with device 1 and its keys',
      request: body(S.RegisterRequest),
      responses: { 200: json(S.RegisterResponse, 'Registered'), ...errors },
    }),
    async (c) => {
      const r = c.req.valid('json');
      const result = await core.accounts.register({
        verificationSessionId: r.verificationSessionId,
        password: r.password,
        identityKey: bytes(r.identityKey),
        registrationId: r.registrationId,
        signedPreKey: {
          ...r.signedPreKey,
          publicKey: bytes(r.signedPreKey.publicKey),
          signature: bytes(r.signedPreKey.signature),
        },
        pqLastResortPreKey: {
          ...r.pqLastResortPreKey,
          publicKey: bytes(r.pqLastResortPreKey.publicKey),
          signature: bytes(r.pqLastResortPreKey.signature),
        },
        ...(r.preKeys ? { preKeys: r.preKeys.map((k) => ({ keyId: k.keyId, publicKey: bytes(k.publicKey) })) } : {}),
        ...(r.pqPreKeys
          ? {
              pqPreKeys: r.pqPreKeys.map((k) => ({
                keyId: k.keyId,
                publicKey: bytes(k.publicKey),
                signature: bytes(k.signature),
              })),
            }
          : {}),
        ...(r.name ? { name: r.name } : {}),
      });
      return c.json({ accountId: result.accountId, deviceId: result.deviceId, number: result.number }, 200);
    },
  );

  // ---- key directory (step 4) ----
  app.openapi(
    createRoute({
      method: 'put',
      path: '/v1/keys',
      summary: 'Upload one-time EC and Kyber prekeys; rotate the signed prekey and last-resort Kyber key',
      security: basicAuth,
      request: body(S.KeyUploadRequest),
      responses: { 204: { description: 'Stored' }, ...errors },
    }),
    async (c) => {
      const u = c.req.valid('json');
      await core.keys.upload(c.get('device'), {
        ...(u.preKeys ? { preKeys: u.preKeys.map((k) => ({ keyId: k.keyId, publicKey: bytes(k.publicKey) })) } : {}),
        ...(u.pqPreKeys
          ? {
              pqPreKeys: u.pqPreKeys.map((k) => ({
                keyId: k.keyId,
                publicKey: bytes(k.publicKey),
                signature: bytes(k.signature),
              })),
            }
          : {}),
        ...(u.signedPreKey
          ? {
              signedPreKey: {
                keyId: u.signedPreKey.keyId,
                publicKey: bytes(u.signedPreKey.publicKey),
                signature: bytes(u.signedPreKey.signature),
              },
            }
          : {}),
        ...(u.pqLastResortPreKey
          ? {
              pqLastResortPreKey: {
                keyId: u.pqLastResortPreKey.keyId,
                publicKey: bytes(u.pqLastResortPreKey.publicKey),
                signature: bytes(u.pqLastResortPreKey.signature),
              },
            }
          : {}),
      });
      return c.body(null, 204);
    },
  );
  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/keys/count',
      summary: 'How many one-time prekeys of each kind the server still holds for this device',
      security: basicAuth,
      responses: { 200: json(S.KeyCountResponse, 'Counts'), ...errors },
    }),
    async (c) => c.json(await core.keys.count(c.get('device')), 200),
  );
  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/keys/{accountId}/{deviceId}',
      summary: 'Prekey bundles for one device, or for every device with "*"; each one-time key is handed out once',
      description:
        'Rate limited per (requesting account, target account), by default 30 requests per 10 minutes, and per ' +
        'requesting account, by default 2,000 per hour: 429 `rate_limited` with Retry-After, and no key is taken.',
      security: basicAuth,
      request: {
        params: z.object({
          accountId: z.uuid(),
          deviceId: z.union([z.literal('*'), z.coerce.number().int().min(1).max(127)]),
        }),
      },
      responses: {
        200: json(S.BundleResponse, 'Bundles'),
        ...errors,
        404: json(S.ErrorBody, 'No such account or device'),
      },
    }),
    async (c) => {
      const { accountId, deviceId } = c.req.valid('param');
      const result = await core.keys.bundles(c.get('device'), accountId, deviceId);
      return c.json(
        {
          identityKey: b64(result.identityKey),
          devices: result.devices.map((d) => ({
            deviceId: d.deviceId,
            registrationId: d.registrationId,
            signedPreKey: {
              keyId: d.signedPreKey.keyId,
              publicKey: b64(d.signedPreKey.publicKey),
              signature: b64(d.signedPreKey.signature),
            },
            ...(d.preKey ? { preKey: { keyId: d.preKey.keyId, publicKey: b64(d.preKey.publicKey) } } : {}),
            pqPreKey: {
              keyId: d.pqPreKey.keyId,
              publicKey: b64(d.pqPreKey.publicKey),
              signature: b64(d.pqPreKey.signature),
            },
          })),
        },
        200,
      );
    },
  );

  // ---- messages (steps 6-8) ----
  app.openapi(
    createRoute({
      method: 'put',
      path: '/v1/messages/multi',
      summary: 'One ciphertext fanned out by the server to many devices (sender-key group messages)',
      description:
        'Every destination device counts as one envelope against the sending device’s limit (by default 60,000 ' +
        'per minute, shared with PUT /v1/messages/{accountId} and sends over the socket): 429 `rate_limited` with ' +
        'Retry-After, and nothing is stored.',
      security: basicAuth,
      request: body(S.MultiSendRequest),
      responses: {
        200: json(S.SendResponse, 'Stored durably for every device'),
        ...errors,
        409: json(S.ErrorBody, 'accounts[].missingDevices / extraDevices'),
        410: json(S.ErrorBody, 'accounts[].staleDevices'),
        413: json(S.ErrorBody, 'Message larger than 96 KiB'),
      },
    }),
    async (c) => {
      const r = c.req.valid('json');
      const result = await core.messages.sendMulti(c.get('device'), {
        type: r.type,
        content: bytes(r.content),
        recipients: r.recipients,
        timestamp: r.timestamp,
        ...(r.id ? { id: r.id } : {}),
      });
      return c.json(result, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'put',
      path: '/v1/messages/{accountId}',
      summary: 'Send one ciphertext per destination device; 200 only once every envelope is stored durably',
      description:
        'Every message counts as one envelope against the sending device’s limit (by default 60,000 per minute, ' +
        'shared with PUT /v1/messages/multi and sends over the socket): 429 `rate_limited` with Retry-After, and ' +
        'nothing is stored.',
      security: basicAuth,
      request: { params: S.AccountIdParam, ...body(S.SendRequest) },
      responses: {
        200: json(S.SendResponse, 'Stored durably'),
        ...errors,
        404: json(S.ErrorBody, 'No such account'),
        409: json(S.ErrorBody, 'missingDevices / extraDevices'),
        410: json(S.ErrorBody, 'staleDevices'),
        413: json(S.ErrorBody, 'Message larger than 96 KiB'),
      },
    }),
    async (c) => {
      const r = c.req.valid('json');
      const result = await core.messages.send(c.get('device'), c.req.valid('param').accountId, {
        messages: r.messages.map((m) => ({ ...m, content: bytes(m.content) })),
        timestamp: r.timestamp,
        ...(r.id ? { id: r.id } : {}),
      });
      return c.json(result, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/messages',
      summary: 'This device’s queue, oldest first (for clients without a socket)',
      security: basicAuth,
      request: { query: z.object({ limit: z.coerce.number().int().min(1).max(100).optional() }) },
      responses: { 200: json(S.QueueResponse, 'Queued envelopes'), ...errors },
    }),
    async (c) => {
      const { messages, more } = await core.messages.fetch(c.get('device'), c.req.valid('query').limit);
      return c.json({ messages: messages.map(envelopeJson), more }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'delete',
      path: '/v1/messages/{guid}',
      summary: 'Acknowledge (delete) an envelope of this device’s own queue',
      security: basicAuth,
      request: { params: z.object({ guid: z.uuid() }) },
      responses: { 204: { description: 'Deleted' }, ...errors, 404: json(S.ErrorBody, 'Not in this device’s queue') },
    }),
    async (c) => {
      await core.messages.acknowledge(c.get('device'), c.req.valid('param').guid);
      return c.body(null, 204);
    },
  );

  // ---- live delivery (step 7) ----
  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/websocket/token',
      summary: 'A single-use token (60 s) for opening GET /v1/websocket?token=… where headers cannot be set',
      security: basicAuth,
      responses: { 200: json(S.SocketTokenResponse, 'Token'), ...errors },
    }),
    (c) => c.json(deps.socketTokens.issue(c.get('device')), 200),
  );

  // ---- attachments ----
  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/attachments',
      summary: 'Upload an encrypted blob (raw body, application/octet-stream, at most 100 MiB)',
      security: basicAuth,
      request: {
        body: { content: { 'application/octet-stream': { schema: z.string().openapi({ format: 'binary' }) } } },
      },
      responses: { 200: json(S.AttachmentResponse, 'Stored'), ...errors, 413: json(S.ErrorBody, 'Too large') },
    }),
    async (c) => {
      const declared = Number(c.req.header('content-length') ?? 0);
      if (declared > MAX_ATTACHMENT_BYTES) throw new PayloadTooLargeError(MAX_ATTACHMENT_BYTES);
      const stream = c.req.raw.body;
      if (!stream) throw badRequest('empty_attachment', 'the body is empty');
      // An empty body fails the stream itself, so that the store keeps nothing for a rejected upload.
      let size = 0;
      const checked = stream.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, controller) {
            size += chunk.byteLength;
            controller.enqueue(chunk);
          },
          flush() {
            if (size === 0) throw badRequest('empty_attachment', 'the body is empty');
          },
        }),
      );
      const meta = await deps.attachments.put(
        randomUUID(),
        checked,
        MAX_ATTACHMENT_BYTES,
        core.clock.now() + ATTACHMENT_TTL_MS,
      );
      return c.json({ id: meta.id, size: meta.size, expiresAt: meta.expiresAt }, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/attachments/{id}',
      summary: 'Download an encrypted blob',
      security: basicAuth,
      request: { params: z.object({ id: z.uuid() }) },
      responses: {
        200: {
          content: { 'application/octet-stream': { schema: z.string().openapi({ format: 'binary' }) } },
          description: 'The blob',
        },
        ...errors,
        404: json(S.ErrorBody, 'No such attachment'),
      },
    }),
    async (c) => {
      const found = await deps.attachments.get(c.req.valid('param').id, core.clock.now());
      if (!found) throw notFound('attachment_not_found', 'no such attachment');
      return c.body(found.body, 200, {
        'content-type': 'application/octet-stream',
        'content-length': String(found.meta.size),
      });
    },
  );

  // ---- devices ----
  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/devices',
      summary: 'This account’s devices',
      security: basicAuth,
      responses: { 200: json(S.DevicesResponse, 'Devices'), ...errors },
    }),
    async (c) => {
      const devices = await core.devices.list(c.get('device').accountId);
      return c.json(
        { devices: devices.map(({ name, ...d }) => ({ ...d, ...(name ? { name: b64(name) } : {}) })) },
        200,
      );
    },
  );
  app.openapi(
    createRoute({
      method: 'put',
      path: '/v1/devices/push',
      summary: 'Register (or clear) this device’s Web Push subscription for content-free wake-ups',
      security: basicAuth,
      request: body(S.PushRequest),
      responses: { 204: { description: 'Saved' }, ...errors },
    }),
    async (c) => {
      const { webPush } = c.req.valid('json');
      const subscription = webPush ? JSON.stringify(webPush) : null;
      if (subscription && !parsePushSubscription(subscription)) {
        throw badRequest(
          'invalid_subscription',
          'a Web Push subscription needs an https endpoint, a P-256 p256dh key and a 16-byte auth secret',
        );
      }
      await core.accounts.setPushSubscription(c.get('device'), subscription);
      return c.body(null, 204);
    },
  );

  // ---- device linking (see core/devices.ts for the flow) ----
  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/devices/link-code',
      summary: 'A one-time link code for a new device (valid 10 minutes); primary device only',
      description:
        'The primary device (device 1) puts the code into the provisioning message it encrypts for the new device. ' +
        'The server keeps only its SHA-256. At most 10 codes per account per hour.',
      security: basicAuth,
      responses: {
        200: json(S.LinkCodeResponse, 'Link code'),
        ...errors,
        403: json(S.ErrorBody, 'primary_device_required: not device 1'),
      },
    }),
    async (c) => c.json(await core.devices.createLinkCode(c.get('device')), 200),
  );
  app.openapi(
    createRoute({
      method: 'put',
      path: '/v1/devices/link',
      summary: 'Link a new device to the account of a link code; it answers with the new device id',
      description:
        'No credentials: the link code authorizes. The keys are as in POST /v1/accounts and must be signed with ' +
        'the account’s identity key. The device gets the lowest free id from 2 to 6 and authenticates from then ' +
        'on as accountId.deviceId : password. The code is consumed with the device created, in one transaction; ' +
        'a rejected request leaves it usable. At most 10 attempts per code.',
      request: body(S.LinkDeviceRequest),
      responses: {
        200: json(S.LinkDeviceResponse, 'Linked'),
        400: json(S.ErrorBody, 'Bad request (e.g. invalid_key, invalid_signature, weak_password)'),
        403: json(S.ErrorBody, 'link_code_invalid: unknown, expired or already used'),
        409: json(S.ErrorBody, 'too_many_devices: the account has 6 devices'),
        429: errors[429],
      },
    }),
    async (c) => {
      const r = c.req.valid('json');
      const linked = await core.devices.link({
        code: r.code,
        password: r.password,
        registrationId: r.registrationId,
        ...(r.name !== undefined ? { name: bytes(r.name) } : {}),
        signedPreKey: {
          keyId: r.signedPreKey.keyId,
          publicKey: bytes(r.signedPreKey.publicKey),
          signature: bytes(r.signedPreKey.signature),
        },
        pqLastResortPreKey: {
          keyId: r.pqLastResortPreKey.keyId,
          publicKey: bytes(r.pqLastResortPreKey.publicKey),
          signature: bytes(r.pqLastResortPreKey.signature),
        },
        ...(r.preKeys ? { preKeys: r.preKeys.map((k) => ({ keyId: k.keyId, publicKey: bytes(k.publicKey) })) } : {}),
        ...(r.pqPreKeys
          ? {
              pqPreKeys: r.pqPreKeys.map((k) => ({
                keyId: k.keyId,
                publicKey: bytes(k.publicKey),
                signature: bytes(k.signature),
              })),
            }
          : {}),
      });
      return c.json(linked, 200);
    },
  );
  app.openapi(
    createRoute({
      method: 'delete',
      path: '/v1/devices/{deviceId}',
      summary: 'Remove a linked device with its keys and queue; its credentials stop working at once',
      description:
        'Device 1 may remove any other device; a linked device only itself. Device 1 cannot be removed. ' +
        'The removed device’s live WebSocket is closed with code 4403.',
      security: basicAuth,
      request: { params: S.DeviceIdParam },
      responses: {
        204: { description: 'Removed' },
        ...errors,
        400: json(S.ErrorBody, 'primary_device_not_removable, or a malformed device id'),
        403: json(S.ErrorBody, 'forbidden: a linked device can remove only itself'),
        404: json(S.ErrorBody, 'device_not_found'),
      },
    }),
    async (c) => {
      await core.devices.remove(c.get('device'), c.req.valid('param').deviceId);
      return c.body(null, 204);
    },
  );
  app.openapi(
    createRoute({
      method: 'put',
      path: '/v1/provisioning/{address}',
      summary: 'Leave an encrypted provisioning message for a new device (kept 10 minutes); primary device only',
      description: 'A second PUT to the same address replaces the message. At most 60 messages per account per hour.',
      security: basicAuth,
      request: { params: S.ProvisioningAddressParam, ...body(S.ProvisioningMessageBody) },
      responses: {
        204: { description: 'Stored' },
        ...errors,
        403: json(S.ErrorBody, 'primary_device_required: not device 1'),
        413: json(S.ErrorBody, 'Message larger than 65536 bytes'),
      },
    }),
    async (c) => {
      await core.devices.putProvisioningMessage(
        c.get('device'),
        c.req.valid('param').address,
        bytes(c.req.valid('json').body),
      );
      return c.body(null, 204);
    },
  );
  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/provisioning/{address}',
      summary: 'The provisioning message at this address, delivered once (then deleted); 204 while there is none',
      description: 'No credentials: the new device polls the random address it chose and showed in its QR code.',
      request: { params: S.ProvisioningAddressParam },
      responses: {
        200: json(S.ProvisioningMessageBody, 'The message (now deleted from the server)'),
        204: { description: 'Nothing there (yet)' },
        400: json(S.ErrorBody, 'Not a provisioning address'),
      },
    }),
    async (c) => {
      // HEAD is answered by this handler too; it must not use the message up.
      if (c.req.method !== 'GET') throw badRequest('invalid_request', 'use GET to fetch a provisioning message');
      const message = await core.devices.takeProvisioningMessage(c.req.valid('param').address);
      if (!message) return c.body(null, 204);
      return c.json({ body: b64(message) }, 200);
    },
  );

  // ---- operations ----
  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: {
      title: 'Hush server API',
      version: '1',
      description:
        'Verification, accounts, prekey directory and store-and-forward delivery of end-to-end encrypted messages.',
    },
  });
  app.get('/docs', (c) => c.html(docsPage()));
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/metrics', async (c) => {
    if (!deps.metrics) return c.json({ error: { code: 'not_found', message: 'metrics are off' } }, 404);
    const { contentType, body: text } = await deps.metrics.render();
    return c.body(text, 200, { 'content-type': contentType });
  });

  return app;
}

export type App = ReturnType<typeof createApp>;
