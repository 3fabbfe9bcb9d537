import { createHash, randomBytes } from 'node:crypto';
import { checkDeviceCredentials } from './accounts.ts';
import { hashPassword } from './credentials.ts';
import { ApiError, PayloadTooLargeError, RateLimitedError, badRequest, notFound } from './errors.ts';
import { validateKeyFormats, validateKeySignatures } from './keys.ts';
import {
  LINK_ATTEMPTS_PER_CODE,
  LINK_CODES_PER_ACCOUNT_PER_HOUR,
  LINK_CODE_TTL_MS,
  MAX_DEVICES_PER_ACCOUNT,
  MAX_DEVICE_NAME_BYTES,
  MAX_PROVISIONING_MESSAGE_BYTES,
  PROVISIONING_MESSAGES_PER_ACCOUNT_PER_HOUR,
  PROVISIONING_TTL_MS,
} from './limits.ts';
import type { AccountStore, Clock, DeliveryNotifier, Device, DeviceStore, KeyUpload, RateLimitStore } from './ports.ts';

/*
 * Linked devices (2 to 6), as Signal links them:
 * 1. The new device picks a random provisioning address and an ephemeral key, shows both as a QR
 *    code, and polls GET /v1/provisioning/{address}.
 * 2. The primary device (device 1) scans it, gets a one-time link code, encrypts a provisioning
 *    message (identity key pair, account, number, link code) to the ephemeral key and leaves it at
 *    the address. The server only relays it: it never sees what is inside.
 * 3. The new device decrypts it, makes its own keys, signs them with the account's identity key,
 *    and links itself with the code. The signatures prove it holds the identity private key.
 */

/** A provisioning address: base64url, 22 (128 bits) to 64 characters. */
export const PROVISIONING_ADDRESS = /^[A-Za-z0-9_-]{22,64}$/;

const HOUR = 60 * 60 * 1000;

export interface LinkRequest {
  code: string;
  password: string;
  registrationId: number;
  /** Encrypted by the client; at most 256 bytes. */
  name?: Uint8Array;
  signedPreKey: NonNullable<KeyUpload['signedPreKey']>;
  pqLastResortPreKey: NonNullable<KeyUpload['pqLastResortPreKey']>;
  preKeys?: KeyUpload['preKeys'];
  pqPreKeys?: KeyUpload['pqPreKeys'];
}

const hashCode = (code: string): Uint8Array => createHash('sha256').update(code, 'utf8').digest();

/** One answer for an unknown, used, expired or another account's code: no oracle. */
const linkCodeInvalid = () =>
  new ApiError(403, 'link_code_invalid', 'the link code is unknown, expired or already used');

const primaryRequired = () =>
  new ApiError(403, 'primary_device_required', 'only the primary device (device 1) can do this');

export class DeviceService {
  constructor(
    private readonly deps: {
      store: AccountStore & DeviceStore & RateLimitStore;
      notifier: DeliveryNotifier;
      clock: Clock;
    },
  ) {}

  private async limit(key: string, windowMs: number, max: number, what: string): Promise<void> {
    const now = this.deps.clock.now();
    const { count, resetAt } = await this.deps.store.hit(key, windowMs, now);
    if (count > max) throw new RateLimitedError(what, Math.max(1, Math.ceil((resetAt - now) / 1000)));
  }

  /** The account's devices; names stay encrypted. */
  async list(accountId: string) {
    const devices = await this.deps.store.listDevices(accountId);
    return devices.map((d) => ({
      deviceId: d.deviceId,
      registrationId: d.registrationId,
      createdAt: d.createdAt,
      ...(d.name ? { name: d.name } : {}),
    }));
  }

  /** A one-time code (32 random bytes, base64url) for linking one device, valid 10 minutes. */
  async createLinkCode(device: Device): Promise<{ code: string; expiresAt: number }> {
    if (device.deviceId !== 1) throw primaryRequired();
    await this.limit(
      `link-code:account:${device.accountId}`,
      HOUR,
      LINK_CODES_PER_ACCOUNT_PER_HOUR,
      'link codes for this account',
    );
    const code = randomBytes(32).toString('base64url');
    const now = this.deps.clock.now();
    const expiresAt = now + LINK_CODE_TTL_MS;
    await this.deps.store.insertLinkCode({
      codeHash: hashCode(code),
      accountId: device.accountId,
      createdAt: now,
      expiresAt,
    });
    return { code, expiresAt };
  }

