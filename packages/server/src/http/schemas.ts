import { z } from '@hono/zod-openapi';

/*
 * The wire shapes of the HTTP API (JSON; binary fields base64). They are the single source of the
 * OpenAPI document at /openapi.json and of request validation.
 */

export const Base64 = z.base64().openapi({ format: 'byte', example: 'BQ==' });
const Uuid = z.uuid();
/** A device id in a JSON body: a number, not a string or boolean coerced to one. */
const DeviceId = z.number().int().min(1).max(127);
const KeyId = z.number().int().min(0).max(0xffffff);
const RegistrationId = z.number().int().min(1).max(0x3fff);
/** Milliseconds since the epoch, as a client clock reads it. */
const Timestamp = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const ErrorBody = z
  .object({
    error: z.object({ code: z.string(), message: z.string() }).catchall(z.unknown()),
  })
  .openapi('Error');

export const ECPreKey = z.object({ keyId: KeyId, publicKey: Base64 }).openapi('ECPreKey');
export const SignedECPreKey = ECPreKey.extend({ signature: Base64 }).openapi('SignedECPreKey');
export const KyberPreKey = z.object({ keyId: KeyId, publicKey: Base64, signature: Base64 }).openapi('KyberPreKey');

export const StartVerificationRequest = z.object({ number: z.string().min(1).max(64) }).openapi('StartVerification');
export const VerificationSessionResponse = z
  .object({ id: Uuid, number: z.string(), expiresAt: z.number(), verified: z.boolean() })
  .openapi('VerificationSession');
export const SubmitCodeRequest = z.object({ code: z.string().min(1).max(16) }).openapi('SubmitCode');

export const RegisterRequest = z
  .object({
    verificationSessionId: Uuid,
    password: z.string().min(1).max(512),
    identityKey: Base64,
    registrationId: RegistrationId,
    signedPreKey: SignedECPreKey,
    pqLastResortPreKey: KyberPreKey,
    preKeys: z.array(ECPreKey).max(100).optional(),
    pqPreKeys: z.array(KyberPreKey).max(100).optional(),
    name: z.string().max(64).optional(),
  })
  .openapi('Register');
export const RegisterResponse = z
  .object({ accountId: Uuid, deviceId: z.number(), number: z.string() })
  .openapi('Registered');

export const KeyUploadRequest = z
  .object({
    preKeys: z.array(ECPreKey).max(100).optional(),
    pqPreKeys: z.array(KyberPreKey).max(100).optional(),
    signedPreKey: SignedECPreKey.optional(),
    pqLastResortPreKey: KyberPreKey.optional(),
  })
  .openapi('KeyUpload');
export const KeyCountResponse = z.object({ preKeys: z.number(), pqPreKeys: z.number() }).openapi('KeyCount');
export const BundleResponse = z
  .object({
    identityKey: Base64,
    devices: z.array(
      z.object({
        deviceId: z.number(),
        registrationId: z.number(),
        signedPreKey: SignedECPreKey,
        preKey: ECPreKey.optional(),
        pqPreKey: KyberPreKey,
      }),
    ),
  })
  .openapi('PreKeyBundles');

export const SendRequest = z
  .object({
    messages: z
      .array(
        z.object({
          deviceId: DeviceId,
          registrationId: RegistrationId,
          type: z.number().int().min(0).max(255),
          content: Base64,
        }),
      )
      .max(6 * 2),
    timestamp: Timestamp,
    /** Client-chosen message id: a retried send with the same id is stored once. */
    id: z.string().min(1).max(128).optional(),
  })
  .openapi('SendMessages');
export const MultiSendRequest = z
  .object({
    type: z.number().int().min(0).max(255),
    content: Base64,
    recipients: z
      .array(
        z.object({
          accountId: Uuid,
          devices: z.array(z.object({ deviceId: DeviceId, registrationId: RegistrationId })).max(6),
        }),
      )
      .min(1)
      .max(1000),
    timestamp: Timestamp,
    id: z.string().min(1).max(128).optional(),
  })
  .openapi('SendMultiRecipient');
export const SendResponse = z.object({ duplicate: z.boolean() }).openapi('Sent');

export const EnvelopeBody = z
  .object({
    guid: Uuid,
    type: z.number(),
    sourceAccountId: Uuid,
    sourceDeviceId: z.number(),
    destinationDeviceId: z.number(),
    timestamp: z.number(),
    serverTimestamp: z.number(),
    content: Base64,
  })
  .openapi('Envelope');
export const QueueResponse = z.object({ messages: z.array(EnvelopeBody), more: z.boolean() }).openapi('Queue');

export const SocketTokenResponse = z.object({ token: z.string(), expiresAt: z.number() }).openapi('SocketToken');
export const AttachmentResponse = z.object({ id: Uuid, size: z.number(), expiresAt: z.number() }).openapi('Attachment');
export const DevicesResponse = z
  .object({
    devices: z.array(
      z.object({
        deviceId: z.number(),
        registrationId: z.number(),
        createdAt: z.number(),
        name: Base64.optional().openapi({ description: 'The device name as the client encrypted it (linked devices)' }),
      }),
    ),
  })
  .openapi('Devices');

export const LinkCodeResponse = z
  .object({
    code: z.string().openapi({ description: '32 random bytes, base64url; single use' }),
    expiresAt: z.number().openapi({ description: 'ms since the epoch; 10 minutes after it was made' }),
  })
  .openapi('LinkCode');
export const LinkDeviceRequest = z
  .object({
    code: z.string().min(1).max(256).openapi({ description: 'A link code from POST /v1/devices/link-code' }),
    password: z.string().min(1).max(512),
    registrationId: RegistrationId,
    name: Base64.optional().openapi({ description: 'The device name, encrypted by the client: 1 to 256 bytes' }),
    signedPreKey: SignedECPreKey,
    pqLastResortPreKey: KyberPreKey,
    preKeys: z.array(ECPreKey).max(100).optional(),
    pqPreKeys: z.array(KyberPreKey).max(100).optional(),
  })
  .openapi('LinkDevice');
export const LinkDeviceResponse = z
  .object({ accountId: Uuid, number: z.string(), deviceId: z.number() })
  .openapi('LinkedDevice');
export const DeviceIdParam = z.object({
  deviceId: z.coerce
    .number()
    .int()
    .min(1)
    .max(127)
    .openapi({ param: { name: 'deviceId', in: 'path' } }),
});

/** A provisioning address: chosen by the new device, base64url, 22 to 64 characters. */
export const ProvisioningAddressParam = z.object({
  address: z
    .string()
    .regex(/^[A-Za-z0-9_-]{22,64}$/)
    .openapi({ param: { name: 'address', in: 'path' }, example: 'q8YkM0p2WmN1bXJ0dGVzdA' }),
});
export const ProvisioningMessageBody = z
  .object({
    body: Base64.openapi({
      description: 'Encrypted by the primary device to the new device’s ephemeral key; 1 to 65536 bytes',
    }),
  })
  .openapi('ProvisioningMessage');
export const PushRequest = z
  .object({
    /** A Web Push subscription (PushSubscription.toJSON()), or null to stop wake-ups. */
    webPush: z
      .object({ endpoint: z.url(), keys: z.object({ p256dh: z.string().min(1), auth: z.string().min(1) }) })
      .nullable(),
  })
  .openapi('PushRegistration');

export const AccountIdParam = z.object({ accountId: Uuid.openapi({ param: { name: 'accountId', in: 'path' } }) });
