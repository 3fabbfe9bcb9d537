import {
  type CryptoProvider,
  IdentityKeyPair,
  KyberPreKeyRecord,
  PreKeyRecord,
  SignedPreKeyRecord,
} from '@hush/protocol';
import { type ClientProtocolStores, NS } from './store/protocol-stores.ts';
import { type StagedStore, jsonValue, parseJson } from './store/staged.ts';
import type { HttpApi, KeyUpload } from './transport/http-api.ts';
import { toBase64 } from './util/base64.ts';

/*
 * Steps 2-3: the device's account and key lifecycle. Private keys are generated here and never
 * leave the device; only public keys (with XEdDSA signatures by the identity key) are uploaded.
 */

/** Keep at least this many one-time keys of each kind on the server… */
export const MIN_SERVER_KEYS = 10;
/** …and refill to this many. */
export const TARGET_SERVER_KEYS = 100;
/** Rotate the signed prekey and the last-resort Kyber key this often. */
export const ROTATION_INTERVAL_MS = 2 * 24 * 60 * 60 * 1000;
/** Old signed prekeys stay usable this long, for PreKey messages still in flight. */
export const OLD_SIGNED_KEY_GRACE_MS = 30 * 24 * 60 * 60 * 1000;

export interface AccountRecord {
  serverUrl: string;
  number: string;
  accountId: string;
  deviceId: number;
  password: string;
  registrationId: number;
  nextPreKeyId: number;
  nextKyberPreKeyId: number;
  nextSignedPreKeyId: number;
  signedPreKeyId: number;
  signedPreKeyRotatedAt: number;
  lastResortKeyId: number;
  lastResortRotatedAt: number;
}

const ACCOUNT_NS = 'account';

export async function loadAccount(
  unit: StagedStore,
): Promise<{ account: AccountRecord; identity: IdentityKeyPair } | undefined> {
  const account = parseJson<AccountRecord>(await unit.get(ACCOUNT_NS, 'self'));
  const identity = await unit.get(ACCOUNT_NS, 'identity');
  return account && identity ? { account, identity: IdentityKeyPair.deserialize(identity) } : undefined;
}

export function saveAccount(unit: StagedStore, account: AccountRecord): void {
  unit.put(ACCOUNT_NS, 'self', jsonValue(account));
}

/** A password the server stores only as a hash: 24 random bytes, base64 (32 characters). */
export function newDevicePassword(crypto: CryptoProvider): string {
  return toBase64(crypto.randomBytes(24));
}

async function oneTimeKeys(
  crypto: CryptoProvider,
  identity: IdentityKeyPair,
  stores: ClientProtocolStores,
  from: number,
  count: number,
) {
  const preKeys: PreKeyRecord[] = [];
  const kyberKeys: KyberPreKeyRecord[] = [];
  for (let i = 0; i < count; i++) {
    preKeys.push(await PreKeyRecord.generate(crypto, from + i));
    kyberKeys.push(await KyberPreKeyRecord.generate(crypto, identity, from + i));
  }
  for (const k of preKeys) await stores.preKeys.savePreKey(k.id, k);
  for (const k of kyberKeys) await stores.kyberPreKeys.saveKyberPreKey(k.id, k);
  return {
    preKeys: preKeys.map((k) => ({ keyId: k.id, publicKey: k.keyPair.publicKey.serialize() })),
    pqPreKeys: kyberKeys.map((k) => ({
      keyId: k.id,
      publicKey: k.keyPair.publicKey.serialize(),
      signature: k.signature,
    })),
  };
}

async function signedKey(
  crypto: CryptoProvider,
  identity: IdentityKeyPair,
  stores: ClientProtocolStores,
  id: number,
  now: number,
) {
  const record = await SignedPreKeyRecord.generate(crypto, identity, id, now);
  await stores.signedPreKeys.saveSignedPreKey(id, record);
  return { keyId: id, publicKey: record.keyPair.publicKey.serialize(), signature: record.signature };
}

