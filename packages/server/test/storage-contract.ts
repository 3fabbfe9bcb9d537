import { randomInt, randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApiError } from '../src/core/errors.ts';
import { VERIFICATION_SESSION_RETENTION_MS } from '../src/core/limits.ts';
import type {
  Account,
  Device,
  ECPreKey,
  Envelope,
  KeyUpload,
  KyberPreKey,
  LinkCode,
  SendReceipt,
  SignedECPreKey,
  Storage,
  VerificationSession,
} from '../src/core/ports.ts';

/**
 * The behaviour every `Storage` adapter must have. `open` must hand out an empty storage (a fresh
 * database, fresh tables, or an isolated namespace); the tests also use unique ids throughout.
 *
 * Conventions the suite pins down, beyond the port's doc comments:
 * - binary fields come back as Uint8Array with the same bytes;
 * - an envelope or send receipt is expired when `expiresAt <= now`; a rate-limit window has ended
 *   when `now >= resetAt`;
 * - `createAccount` rejects with ApiError: 409 for a consumed verification session, 4xx for an
 *   unknown, unverified or other-number session; a rejected call changes nothing;
 * - `takeKeys` may hand out the one-time keys in any order; a one-time EC key is optional;
 * - a link code or provisioning message is expired when `expiresAt <= now`; `linkDevice` rejects
 *   with ApiError 403 `link_code_invalid` or 409 `too_many_devices` and then changes nothing;
 * - `deleteExpired(now)` drops a verification session in any state once
 *   `expiresAt + VERIFICATION_SESSION_RETENTION_MS <= now`, and not before.
 */
