import { KEMPublicKey, PublicKey } from '@hush/protocol';
import { nodeCrypto } from '@hush/protocol/node';
import { ApiError, badRequest, notFound } from './errors.ts';
import {
  DEFAULT_KEY_FETCH_LIMITS,
  KEY_FETCH_ACCOUNT_WINDOW_MS,
  KEY_FETCH_TARGET_WINDOW_MS,
  MAX_KEYS_PER_UPLOAD,
} from './limits.ts';
import type {
  AccountStore,
  Clock,
  Device,
  ECPreKey,
  KeyStore,
  KeyUpload,
  KyberPreKey,
  RateLimitStore,
  SignedECPreKey,
} from './ports.ts';
import { enforceLimit } from './rate-limiter.ts';

/*
 * Step 4 of the flow: the prekey directory. The server checks every key's format and every
 * signature against the account's identity key (XEdDSA, via @hush/protocol) before storing it,
 * so a bundle it hands out is always one the recipient will accept.
 */

const MAX_KEY_ID = 0xffffff;

function checkKeyId(keyId: number, what: string): void {
  if (!Number.isInteger(keyId) || keyId < 0 || keyId > MAX_KEY_ID)
    throw badRequest('invalid_key_id', `${what}: key id out of range`);
}

function checkECKey(key: ECPreKey, what: string): void {
  checkKeyId(key.keyId, what);
  if (key.publicKey.length !== 33) throw badRequest('invalid_key', `${what}: an EC public key is 33 bytes`);
  try {
    PublicKey.deserialize(key.publicKey);
  } catch {
    throw badRequest('invalid_key', `${what}: not a Curve25519 public key (type byte 0x05)`);
  }
}

async function checkSignature(identityKey: PublicKey, key: SignedECPreKey | KyberPreKey, what: string): Promise<void> {
  if (key.signature.length !== 64 || !(await identityKey.verifySignature(nodeCrypto, key.publicKey, key.signature))) {
    throw badRequest('invalid_signature', `${what}: the signature does not verify with the identity key`);
  }
}

function checkKyberKey(key: KyberPreKey, what: string): void {
  checkKeyId(key.keyId, what);
  try {
    KEMPublicKey.deserialize(key.publicKey);
  } catch {
    throw badRequest('invalid_key', `${what}: not a Kyber1024 public key (type byte 0x08, 1569 bytes)`);
  }
}

function checkUniqueIds(keys: { keyId: number }[], what: string): void {
  if (new Set(keys.map((k) => k.keyId)).size !== keys.length)
    throw badRequest('duplicate_key_id', `${what}: key ids repeat`);
}

/**
 * Checks what an upload's keys look like (counts, ids, formats), without their signatures: what
 * can be checked before it is known under which identity key they must verify.
 */
export function validateKeyFormats(upload: KeyUpload): void {
  const preKeys = upload.preKeys ?? [];
  const pqPreKeys = upload.pqPreKeys ?? [];
  if (preKeys.length > MAX_KEYS_PER_UPLOAD || pqPreKeys.length > MAX_KEYS_PER_UPLOAD) {
    throw badRequest('too_many_keys', `at most ${MAX_KEYS_PER_UPLOAD} one-time keys of each kind per upload`);
  }
  checkUniqueIds(preKeys, 'preKeys');
  checkUniqueIds(pqPreKeys, 'pqPreKeys');
  for (const [i, k] of preKeys.entries()) checkECKey(k, `preKeys[${i}]`);
  for (const [i, k] of pqPreKeys.entries()) checkKyberKey(k, `pqPreKeys[${i}]`);
  if (upload.signedPreKey) checkECKey(upload.signedPreKey, 'signedPreKey');
  if (upload.pqLastResortPreKey) checkKyberKey(upload.pqLastResortPreKey, 'pqLastResortPreKey');
}

/** Checks every signature of an upload against the identity key (after `validateKeyFormats`). */
export async function validateKeySignatures(identityKeyBytes: Uint8Array, upload: KeyUpload): Promise<void> {
  const identityKey = PublicKey.deserialize(identityKeyBytes);
  const signed: [SignedECPreKey | KyberPreKey, string][] = (upload.pqPreKeys ?? []).map((k, i) => [
    k,
    `pqPreKeys[${i}]`,
  ]);
  if (upload.signedPreKey) signed.push([upload.signedPreKey, 'signedPreKey']);
  if (upload.pqLastResortPreKey) signed.push([upload.pqLastResortPreKey, 'pqLastResortPreKey']);
  for (const [key, what] of signed) await checkSignature(identityKey, key, what);
}