  /** The primary device leaves an (encrypted, opaque) provisioning message for a new device. */
  async putProvisioningMessage(device: Device, address: string, body: Uint8Array): Promise<void> {
    if (!PROVISIONING_ADDRESS.test(address)) throw badRequest('invalid_address', 'not a provisioning address');
    if (device.deviceId !== 1) throw primaryRequired();
    if (body.length === 0) throw badRequest('empty_provisioning_message', 'the provisioning message is empty');
    if (body.length > MAX_PROVISIONING_MESSAGE_BYTES) throw new PayloadTooLargeError(MAX_PROVISIONING_MESSAGE_BYTES);
    await this.limit(
      `provisioning:account:${device.accountId}`,
      HOUR,
      PROVISIONING_MESSAGES_PER_ACCOUNT_PER_HOUR,
      'provisioning messages for this account',
    );
    await this.deps.store.putProvisioningMessage({
      address,
      accountId: device.accountId,
      body,
      expiresAt: this.deps.clock.now() + PROVISIONING_TTL_MS,
    });
  }

  /** The message at `address`, handed out once; null while there is none. */
  async takeProvisioningMessage(address: string): Promise<Uint8Array | null> {
    if (!PROVISIONING_ADDRESS.test(address)) throw badRequest('invalid_address', 'not a provisioning address');
    return this.deps.store.takeProvisioningMessage(address, this.deps.clock.now());
  }

  /**
   * Links a new device with a link code. Everything that needs no account is checked first; an
   * unknown code costs a hash and a lookup, nothing else. A known code counts an attempt before its
   * signatures are checked (the expensive part), at most 10 per code. The code is consumed and the
   * device stored in one transaction; a rejected request leaves the code usable.
   */
  async link(r: LinkRequest): Promise<{ accountId: string; number: string; deviceId: number }> {
    checkDeviceCredentials(r.password, r.registrationId);
    if (r.name !== undefined && (r.name.length === 0 || r.name.length > MAX_DEVICE_NAME_BYTES)) {
      throw badRequest('invalid_name', `the encrypted device name is 1 to ${MAX_DEVICE_NAME_BYTES} bytes`);
    }
    const keys = {
      signedPreKey: r.signedPreKey,
      pqLastResortPreKey: r.pqLastResortPreKey,
      ...(r.preKeys ? { preKeys: r.preKeys } : {}),
      ...(r.pqPreKeys ? { pqPreKeys: r.pqPreKeys } : {}),
    };
    validateKeyFormats(keys);

    const codeHash = hashCode(r.code);
    const code = await this.deps.store.getLinkCode(codeHash);
    if (!code || code.expiresAt <= this.deps.clock.now()) throw linkCodeInvalid();
    await this.limit(
      `link:attempt:${Buffer.from(codeHash).toString('base64url')}`,
      LINK_CODE_TTL_MS,
      LINK_ATTEMPTS_PER_CODE,
      'link attempts with this code',
    );
    const account = await this.deps.store.getAccount(code.accountId);
    if (!account) throw linkCodeInvalid();
    // Signed with the account's identity key: the new device holds the identity private key.
    await validateKeySignatures(account.identityKey, keys);

    const { hash, salt } = hashPassword(r.password);
    const now = this.deps.clock.now();
    const device = await this.deps.store.linkDevice(
      codeHash,
      {
        accountId: account.id,
        registrationId: r.registrationId,
        passwordHash: hash,
        passwordSalt: salt,
        createdAt: now,
        ...(r.name ? { name: r.name } : {}),
      },
      keys,
      now,
      MAX_DEVICES_PER_ACCOUNT,
    );
    return { accountId: account.id, number: account.number, deviceId: device.deviceId };
  }

  /**
   * Removes a device: the primary device may remove any linked device, a linked device only
   * itself; device 1 cannot be removed (re-registering the number starts the account over). Its
   * keys and queue go with it, its credentials stop working, and its live sockets are closed.
   */
  async remove(caller: Device, deviceId: number): Promise<void> {
    if (deviceId === 1) {
      throw badRequest(
        'primary_device_not_removable',
        'device 1 cannot be removed; re-register the number to start the account over',
      );
    }
    if (caller.deviceId !== 1 && caller.deviceId !== deviceId) {
      throw new ApiError(403, 'forbidden', 'a linked device can remove only itself');
    }
    if (!(await this.deps.store.removeDevice(caller.accountId, deviceId))) {
      throw notFound('device_not_found', 'no such device');
    }
    await this.deps.notifier.disconnect(caller.accountId, deviceId);
  }
}
