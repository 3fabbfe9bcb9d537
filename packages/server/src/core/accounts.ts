import { randomUUID } from 'node:crypto';
import { hashPassword, passwordMatches } from './credentials.ts';
import { ApiError, badRequest, notFound, unauthorized } from './errors.ts';
import { validateKeyUpload } from './keys.ts';
import { MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, VERIFIED_SESSION_TTL_MS } from './limits.ts';
import type { AccountStore, Clock, Device, KeyUpload, VerificationStore } from './ports.ts';

export interface Registration {
  verificationSessionId: string;
  password: string;
  identityKey: Uint8Array;
  registrationId: number;
  signedPreKey: NonNullable<KeyUpload['signedPreKey']>;
  pqLastResortPreKey: NonNullable<KeyUpload['pqLastResortPreKey']>;
  preKeys?: KeyUpload['preKeys'];
  pqPreKeys?: KeyUpload['pqPreKeys'];
  name?: string;
}

/** The checks every new device's password and registration id pass (device 1 and linked ones). */
export function checkDeviceCredentials(password: string, registrationId: number): void {
  if (password.length < MIN_PASSWORD_LENGTH || password.length > MAX_PASSWORD_LENGTH) {
    throw badRequest(
      'weak_password',
      `the device password must be ${MIN_PASSWORD_LENGTH} to ${MAX_PASSWORD_LENGTH} random characters`,
    );
  }
  if (!Number.isInteger(registrationId) || registrationId < 1 || registrationId > 0x3fff) {
    throw badRequest('invalid_registration_id', 'the registration id is a 14-bit number from 1 to 16383');
  }
}

// Checked when an account is unknown, so that a miss costs the same as a wrong password.
const DUMMY = hashPassword('dummy password for constant-time misses');

/** Accounts and their devices: registration from a verified number, and device authentication. */
export class AccountService {
  constructor(private readonly deps: { store: AccountStore & VerificationStore; clock: Clock }) {}

  async register(r: Registration) {
    const session = await this.deps.store.getVerificationSession(r.verificationSessionId);
    if (!session) throw notFound('verification_session_not_found', 'no such verification session');
    if (!session.verified)
      throw new ApiError(403, 'number_not_verified', 'the verification session has no correct code yet');
    if (session.consumed)
      throw new ApiError(409, 'verification_session_used', 'this verification session was already used');
    const now = this.deps.clock.now();
    if (now > session.createdAt + VERIFIED_SESSION_TTL_MS) {
      throw new ApiError(410, 'verification_session_expired', 'the verification session has expired');
    }
    checkDeviceCredentials(r.password, r.registrationId);
    if (r.identityKey.length !== 33 || r.identityKey[0] !== 0x05) {
      throw badRequest('invalid_key', 'identityKey: a Curve25519 public key is 33 bytes starting with 0x05');
    }
    const keys = {
      signedPreKey: r.signedPreKey,
      pqLastResortPreKey: r.pqLastResortPreKey,
      ...(r.preKeys ? { preKeys: r.preKeys } : {}),
      ...(r.pqPreKeys ? { pqPreKeys: r.pqPreKeys } : {}),
    };
    await validateKeyUpload(r.identityKey, keys);

    const accountId = randomUUID();
    const { hash, salt } = hashPassword(r.password);
    const device: Device = {
      accountId,
      deviceId: 1,
      registrationId: r.registrationId,
      passwordHash: hash,
      passwordSalt: salt,
      createdAt: now,
    };
    const { replacedAccountId } = await this.deps.store.createAccount(
      {
        id: accountId,
        number: session.number,
        identityKey: r.identityKey,
        createdAt: now,
        ...(r.name ? { name: r.name } : {}),
      },
      device,
      keys,
      session.id,
    );
    return { accountId, deviceId: 1, number: session.number, replacedAccountId };
  }

  /** The device behind `accountId.deviceId : password`, or 401. */
  async authenticate(accountId: string, deviceId: number, password: string): Promise<Device> {
    const device = Number.isInteger(deviceId) ? await this.deps.store.getDevice(accountId, deviceId) : null;
    if (!device) {
      passwordMatches(password, DUMMY.hash, DUMMY.salt);
      throw unauthorized();
    }
    if (!passwordMatches(password, device.passwordHash, device.passwordSalt)) throw unauthorized();
    return device;
  }

  async setPushSubscription(device: Device, subscription: string | null) {
    await this.deps.store.setPushSubscription(device.accountId, device.deviceId, subscription);
  }
}
