import { randomInt, randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApiError } from '../src/core/errors.ts';
import type {
  Account,
  Device,
  ECPreKey,
  Envelope,
  KeyUpload,
  KyberPreKey,
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
 * - `takeKeys` may hand out the one-time keys in any order; a one-time EC key is optional.
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