/** Validates an upload completely (formats, counts, signatures) before anything is stored. */
export async function validateKeyUpload(identityKeyBytes: Uint8Array, upload: KeyUpload): Promise<void> {
  PublicKey.deserialize(identityKeyBytes);
  validateKeyFormats(upload);
  await validateKeySignatures(identityKeyBytes, upload);
}

export interface DeviceBundle {
  deviceId: number;
  registrationId: number;
  signedPreKey: SignedECPreKey;
  preKey?: ECPreKey;
  pqPreKey: KyberPreKey;
}

/**
 * How many bundle requests (GET /v1/keys/{accountId}/{deviceId|*}) an account may make. Each
 * request counts once, whichever devices it asks for; it takes at most one one-time key of each
 * kind per device, so a requester drains at most `perTargetPer10Minutes` one-time keys from each
 * device of a target in 10 minutes.
 */
export interface KeyFetchLimits {
  /** Requests of one account for the bundles of one target account per 10 minutes. */
  perTargetPer10Minutes: number;
  /** Requests of one account for anyone's bundles per hour. */
  perAccountPerHour: number;
}

export class KeyService {
  private readonly limits: KeyFetchLimits;

  constructor(
    private readonly deps: {
      store: KeyStore & AccountStore & RateLimitStore;
      clock: Clock;
      limits?: KeyFetchLimits;
    },
  ) {
    this.limits = deps.limits ?? DEFAULT_KEY_FETCH_LIMITS;
  }

  async upload(device: Device, upload: KeyUpload): Promise<void> {
    const account = await this.deps.store.getAccount(device.accountId);
    if (!account) throw new ApiError(401, 'unauthorized', 'account no longer exists');
    await validateKeyUpload(account.identityKey, upload);
    await this.deps.store.storeKeys(device.accountId, device.deviceId, upload);
  }

  count(device: Device) {
    return this.deps.store.countKeys(device.accountId, device.deviceId);
  }

  /**
   * Bundles for one device or, with `'*'`, every device of the account. One-time keys are used up,
   * so fetches are limited per (requesting account, target account) and per requesting account,
   * in the shared RateLimitStore (a fetch is a write anyway, and rarer than a send by far). An
   * unknown account or device is answered (404) before anything is counted: it costs reads only
   * and takes no key. A refused fetch takes no key either. Linked devices of the requester share
   * its counts.
   */
  async bundles(requester: Device, accountId: string, deviceSelector: number | '*') {
    const account = await this.deps.store.getAccount(accountId);
    if (!account) throw notFound('account_not_found', 'no such account');
    const devices =
      deviceSelector === '*'
        ? await this.deps.store.listDevices(accountId)
        : [await this.deps.store.getDevice(accountId, deviceSelector)].filter((d): d is Device => d !== null);
    if (devices.length === 0) throw notFound('device_not_found', 'no such device');
    const now = this.deps.clock.now();
    await enforceLimit(
      this.deps.store,
      `keys:target:${requester.accountId}:${accountId}`,
      KEY_FETCH_TARGET_WINDOW_MS,
      this.limits.perTargetPer10Minutes,
      now,
      'key fetches for this account',
    );
    await enforceLimit(
      this.deps.store,
      `keys:account:${requester.accountId}`,
      KEY_FETCH_ACCOUNT_WINDOW_MS,
      this.limits.perAccountPerHour,
      now,
      'key fetches',
    );
    const bundles: DeviceBundle[] = [];
    for (const device of devices) {
      const taken = await this.deps.store.takeKeys(accountId, device.deviceId);
      if (!taken) continue;
      bundles.push({
        deviceId: device.deviceId,
        registrationId: device.registrationId,
        signedPreKey: taken.signedPreKey,
        ...(taken.preKey ? { preKey: taken.preKey } : {}),
        pqPreKey: taken.pqPreKey,
      });
    }
    if (bundles.length === 0) throw notFound('device_not_found', 'no device with keys');
    return { identityKey: account.identityKey, devices: bundles };
  }
}