async function lastResortKey(
  crypto: CryptoProvider,
  identity: IdentityKeyPair,
  stores: ClientProtocolStores,
  id: number,
  now: number,
) {
  const record = await KyberPreKeyRecord.generate(crypto, identity, id, now);
  await stores.kyberPreKeys.saveKyberPreKey(id, record, true);
  return { keyId: id, publicKey: record.keyPair.publicKey.serialize(), signature: record.signature };
}

/** Ids of last-resort keys live far above one-time ids so the two never collide. */
const LAST_RESORT_ID_BASE = 0x800000;

export async function initialKeys(
  crypto: CryptoProvider,
  identity: IdentityKeyPair,
  stores: ClientProtocolStores,
  now: number,
) {
  const oneTime = await oneTimeKeys(crypto, identity, stores, 1, TARGET_SERVER_KEYS);
  const upload: Required<KeyUpload> = {
    ...oneTime,
    signedPreKey: await signedKey(crypto, identity, stores, 1, now),
    pqLastResortPreKey: await lastResortKey(crypto, identity, stores, LAST_RESORT_ID_BASE + 1, now),
  };
  const counters = {
    nextPreKeyId: TARGET_SERVER_KEYS + 1,
    nextKyberPreKeyId: TARGET_SERVER_KEYS + 1,
    nextSignedPreKeyId: 2,
    signedPreKeyId: 1,
    signedPreKeyRotatedAt: now,
    lastResortKeyId: LAST_RESORT_ID_BASE + 1,
    lastResortRotatedAt: now,
  };
  return { upload, counters };
}

/**
 * Keeps the server's supply of one-time keys between 10 and 100 and rotates the signed prekey and
 * the last-resort key every two days. Returns what it uploaded (for progress output).
 */
export async function maintainKeys(
  crypto: CryptoProvider,
  api: HttpApi,
  unit: StagedStore,
  stores: ClientProtocolStores,
  identity: IdentityKeyPair,
  account: AccountRecord,
  now: number,
): Promise<{ account: AccountRecord; uploaded: { preKeys: number; pqPreKeys: number; rotated: boolean } }> {
  const counts = await api.keyCounts();
  const upload: KeyUpload = {};
  const next = { ...account };
  const lowest = Math.min(counts.preKeys, counts.pqPreKeys);
  if (lowest < MIN_SERVER_KEYS) {
    const count = TARGET_SERVER_KEYS - lowest;
    const from = Math.max(account.nextPreKeyId, account.nextKyberPreKeyId);
    Object.assign(upload, await oneTimeKeys(crypto, identity, stores, from, count));
    next.nextPreKeyId = from + count;
    next.nextKyberPreKeyId = from + count;
  }
  const rotate = now - account.signedPreKeyRotatedAt >= ROTATION_INTERVAL_MS;
  if (rotate) {
    upload.signedPreKey = await signedKey(crypto, identity, stores, account.nextSignedPreKeyId, now);
    next.signedPreKeyId = account.nextSignedPreKeyId;
    next.nextSignedPreKeyId = account.nextSignedPreKeyId + 1;
    next.signedPreKeyRotatedAt = now;
    upload.pqLastResortPreKey = await lastResortKey(crypto, identity, stores, account.lastResortKeyId + 1, now);
    next.lastResortKeyId = account.lastResortKeyId + 1;
    next.lastResortRotatedAt = now;
    // A replaced signed key stays usable for the grace period after it was replaced (not after it
    // was made: a device back after a month would otherwise drop the key that messages sent to it
    // while it was away name). Listed in id order, so a key was replaced when the next one was made.
    const signed = await unit.list(NS.signedPreKeys);
    for (let i = 0; i + 1 < signed.length; i++) {
      const [key] = signed[i] as [string, Uint8Array];
      const [, newer] = signed[i + 1] as [string, Uint8Array];
      if (now - SignedPreKeyRecord.deserialize(newer).timestamp > OLD_SIGNED_KEY_GRACE_MS)
        unit.delete(NS.signedPreKeys, key);
    }
  }
  if (Object.keys(upload).length > 0) await api.uploadKeys(upload);
  return {
    account: next,
    uploaded: { preKeys: upload.preKeys?.length ?? 0, pqPreKeys: upload.pqPreKeys?.length ?? 0, rotated: rotate },
  };
}