export function storageContract(name: string, open: () => Promise<{ storage: Storage; close(): Promise<void> }>) {
  describe(`storage contract: ${name}`, () => {
    let storage: Storage;
    let close: () => Promise<void>;

    beforeEach(async () => {
      ({ storage, close } = await open());
    });
    afterEach(async () => {
      await close();
    });

    const T0 = 1_700_000_000_000;
    const DAY = 86_400_000;

    const bytes = (length: number, seed: number) => Uint8Array.from({ length }, (_, i) => (seed * 31 + i * 7) & 0xff);
    const uid = () => randomUUID();
    const newNumber = () => `+1${randomInt(2_000_000_000, 9_999_999_999)}`;

    const ecKey = (keyId: number): ECPreKey => ({ keyId, publicKey: bytes(33, keyId) });
    const signedKey = (keyId: number): SignedECPreKey => ({
      keyId,
      publicKey: bytes(33, keyId + 1000),
      signature: bytes(64, keyId),
    });
    const kyberKey = (keyId: number): KyberPreKey => ({
      keyId,
      publicKey: bytes(1569, keyId + 2000),
      signature: bytes(64, keyId + 2000),
    });
    const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);

    function session(over: Partial<VerificationSession> = {}): VerificationSession {
      return {
        id: uid(),
        number: newNumber(),
        codeHash: bytes(32, 7),
        createdAt: T0,
        expiresAt: T0 + 600_000,
        failedAttempts: 0,
        verified: true,
        consumed: false,
        ...over,
      };
    }

    interface Registered {
      account: Account;
      device: Device;
      sessionId: string;
      replacedAccountId?: string;
    }

    /** Verifies `number` and creates an account for it with device 1. */
    async function register(
      opts: { number?: string; keys?: KeyUpload; name?: string; deviceId?: number } = {},
    ): Promise<Registered> {
      const s = session(opts.number ? { number: opts.number } : {});
      await storage.insertVerificationSession(s);
      const account: Account = {
        id: uid(),
        number: s.number,
        identityKey: bytes(33, 5),
        createdAt: T0,
        ...(opts.name ? { name: opts.name } : {}),
      };
      const device: Device = {
        accountId: account.id,
        deviceId: opts.deviceId ?? 1,
        registrationId: 4242,
        passwordHash: bytes(32, 1),
        passwordSalt: bytes(16, 2),
        createdAt: T0,
      };
      const result = await storage.createAccount(
        account,
        device,
        { signedPreKey: signedKey(1), pqLastResortPreKey: kyberKey(1), ...opts.keys },
        s.id,
      );
      return { account, device, sessionId: s.id, ...result };
    }

    let guidSeq = 0;
    function envelope(to: { accountId: string; deviceId: number }, over: Partial<Envelope> = {}): Envelope {
      const n = guidSeq++;
      return {
        guid: uid(),
        type: 1,
        sourceAccountId: 'sender',
        sourceDeviceId: 1,
        destinationAccountId: to.accountId,
        destinationDeviceId: to.deviceId,
        timestamp: T0 + n,
        serverTimestamp: T0 + n + 1,
        content: bytes(50 + (n % 7), n),
        expiresAt: T0 + 30 * DAY,
        ...over,
      };
    }
    const strip = ({ cursor: _cursor, ...rest }: Envelope & { cursor?: string }): Envelope => rest;
    const receipt = (over: Partial<SendReceipt> = {}): SendReceipt => ({
      sourceAccountId: 'sender',
      sourceDeviceId: 1,
      messageId: uid(),
      expiresAt: T0 + DAY,
      ...over,
    });

    async function rejectsWith(promise: Promise<unknown>, status?: number): Promise<ApiError> {
      const error = await promise.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error, 'expected an ApiError rejection').toBeInstanceOf(ApiError);
      const api = error as ApiError;
      if (status !== undefined) expect(api.status).toBe(status);
      else expect(api.status >= 400 && api.status < 500).toBe(true);
      return api;
    }

    // ---------------------------------------------------------------------------------------------
    describe('verification sessions', () => {
      it('round-trips a session with every field', async () => {
        const s = session({ failedAttempts: 2, verified: false });
        await storage.insertVerificationSession(s);
        const got = await storage.getVerificationSession(s.id);
        expect(got).toEqual(s);
        expect(got?.codeHash).toBeInstanceOf(Uint8Array);
      });

      it('returns null for an unknown id', async () => {
        expect(await storage.getVerificationSession(uid())).toBeNull();
      });

      it('updates a session and leaves the others alone', async () => {
        const a = session({ verified: false });
        const b = session({ verified: false });
        await storage.insertVerificationSession(a);
        await storage.insertVerificationSession(b);
        const updated = {
          ...a,
          codeHash: bytes(32, 99),
          expiresAt: a.expiresAt + 1,
          failedAttempts: 3,
          verified: true,
        };
        await storage.updateVerificationSession(updated);
        expect(await storage.getVerificationSession(a.id)).toEqual(updated);
        expect(await storage.getVerificationSession(b.id)).toEqual(b);
      });

      it('deleteExpired keeps a session for a day after it expired, then drops it whatever its state', async () => {
        const KEEP = VERIFICATION_SESSION_RETENTION_MS;
        const now = T0 + 10 * DAY;
        const pending = session({ verified: false, expiresAt: now - KEEP });
        const failed = session({ verified: false, failedAttempts: 5, expiresAt: now - KEEP - DAY });
        const verified = session({ verified: true, expiresAt: now - KEEP });
        const justExpired = session({ verified: false, expiresAt: now - 1 });
        const lastMoment = session({ verified: true, expiresAt: now - KEEP + 1 });
        const live = session({ verified: false, expiresAt: now + 600_000 });
        for (const s of [pending, failed, verified, justExpired, lastMoment, live]) {
          await storage.insertVerificationSession(s);
        }
        // A consumed one: the session an account was created from.
        const consumed = await register();
        await storage.updateVerificationSession({
          ...((await storage.getVerificationSession(consumed.sessionId)) as VerificationSession),
          expiresAt: now - KEEP - 1,
        });
        expect((await storage.getVerificationSession(consumed.sessionId))?.consumed).toBe(true);

        expect(await storage.deleteExpired(now)).toBe(0); // counts envelopes only
        for (const gone of [pending, failed, verified])
          expect(await storage.getVerificationSession(gone.id)).toBeNull();
        expect(await storage.getVerificationSession(consumed.sessionId)).toBeNull();
        for (const kept of [justExpired, lastMoment, live]) {
          expect(await storage.getVerificationSession(kept.id)).toEqual(kept);
        }
        // The account made from the dropped session stays.
        expect(await storage.getAccount(consumed.account.id)).toEqual(consumed.account);

        await storage.deleteExpired(now + 1);
        expect(await storage.getVerificationSession(lastMoment.id)).toBeNull();
        expect(await storage.getVerificationSession(justExpired.id)).toEqual(justExpired);
      });

      it('a dropped session cannot be registered and its number can be verified anew', async () => {
        const old = session({ verified: true, expiresAt: T0 });
        await storage.insertVerificationSession(old);
        await storage.deleteExpired(T0 + VERIFICATION_SESSION_RETENTION_MS);
        expect(await storage.getVerificationSession(old.id)).toBeNull();
        const account: Account = { id: uid(), number: old.number, identityKey: bytes(33, 5), createdAt: T0 };
        const device: Device = {
          accountId: account.id,
          deviceId: 1,
          registrationId: 1,
          passwordHash: bytes(32, 1),
          passwordSalt: bytes(16, 2),
          createdAt: T0,
        };
        const keys = { signedPreKey: signedKey(1), pqLastResortPreKey: kyberKey(1) };
        await rejectsWith(storage.createAccount(account, device, keys, old.id));
        expect(await storage.getAccountByNumber(old.number)).toBeNull();
        const fresh = session({ number: old.number });
        await storage.insertVerificationSession(fresh);
        await storage.createAccount(account, device, keys, fresh.id);
        expect(await storage.getAccountByNumber(old.number)).toEqual(account);
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('rate limits', () => {
      it('counts hits in a window that starts at the first hit', async () => {
        const key = `k-${uid()}`;
        expect(await storage.hit(key, 60_000, T0)).toEqual({ count: 1, resetAt: T0 + 60_000 });
        expect(await storage.hit(key, 60_000, T0 + 1_000)).toEqual({ count: 2, resetAt: T0 + 60_000 });
        expect(await storage.hit(key, 60_000, T0 + 59_999)).toEqual({ count: 3, resetAt: T0 + 60_000 });
      });

      it('starts a new window once the old one has ended', async () => {
        const key = `k-${uid()}`;
        await storage.hit(key, 60_000, T0);
        await storage.hit(key, 60_000, T0 + 10);
        expect(await storage.hit(key, 60_000, T0 + 60_000)).toEqual({ count: 1, resetAt: T0 + 120_000 });
        expect(await storage.hit(key, 60_000, T0 + 60_001)).toEqual({ count: 2, resetAt: T0 + 120_000 });
        expect(await storage.hit(key, 60_000, T0 + 500_000)).toEqual({ count: 1, resetAt: T0 + 560_000 });
      });

      it('keeps keys apart', async () => {
        const a = `a-${uid()}`;
        const b = `b-${uid()}`;
        await storage.hit(a, 1_000, T0);
        await storage.hit(a, 1_000, T0);
        expect((await storage.hit(b, 1_000, T0)).count).toBe(1);
        expect((await storage.hit(a, 1_000, T0)).count).toBe(3);
      });

      it('counts every one of 50 concurrent hits exactly once', async () => {
        const key = `k-${uid()}`;
        const results = await Promise.all(range(0, 50).map(() => storage.hit(key, 60_000, T0)));
        expect(results.map((r) => r.count).sort((x, y) => x - y)).toEqual(range(1, 50));
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('accounts and devices', () => {
      it('creates an account with its first device', async () => {
        const { account, device, replacedAccountId } = await register({ name: 'Alice' });
        expect(replacedAccountId).toBeUndefined();
        const got = await storage.getAccount(account.id);
        expect(got).toEqual(account);
        expect(got?.identityKey).toBeInstanceOf(Uint8Array);
        expect(await storage.getAccountByNumber(account.number)).toEqual(account);
        const gotDevice = await storage.getDevice(account.id, 1);
        expect(gotDevice).toEqual(device);
        expect(gotDevice?.passwordHash).toBeInstanceOf(Uint8Array);
        expect(await storage.listDevices(account.id)).toEqual([device]);
      });

      it('leaves an absent name absent', async () => {
        const { account } = await register();
        const got = await storage.getAccount(account.id);
        expect(got?.name).toBeUndefined();
        expect(got).toEqual(account);
      });

      it('returns null or [] for what does not exist', async () => {
        const { account } = await register();
        expect(await storage.getAccount(uid())).toBeNull();
        expect(await storage.getAccountByNumber('+19995550000')).toBeNull();
        expect(await storage.getDevice(account.id, 2)).toBeNull();
        expect(await storage.getDevice(uid(), 1)).toBeNull();
        expect(await storage.listDevices(uid())).toEqual([]);
      });

      it('marks the verification session consumed and changes nothing else in it', async () => {
        const s = session();
        await storage.insertVerificationSession(s);
        const account: Account = { id: uid(), number: s.number, identityKey: bytes(33, 5), createdAt: T0 };
        const device: Device = {
          accountId: account.id,
          deviceId: 1,
          registrationId: 1,
          passwordHash: bytes(32, 1),
          passwordSalt: bytes(16, 2),
          createdAt: T0,
        };
        await storage.createAccount(
          account,
          device,
          { signedPreKey: signedKey(1), pqLastResortPreKey: kyberKey(1) },
          s.id,
        );
        expect(await storage.getVerificationSession(s.id)).toEqual({ ...s, consumed: true });
      });

      it('refuses a consumed session with 409 and changes nothing', async () => {
        const first = await register();
        const again: Account = { id: uid(), number: first.account.number, identityKey: bytes(33, 9), createdAt: T0 };
        const device: Device = { ...first.device, accountId: again.id };
        await rejectsWith(
          storage.createAccount(
            again,
            device,
            { signedPreKey: signedKey(2), pqLastResortPreKey: kyberKey(2) },
            first.sessionId,
          ),
          409,
        );
        expect(await storage.getAccountByNumber(first.account.number)).toEqual(first.account);
        expect(await storage.getAccount(again.id)).toBeNull();
        expect(await storage.getDevice(first.account.id, 1)).toEqual(first.device);
      });

      it('refuses an unknown, an unverified and an other-number session', async () => {
        const number = newNumber();
        const account: Account = { id: uid(), number, identityKey: bytes(33, 9), createdAt: T0 };
        const device: Device = {
          accountId: account.id,
          deviceId: 1,
          registrationId: 1,
          passwordHash: bytes(32, 1),
          passwordSalt: bytes(16, 2),
          createdAt: T0,
        };
        const keys = { signedPreKey: signedKey(2), pqLastResortPreKey: kyberKey(2) };
        await rejectsWith(storage.createAccount(account, device, keys, uid()));

        const unverified = session({ number, verified: false });
        await storage.insertVerificationSession(unverified);
        await rejectsWith(storage.createAccount(account, device, keys, unverified.id));
        expect((await storage.getVerificationSession(unverified.id))?.consumed).toBe(false);

        const other = session();
        await storage.insertVerificationSession(other);
        await rejectsWith(storage.createAccount(account, device, keys, other.id));
        expect((await storage.getVerificationSession(other.id))?.consumed).toBe(false);

        expect(await storage.getAccount(account.id)).toBeNull();
        expect(await storage.getAccountByNumber(number)).toBeNull();
      });

      it('replaces the account holding the number: devices, keys, queues and receipts go', async () => {
        const old = await register({ keys: { preKeys: range(1, 5).map(ecKey), pqPreKeys: range(1, 5).map(kyberKey) } });
        const other = await register();
        const r = receipt({ sourceAccountId: old.account.id, sourceDeviceId: 1 });
        // a message to the old account, one from it (with a receipt) to another account
        await storage.insertEnvelopes([envelope({ accountId: old.account.id, deviceId: 1 })]);
        const fromOld = envelope(
          { accountId: other.account.id, deviceId: 1 },
          { sourceAccountId: old.account.id, sourceDeviceId: 1 },
        );
        expect(await storage.insertEnvelopes([fromOld], r)).toBe(true);

        const fresh = await register({ number: old.account.number });
        expect(fresh.replacedAccountId).toBe(old.account.id);
        expect(await storage.getAccount(old.account.id)).toBeNull();
        expect(await storage.getAccountByNumber(old.account.number)).toEqual(fresh.account);
        expect(await storage.getDevice(old.account.id, 1)).toBeNull();
        expect(await storage.listDevices(old.account.id)).toEqual([]);
        expect(await storage.listDevices(fresh.account.id)).toEqual([fresh.device]);
        expect(await storage.countKeys(old.account.id, 1)).toEqual({ preKeys: 0, pqPreKeys: 0 });
        expect(await storage.takeKeys(old.account.id, 1)).toBeNull();
        expect(await storage.countQueue(old.account.id, 1, T0)).toBe(0);
        expect(await storage.fetchQueue(old.account.id, 1, 100, T0)).toEqual([]);
        // the old account's receipts are gone: the same message id is accepted again
        expect(await storage.insertEnvelopes([], r)).toBe(true);
        // what the old account already sent to others stays delivered
        expect((await storage.fetchQueue(other.account.id, 1, 100, T0)).map(strip)).toEqual([fromOld]);
        // the other account is untouched
        expect(await storage.getAccount(other.account.id)).toEqual(other.account);
        expect(await storage.takeKeys(other.account.id, 1)).not.toBeNull();
      });

      it('stores the one-time keys uploaded at registration', async () => {
        const { account } = await register({
          keys: { preKeys: range(1, 3).map(ecKey), pqPreKeys: range(10, 4).map(kyberKey) },
        });
        expect(await storage.countKeys(account.id, 1)).toEqual({ preKeys: 3, pqPreKeys: 4 });
      });

      it('sets and clears the push subscription of one device', async () => {
        const a = await register();
        const b = await register();
        await storage.setPushSubscription(a.account.id, 1, '{"endpoint":"https://push.example/1"}');
        expect((await storage.getDevice(a.account.id, 1))?.pushSubscription).toBe(
          '{"endpoint":"https://push.example/1"}',
        );
        expect((await storage.listDevices(a.account.id))[0]?.pushSubscription).toBe(
          '{"endpoint":"https://push.example/1"}',
        );
        expect((await storage.getDevice(b.account.id, 1))?.pushSubscription).toBeUndefined();
        await storage.setPushSubscription(a.account.id, 1, null);
        const cleared = await storage.getDevice(a.account.id, 1);
        expect(cleared?.pushSubscription).toBeUndefined();
        expect(cleared).toEqual(a.device);
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('linked devices', () => {
      let codeSeq = 0;
      function linkCode(accountId: string, over: Partial<LinkCode> = {}): LinkCode {
        return { codeHash: bytes(32, 500 + codeSeq++), accountId, createdAt: T0, expiresAt: T0 + 600_000, ...over };
      }
      const newDevice = (accountId: string, over: Partial<Device> = {}): Omit<Device, 'deviceId'> => ({
        accountId,
        registrationId: 777,
        passwordHash: bytes(32, 11),
        passwordSalt: bytes(16, 12),
        createdAt: T0 + 5,
        ...over,
      });
      const linkKeys = (seed: number, more: KeyUpload = {}) => ({
        signedPreKey: signedKey(seed),
        pqLastResortPreKey: kyberKey(seed),
        ...more,
      });
      /** Makes a code and links a device with it. */
      async function link(accountId: string, over: Partial<Device> = {}, keys = linkKeys(40)): Promise<Device> {
        const code = linkCode(accountId);
        await storage.insertLinkCode(code);
        return storage.linkDevice(code.codeHash, newDevice(accountId, over), keys, T0 + 10, 6);
      }
      const ids = async (accountId: string) => (await storage.listDevices(accountId)).map((d) => d.deviceId);

      it('stores a link code and finds it by its hash; unknown hashes are null', async () => {
        const { account } = await register();
        const code = linkCode(account.id);
        await storage.insertLinkCode(code);
        const got = await storage.getLinkCode(code.codeHash);
        expect(got).toEqual(code);
        expect(got?.codeHash).toBeInstanceOf(Uint8Array);
        expect(await storage.getLinkCode(bytes(32, 9999))).toBeNull();
      });

      it('refuses a link code for an account that does not exist (404) and stores nothing', async () => {
        const code = linkCode(uid());
        await rejectsWith(storage.insertLinkCode(code), 404);
        expect(await storage.getLinkCode(code.codeHash)).toBeNull();
      });

      it('links a device as device 2 with its keys and name, and consumes the code', async () => {
        const { account, device: primary } = await register();
        const code = linkCode(account.id);
        await storage.insertLinkCode(code);
        const keys = linkKeys(41, { preKeys: range(1, 3).map(ecKey), pqPreKeys: range(20, 2).map(kyberKey) });
        const name = bytes(200, 3);
        const linked = await storage.linkDevice(code.codeHash, newDevice(account.id, { name }), keys, T0 + 10, 6);
        expect(linked).toEqual({ ...newDevice(account.id, { name }), deviceId: 2 });
        const got = await storage.getDevice(account.id, 2);
        expect(got).toEqual(linked);
        expect(got?.name).toBeInstanceOf(Uint8Array);
        expect(await storage.listDevices(account.id)).toEqual([primary, linked]);
        expect(await storage.countKeys(account.id, 2)).toEqual({ preKeys: 3, pqPreKeys: 2 });
        expect(await storage.takeKeys(account.id, 2)).toMatchObject({
          signedPreKey: signedKey(41),
          pqLastResort: false,
        });
        // device 1's keys are its own
        expect((await storage.takeKeys(account.id, 1))?.signedPreKey).toEqual(signedKey(1));
        // the code is used up
        expect(await storage.getLinkCode(code.codeHash)).toBeNull();
        await expect(
          storage.linkDevice(code.codeHash, newDevice(account.id), linkKeys(42), T0 + 10, 6),
        ).rejects.toMatchObject({ status: 403, code: 'link_code_invalid' });
        expect(await ids(account.id)).toEqual([1, 2]);
      });

      it('leaves an absent name absent', async () => {
        const { account } = await register();
        const linked = await link(account.id);
        expect(linked.name).toBeUndefined();
        expect(await storage.getDevice(account.id, 2)).toEqual(linked);
      });

      it('gives the lowest free id from 2 to 6, and refuses a 7th device with 409, changing nothing', async () => {
        const { account } = await register();
        for (const expected of [2, 3, 4]) expect((await link(account.id)).deviceId).toBe(expected);
        expect(await storage.removeDevice(account.id, 3)).toBe(true);
        expect((await link(account.id)).deviceId).toBe(3);
        expect((await link(account.id)).deviceId).toBe(5);
        expect((await link(account.id)).deviceId).toBe(6);
        expect(await ids(account.id)).toEqual([1, 2, 3, 4, 5, 6]);

        const code = linkCode(account.id);
        await storage.insertLinkCode(code);
        const error = await rejectsWith(
          storage.linkDevice(code.codeHash, newDevice(account.id), linkKeys(50), T0 + 10, 6),
          409,
        );
        expect(error.code).toBe('too_many_devices');
        expect(await ids(account.id)).toEqual([1, 2, 3, 4, 5, 6]);
        expect(await storage.getLinkCode(code.codeHash)).toEqual(code);
        // once a device is gone, the same code links one
        expect(await storage.removeDevice(account.id, 4)).toBe(true);
        const linked = await storage.linkDevice(code.codeHash, newDevice(account.id), linkKeys(51), T0 + 10, 6);
        expect(linked.deviceId).toBe(4);
      });

      it('refuses an unknown, an expired and another account’s code with 403 and changes nothing', async () => {
        const { account } = await register();
        const other = await register();
        const expired = linkCode(account.id, { expiresAt: T0 + 100 });
        const others = linkCode(other.account.id);
        await storage.insertLinkCode(expired);
        await storage.insertLinkCode(others);
        const attempt = (codeHash: Uint8Array, now: number) =>
          storage.linkDevice(codeHash, newDevice(account.id), linkKeys(60), now, 6);
        for (const [codeHash, now] of [
          [bytes(32, 4242), T0],
          [expired.codeHash, T0 + 100],
          [expired.codeHash, T0 + 101],
          [others.codeHash, T0],
        ] as const) {
          const error = await rejectsWith(attempt(codeHash, now), 403);
          expect(error.code).toBe('link_code_invalid');
        }
        expect(await ids(account.id)).toEqual([1]);
        expect(await ids(other.account.id)).toEqual([1]);
        expect(await storage.countKeys(account.id, 2)).toEqual({ preKeys: 0, pqPreKeys: 0 });
        expect(await storage.getLinkCode(expired.codeHash)).toEqual(expired);
        expect(await storage.getLinkCode(others.codeHash)).toEqual(others);
        // a code is good until just before expiresAt
        expect((await attempt(expired.codeHash, T0 + 99)).deviceId).toBe(2);
      });

      it('lets exactly one of 10 concurrent links with one code through', async () => {
        const { account } = await register();
        const code = linkCode(account.id);
        await storage.insertLinkCode(code);
        const results = await Promise.allSettled(
          range(0, 10).map((i) =>
            storage.linkDevice(
              code.codeHash,
              newDevice(account.id, { registrationId: 100 + i }),
              linkKeys(70 + i),
              T0,
              6,
            ),
          ),
        );
        const ok = results.filter((r) => r.status === 'fulfilled');
        expect(ok).toHaveLength(1);
        for (const r of results.filter((r) => r.status === 'rejected')) {
          expect((r as PromiseRejectedResult).reason).toMatchObject({ status: 403, code: 'link_code_invalid' });
        }
        expect(await ids(account.id)).toEqual([1, 2]);
      });

      it('concurrent links with 8 codes: 5 devices with distinct ids 2..6, 3 refused with 409', async () => {
        const { account } = await register();
        const codes = range(0, 8).map(() => linkCode(account.id));
        for (const c of codes) await storage.insertLinkCode(c);
        const results = await Promise.allSettled(
          codes.map((c, i) => storage.linkDevice(c.codeHash, newDevice(account.id), linkKeys(80 + i), T0, 6)),
        );
        const linked = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.deviceId] : []));
        expect(linked.sort()).toEqual([2, 3, 4, 5, 6]);
        for (const r of results.filter((r) => r.status === 'rejected')) {
          expect((r as PromiseRejectedResult).reason).toMatchObject({ status: 409, code: 'too_many_devices' });
        }
        expect(await ids(account.id)).toEqual([1, 2, 3, 4, 5, 6]);
      });

      it('removes a device with its keys, queue and send receipts; the rest of the account stays', async () => {
        const { account, device: primary } = await register({ keys: { preKeys: range(1, 2).map(ecKey) } });
        const two = await link(account.id, {}, linkKeys(90, { preKeys: range(1, 4).map(ecKey) }));
        const three = await link(account.id);
        const toTwo = envelope({ accountId: account.id, deviceId: 2 });
        const toOne = envelope({ accountId: account.id, deviceId: 1 });
        const toThree = envelope({ accountId: account.id, deviceId: 3 });
        await storage.insertEnvelopes([toTwo, toOne, toThree]);
        const fromTwo = receipt({ sourceAccountId: account.id, sourceDeviceId: 2 });
        const fromOne = receipt({ sourceAccountId: account.id, sourceDeviceId: 1 });
        await storage.insertEnvelopes([], fromTwo);
        await storage.insertEnvelopes([], fromOne);

        expect(await storage.removeDevice(account.id, 2)).toBe(true);
        expect(await storage.getDevice(account.id, 2)).toBeNull();
        expect(await storage.listDevices(account.id)).toEqual([primary, three]);
        expect(await storage.countKeys(account.id, 2)).toEqual({ preKeys: 0, pqPreKeys: 0 });
        expect(await storage.takeKeys(account.id, 2)).toBeNull();
        expect(await storage.fetchQueue(account.id, 2, 100, T0)).toEqual([]);
        expect(await storage.countQueue(account.id, 2, T0)).toBe(0);
        expect(await storage.insertEnvelopes([], fromTwo)).toBe(true);
        // the others are untouched
        expect(await storage.insertEnvelopes([], fromOne)).toBe(false);
        expect((await storage.fetchQueue(account.id, 1, 100, T0)).map(strip)).toEqual([toOne]);
        expect((await storage.fetchQueue(account.id, 3, 100, T0)).map(strip)).toEqual([toThree]);
        expect(await storage.countKeys(account.id, 1)).toEqual({ preKeys: 2, pqPreKeys: 0 });
        expect(two.deviceId).toBe(2);
        // removing it again, or a device that never was, finds nothing
        expect(await storage.removeDevice(account.id, 2)).toBe(false);
        expect(await storage.removeDevice(account.id, 5)).toBe(false);
        expect(await storage.removeDevice(uid(), 2)).toBe(false);
      });

      it('a device linked under a reused id starts with an empty queue', async () => {
        const { account } = await register();
        await link(account.id);
        expect(await storage.removeDevice(account.id, 2)).toBe(true);
        // a send accepted for the old device 2 just before its removal lands afterwards
        await storage.insertEnvelopes([envelope({ accountId: account.id, deviceId: 2 })]);
        const again = await link(account.id);
        expect(again.deviceId).toBe(2);
        expect(await storage.fetchQueue(account.id, 2, 100, T0)).toEqual([]);
        const fresh = envelope({ accountId: account.id, deviceId: 2 });
        await storage.insertEnvelopes([fresh]);
        expect((await storage.fetchQueue(account.id, 2, 100, T0)).map(strip)).toEqual([fresh]);
      });

      it('re-registering the number drops linked devices, their keys and queues, link codes and provisioning messages', async () => {
        const old = await register();
        await link(old.account.id);
        await link(old.account.id);
        const pending = linkCode(old.account.id);
        await storage.insertLinkCode(pending);
        const address = `addr-${uid()}`;
        await storage.putProvisioningMessage({
          address,
          accountId: old.account.id,
          body: bytes(100, 1),
          expiresAt: T0 + 600_000,
        });
        await storage.insertEnvelopes([envelope({ accountId: old.account.id, deviceId: 3 })]);

        const fresh = await register({ number: old.account.number });
        expect(fresh.replacedAccountId).toBe(old.account.id);
        expect(await storage.listDevices(old.account.id)).toEqual([]);
        for (const deviceId of [2, 3]) {
          expect(await storage.getDevice(old.account.id, deviceId)).toBeNull();
          expect(await storage.takeKeys(old.account.id, deviceId)).toBeNull();
          expect(await storage.countQueue(old.account.id, deviceId, T0)).toBe(0);
        }
        expect(await storage.getLinkCode(pending.codeHash)).toBeNull();
        expect(await storage.takeProvisioningMessage(address, T0)).toBeNull();
        expect(await ids(fresh.account.id)).toEqual([1]);
      });

      it('relays a provisioning message once; a second put replaces it', async () => {
        const { account } = await register();
        const address = `addr-${uid()}`;
        const message = { address, accountId: account.id, body: bytes(1000, 1), expiresAt: T0 + 600_000 };
        expect(await storage.takeProvisioningMessage(address, T0)).toBeNull();
        await storage.putProvisioningMessage(message);
        const got = await storage.takeProvisioningMessage(address, T0);
        expect(got).toEqual(message.body);
        expect(got).toBeInstanceOf(Uint8Array);
        expect(await storage.takeProvisioningMessage(address, T0)).toBeNull();

        await storage.putProvisioningMessage(message);
        await storage.putProvisioningMessage({ ...message, body: bytes(65_536, 2) });
        const replaced = await storage.takeProvisioningMessage(address, T0);
        expect(Buffer.from(replaced ?? []).equals(bytes(65_536, 2))).toBe(true);
        expect(await storage.takeProvisioningMessage(address, T0)).toBeNull();
      });

      it('keeps provisioning addresses apart and hands out no expired message', async () => {
        const { account } = await register();
        const a = { address: `a-${uid()}`, accountId: account.id, body: bytes(10, 1), expiresAt: T0 + 100 };
        const b = { address: `b-${uid()}`, accountId: account.id, body: bytes(10, 2), expiresAt: T0 + 100 };
        await storage.putProvisioningMessage(a);
        await storage.putProvisioningMessage(b);
        expect(await storage.takeProvisioningMessage(a.address, T0 + 100)).toBeNull();
        expect(await storage.takeProvisioningMessage(b.address, T0 + 99)).toEqual(b.body);
      });

      it('hands a provisioning message to one of 10 concurrent takers', async () => {
        const { account } = await register();
        const address = `addr-${uid()}`;
        await storage.putProvisioningMessage({ address, accountId: account.id, body: bytes(50, 3), expiresAt: T0 + 1 });
        const results = await Promise.all(range(0, 10).map(() => storage.takeProvisioningMessage(address, T0)));
        expect(results.filter((r) => r !== null)).toEqual([bytes(50, 3)]);
      });

      it('refuses a provisioning message from an account that does not exist (404)', async () => {
        const address = `addr-${uid()}`;
        await rejectsWith(
          storage.putProvisioningMessage({ address, accountId: uid(), body: bytes(10, 1), expiresAt: T0 + 1 }),
          404,
        );
        expect(await storage.takeProvisioningMessage(address, T0)).toBeNull();
      });

      it('deleteExpired drops expired link codes and provisioning messages and keeps the others', async () => {
        const { account } = await register();
        const oldCode = linkCode(account.id, { expiresAt: T0 + 100 });
        const liveCode = linkCode(account.id, { expiresAt: T0 + 101 });
        await storage.insertLinkCode(oldCode);
        await storage.insertLinkCode(liveCode);
        const old = { address: `o-${uid()}`, accountId: account.id, body: bytes(10, 1), expiresAt: T0 + 100 };
        const live = { address: `l-${uid()}`, accountId: account.id, body: bytes(10, 2), expiresAt: T0 + 101 };
        await storage.putProvisioningMessage(old);
        await storage.putProvisioningMessage(live);

        expect(await storage.deleteExpired(T0 + 100)).toBe(0);
        expect(await storage.getLinkCode(oldCode.codeHash)).toBeNull();
        expect(await storage.getLinkCode(liveCode.codeHash)).toEqual(liveCode);
        // what deleteExpired left is there even for a reader whose clock is behind
        expect(await storage.takeProvisioningMessage(old.address, T0)).toBeNull();
        expect(await storage.takeProvisioningMessage(live.address, T0)).toEqual(live.body);
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('keys', () => {
      it('has no keys for an unknown device', async () => {
        expect(await storage.countKeys(uid(), 1)).toEqual({ preKeys: 0, pqPreKeys: 0 });
        expect(await storage.takeKeys(uid(), 1)).toBeNull();
        const { account } = await register();
        expect(await storage.takeKeys(account.id, 2)).toBeNull();
      });

      it('adds uploaded one-time keys and replaces an existing id', async () => {
        const { account } = await register();
        await storage.storeKeys(account.id, 1, {
          preKeys: range(1, 10).map(ecKey),
          pqPreKeys: range(1, 5).map(kyberKey),
        });
        expect(await storage.countKeys(account.id, 1)).toEqual({ preKeys: 10, pqPreKeys: 5 });
        await storage.storeKeys(account.id, 1, { preKeys: range(11, 5).map(ecKey) });
        expect(await storage.countKeys(account.id, 1)).toEqual({ preKeys: 15, pqPreKeys: 5 });
        // key id 3 uploaded again with other bytes: replaced, not added
        const replaced = { keyId: 3, publicKey: bytes(33, 777) };
        await storage.storeKeys(account.id, 1, { preKeys: [replaced] });
        expect(await storage.countKeys(account.id, 1)).toEqual({ preKeys: 15, pqPreKeys: 5 });
        const taken = [];
        for (let i = 0; i < 15; i++) taken.push((await storage.takeKeys(account.id, 1))?.preKey);
        expect(taken.filter((k) => k?.keyId === 3)).toEqual([replaced]);
      });

      it('takes a bundle: signed key, one one-time EC key, one one-time Kyber key', async () => {
        const { account } = await register({
          keys: { preKeys: range(1, 3).map(ecKey), pqPreKeys: range(101, 3).map(kyberKey) },
        });
        const taken = await storage.takeKeys(account.id, 1);
        const ecId = taken?.preKey?.keyId ?? 0;
        const pqId = taken?.pqPreKey.keyId ?? 0;
        expect(range(1, 3)).toContain(ecId);
        expect(range(101, 3)).toContain(pqId);
        expect(taken).toEqual({
          signedPreKey: signedKey(1),
          preKey: ecKey(ecId),
          pqPreKey: kyberKey(pqId),
          pqLastResort: false,
        });
        expect(taken?.signedPreKey.publicKey).toBeInstanceOf(Uint8Array);
        expect(taken?.preKey?.publicKey).toBeInstanceOf(Uint8Array);
        expect(taken?.pqPreKey.publicKey).toBeInstanceOf(Uint8Array);
        expect(taken?.pqPreKey.publicKey).toHaveLength(1569);
        expect(await storage.countKeys(account.id, 1)).toEqual({ preKeys: 2, pqPreKeys: 2 });
        const second = await storage.takeKeys(account.id, 1);
        expect(second?.preKey?.keyId).not.toBe(ecId);
        expect(second?.pqPreKey.keyId).not.toBe(pqId);
        expect(await storage.countKeys(account.id, 1)).toEqual({ preKeys: 1, pqPreKeys: 1 });
      });

      it('hands each one-time key out once', async () => {
        const { account } = await register({ keys: { preKeys: range(1, 5).map(ecKey) } });
        await storage.storeKeys(account.id, 1, { preKeys: range(50, 5).map(ecKey) });
        const taken: ECPreKey[] = [];
        for (let i = 0; i < 10; i++) {
          const preKey = (await storage.takeKeys(account.id, 1))?.preKey;
          if (preKey) taken.push(preKey);
        }
        expect(taken.sort((x, y) => x.keyId - y.keyId)).toEqual([...range(1, 5), ...range(50, 5)].map(ecKey));
        expect((await storage.takeKeys(account.id, 1))?.preKey).toBeUndefined();
      });

      it('omits the EC one-time key when none is left', async () => {
        const { account } = await register({ keys: { pqPreKeys: [kyberKey(7)] } });
        const taken = await storage.takeKeys(account.id, 1);
        expect(taken).not.toBeNull();
        expect(taken?.preKey).toBeUndefined();
        expect(taken && 'preKey' in taken && taken.preKey !== undefined).toBe(false);
        expect(taken?.signedPreKey).toEqual(signedKey(1));
        expect(taken?.pqPreKey).toEqual(kyberKey(7));
        expect(taken?.pqLastResort).toBe(false);
      });

      it('falls back to the last-resort Kyber key, reports it, and keeps handing it out', async () => {
        const { account } = await register({ keys: { preKeys: range(1, 3).map(ecKey), pqPreKeys: [kyberKey(5)] } });
        expect((await storage.takeKeys(account.id, 1))?.pqLastResort).toBe(false);
        for (let i = 0; i < 3; i++) {
          const taken = await storage.takeKeys(account.id, 1);
          expect(taken?.pqPreKey).toEqual(kyberKey(1));
          expect(taken?.pqLastResort).toBe(true);
        }
        expect(await storage.countKeys(account.id, 1)).toEqual({ preKeys: 0, pqPreKeys: 0 });
        // new one-time Kyber keys are preferred again
        await storage.storeKeys(account.id, 1, { pqPreKeys: [kyberKey(6)] });
        expect(await storage.takeKeys(account.id, 1)).toMatchObject({ pqPreKey: kyberKey(6), pqLastResort: false });
      });

      it('replaces the signed prekey and the last-resort key, keeping the one-time keys', async () => {
        const { account } = await register({ keys: { preKeys: range(1, 2).map(ecKey) } });
        await storage.storeKeys(account.id, 1, { signedPreKey: signedKey(2), pqLastResortPreKey: kyberKey(2) });
        expect(await storage.countKeys(account.id, 1)).toEqual({ preKeys: 2, pqPreKeys: 0 });
        expect(await storage.takeKeys(account.id, 1)).toMatchObject({
          signedPreKey: signedKey(2),
          pqPreKey: kyberKey(2),
          pqLastResort: true,
        });
        await storage.storeKeys(account.id, 1, { signedPreKey: signedKey(3) });
        const taken = await storage.takeKeys(account.id, 1);
        expect(taken?.signedPreKey).toEqual(signedKey(3));
        expect(taken?.pqPreKey).toEqual(kyberKey(2));
      });

      it('keeps the keys of accounts apart', async () => {
        const a = await register({ keys: { preKeys: range(1, 3).map(ecKey), pqPreKeys: range(1, 3).map(kyberKey) } });
        const b = await register({ keys: { preKeys: range(1, 3).map(ecKey), pqPreKeys: range(1, 3).map(kyberKey) } });
        await storage.takeKeys(a.account.id, 1);
        await storage.takeKeys(a.account.id, 1);
        expect(await storage.countKeys(a.account.id, 1)).toEqual({ preKeys: 1, pqPreKeys: 1 });
        expect(await storage.countKeys(b.account.id, 1)).toEqual({ preKeys: 3, pqPreKeys: 3 });
        await storage.storeKeys(b.account.id, 1, { signedPreKey: signedKey(9) });
        expect((await storage.takeKeys(a.account.id, 1))?.signedPreKey).toEqual(signedKey(1));
      });

      it('50 concurrent takes over 20 one-time keys hand out each key exactly once', async () => {
        const { account } = await register({
          keys: { preKeys: range(1, 20).map(ecKey), pqPreKeys: range(101, 20).map(kyberKey) },
        });
        const bundles = await Promise.all(range(0, 50).map(() => storage.takeKeys(account.id, 1)));
        expect(bundles.every((b) => b !== null)).toBe(true);
        const ec = bundles.flatMap((b) => (b?.preKey ? [b.preKey.keyId] : []));
        expect(ec).toHaveLength(20);
        expect(new Set(ec).size).toBe(20);
        expect([...ec].sort((x, y) => x - y)).toEqual(range(1, 20));
        const pq = bundles.filter((b) => !b?.pqLastResort).map((b) => b?.pqPreKey.keyId);
        expect(new Set(pq).size).toBe(20);
        expect([...pq].sort((x, y) => (x ?? 0) - (y ?? 0))).toEqual(range(101, 20));
        const lastResort = bundles.filter((b) => b?.pqLastResort);
        expect(lastResort).toHaveLength(30);
        expect(lastResort.every((b) => b?.pqPreKey.keyId === 1)).toBe(true);
        expect(await storage.countKeys(account.id, 1)).toEqual({ preKeys: 0, pqPreKeys: 0 });
      });

      it('concurrent uploads and takes lose no key and duplicate none', async () => {
        const { account } = await register();
        const ops: Promise<unknown>[] = [];
        for (let i = 0; i < 10; i++) {
          ops.push(storage.storeKeys(account.id, 1, { preKeys: range(i * 10 + 1, 10).map(ecKey) }));
          ops.push(storage.takeKeys(account.id, 1));
        }
        const results = await Promise.all(ops);
        const taken = results.flatMap((r) =>
          r && typeof r === 'object' && 'preKey' in r && r.preKey ? [(r.preKey as ECPreKey).keyId] : [],
        );
        const left = (await storage.countKeys(account.id, 1)).preKeys;
        expect(new Set(taken).size).toBe(taken.length);
        expect(taken.length + left).toBe(100);
      });
    });

    // ---------------------------------------------------------------------------------------------
    describe('messages', () => {
      const dev = (accountId: string, deviceId = 1) => ({ accountId, deviceId });

      it('stores envelopes and returns them in FIFO order with every field', async () => {
        const to = dev(uid());
        const batch = range(0, 5).map(() => envelope(to));
        expect(await storage.insertEnvelopes(batch)).toBe(true);
        const later = envelope(to);
        await storage.insertEnvelopes([later]);
        const queue = await storage.fetchQueue(to.accountId, 1, 100, T0);
        expect(queue.map(strip)).toEqual([...batch, later]);
        for (const e of queue) {
          expect(typeof e.cursor).toBe('string');
          expect(e.content).toBeInstanceOf(Uint8Array);
        }
        expect(await storage.countQueue(to.accountId, 1, T0)).toBe(6);
      });

      it('keeps one FIFO per device when sends interleave', async () => {
        const a = dev(uid());
        const b = dev(a.accountId, 2);
        const sent: Envelope[] = [];
        for (let i = 0; i < 10; i++) {
          const pair = [envelope(a), envelope(b)];
          sent.push(...pair);
          await storage.insertEnvelopes(i % 2 ? pair : [...pair].reverse());
        }
        const qa = await storage.fetchQueue(a.accountId, 1, 100, T0);
        const qb = await storage.fetchQueue(b.accountId, 2, 100, T0);
        expect(qa.map(strip)).toEqual(sent.filter((e) => e.destinationDeviceId === 1));
        expect(qb.map(strip)).toEqual(sent.filter((e) => e.destinationDeviceId === 2));
      });

      it('pages through a queue with cursors', async () => {
        const to = dev(uid());
        const sent = range(0, 25).map(() => envelope(to));
        await storage.insertEnvelopes(sent.slice(0, 10));
        await storage.insertEnvelopes(sent.slice(10));
        const seen: Envelope[] = [];
        let cursor: string | undefined;
        let pages = 0;
        for (;;) {
          const page = await storage.fetchQueue(to.accountId, 1, 10, T0, cursor);
          if (page.length === 0) break;
          expect(page.length).toBeLessThanOrEqual(10);
          seen.push(...page.map(strip));
          cursor = page.at(-1)?.cursor;
          pages++;
        }
        expect(pages).toBe(3);
        expect(seen).toEqual(sent);
        // a cursor still works after its envelope was acknowledged, and sees later arrivals
        const first = await storage.fetchQueue(to.accountId, 1, 3, T0);
        const third = first[2] as (typeof first)[number];
        for (const e of first) await storage.deleteEnvelope(to.accountId, 1, e.guid);
        const late = envelope(to);
        await storage.insertEnvelopes([late]);
        const after = await storage.fetchQueue(to.accountId, 1, 100, T0, third.cursor);
        expect(after.map(strip)).toEqual([...sent.slice(3), late]);
        const lastCursor = after.at(-1)?.cursor;
        expect(await storage.fetchQueue(to.accountId, 1, 100, T0, lastCursor)).toEqual([]);
      });

      it('isolates queues: other devices and accounts see nothing and can delete nothing', async () => {
        const a1 = dev(uid(), 1);
        const a2 = dev(a1.accountId, 2);
        const b1 = dev(uid(), 1);
        const e = envelope(a1);
        await storage.insertEnvelopes([e]);
        expect(await storage.fetchQueue(a2.accountId, 2, 100, T0)).toEqual([]);
        expect(await storage.fetchQueue(b1.accountId, 1, 100, T0)).toEqual([]);
        expect(await storage.countQueue(a2.accountId, 2, T0)).toBe(0);
        expect(await storage.deleteEnvelope(a2.accountId, 2, e.guid)).toBe(false);
        expect(await storage.deleteEnvelope(b1.accountId, 1, e.guid)).toBe(false);
        expect((await storage.fetchQueue(a1.accountId, 1, 100, T0)).map(strip)).toEqual([e]);
      });

      it('deletes an acknowledged envelope once', async () => {
        const to = dev(uid());
        const [x, y, z] = range(0, 3).map(() => envelope(to)) as [Envelope, Envelope, Envelope];
        await storage.insertEnvelopes([x, y, z]);
        expect(await storage.deleteEnvelope(to.accountId, 1, y.guid)).toBe(true);
        expect(await storage.deleteEnvelope(to.accountId, 1, y.guid)).toBe(false);
        expect(await storage.deleteEnvelope(to.accountId, 1, uid())).toBe(false);
        expect((await storage.fetchQueue(to.accountId, 1, 100, T0)).map(strip)).toEqual([x, z]);
        expect(await storage.countQueue(to.accountId, 1, T0)).toBe(2);
      });

      it('leaves out expired envelopes (expiresAt <= now) when fetching, paging and counting', async () => {
        const to = dev(uid());
        const a = envelope(to, { expiresAt: T0 + 100 });
        const b = envelope(to, { expiresAt: T0 + 300 });
        const c = envelope(to, { expiresAt: T0 + 200 });
        const d = envelope(to, { expiresAt: T0 + 400 });
        await storage.insertEnvelopes([a, b, c, d]);
        expect((await storage.fetchQueue(to.accountId, 1, 100, T0 + 99)).map(strip)).toEqual([a, b, c, d]);
        expect((await storage.fetchQueue(to.accountId, 1, 100, T0 + 100)).map(strip)).toEqual([b, c, d]);
        expect((await storage.fetchQueue(to.accountId, 1, 100, T0 + 250)).map(strip)).toEqual([b, d]);
        expect(await storage.countQueue(to.accountId, 1, T0 + 250)).toBe(2);
        const page = await storage.fetchQueue(to.accountId, 1, 1, T0 + 250);
        expect(page.map(strip)).toEqual([b]);
        expect((await storage.fetchQueue(to.accountId, 1, 1, T0 + 250, page[0]?.cursor)).map(strip)).toEqual([d]);
        expect(await storage.countQueue(to.accountId, 1, T0 + 400)).toBe(0);
      });

      it('stores a send with a receipt once: a retry inserts nothing and returns false', async () => {
        const to = dev(uid());
        const r = receipt();
        const first = [envelope(to), envelope(to)];
        expect(await storage.insertEnvelopes(first, r)).toBe(true);
        expect(await storage.insertEnvelopes([envelope(to), envelope(to)], { ...r })).toBe(false);
        expect((await storage.fetchQueue(to.accountId, 1, 100, T0)).map(strip)).toEqual(first);
        // the receipt is per (source account, source device, message id)
        expect(await storage.insertEnvelopes([envelope(to)], { ...r, sourceDeviceId: 2 })).toBe(true);
        expect(await storage.insertEnvelopes([envelope(to)], { ...r, sourceAccountId: 'other' })).toBe(true);
        expect(await storage.insertEnvelopes([envelope(to)], { ...r, messageId: uid() })).toBe(true);
        expect(await storage.countQueue(to.accountId, 1, T0)).toBe(5);
      });

      it('lets exactly one of 20 concurrent sends with the same receipt through', async () => {
        const to = dev(uid());
        const r = receipt();
        const results = await Promise.all(range(0, 20).map(() => storage.insertEnvelopes([envelope(to)], r)));
        expect(results.filter(Boolean)).toHaveLength(1);
        expect(await storage.countQueue(to.accountId, 1, T0)).toBe(1);
      });

      it('deleteExpired drops expired envelopes and receipts and counts the envelopes', async () => {
        const to = dev(uid());
        const keep = envelope(to, { expiresAt: T0 + 2 * DAY });
        await storage.insertEnvelopes([
          envelope(to, { expiresAt: T0 + DAY }),
          keep,
          envelope(dev(uid(), 3), { expiresAt: T0 + DAY - 1 }),
        ]);
        const oldReceipt = receipt({ expiresAt: T0 + DAY });
        const liveReceipt = receipt({ expiresAt: T0 + 3 * DAY });
        await storage.insertEnvelopes([], oldReceipt);
        await storage.insertEnvelopes([], liveReceipt);

        expect(await storage.deleteExpired(T0)).toBe(0);
        expect(await storage.deleteExpired(T0 + DAY)).toBe(2);
        expect(await storage.deleteExpired(T0 + DAY)).toBe(0);
        expect((await storage.fetchQueue(to.accountId, 1, 100, 0)).map(strip)).toEqual([keep]);
        expect(await storage.insertEnvelopes([], oldReceipt)).toBe(true);
        expect(await storage.insertEnvelopes([], liveReceipt)).toBe(false);
      });

      it('respects the limit and handles an empty batch', async () => {
        const to = dev(uid());
        expect(await storage.insertEnvelopes([])).toBe(true);
        expect(await storage.fetchQueue(to.accountId, 1, 10, T0)).toEqual([]);
        await storage.insertEnvelopes(range(0, 5).map(() => envelope(to)));
        expect(await storage.fetchQueue(to.accountId, 1, 2, T0)).toHaveLength(2);
        expect(await storage.fetchQueue(to.accountId, 1, 0, T0)).toEqual([]);
      });

      it('round-trips a 96 KiB ciphertext', async () => {
        const to = dev(uid());
        const content = bytes(96 * 1024, 3);
        await storage.insertEnvelopes([envelope(to, { content, type: 3 })]);
        const [got] = await storage.fetchQueue(to.accountId, 1, 1, T0);
        // (toEqual walks a large typed array element by element and takes seconds)
        expect(got?.content).toBeInstanceOf(Uint8Array);
        expect(Buffer.from(got?.content ?? []).equals(content)).toBe(true);
        expect(got?.type).toBe(3);
      });
    });
  });
}
