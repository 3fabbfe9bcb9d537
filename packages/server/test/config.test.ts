/**
 * Configuration: `loadConfig` defaults and validation, and `npm start`'s entry point run as a child
 * process: a bad environment stops it with exit code 2 naming the variable; a good one prints where
 * it listens, where data and codes go, serves, and exits 0 on SIGTERM and SIGINT.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ConfigError, DEFAULT_WEB_DIR, loadConfig } from '../src/standalone/config.ts';

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const mainTs = join(repoRoot, 'packages/server/src/standalone/main.ts');

function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

const ALL_VARS = [
  'HUSH_HOST',
  'HUSH_PORT',
  'HUSH_DATA_DIR',
  'HUSH_LOG_LEVEL',
  'HUSH_SMS',
  'HUSH_SNS_REGION',
  'HUSH_PUSH',
  'HUSH_VAPID_SUBJECT',
  'HUSH_VAPID_PUBLIC_KEY',
  'HUSH_VAPID_PRIVATE_KEY',
  'HUSH_VERIFY_RESEND_COOLDOWN_SECONDS',
  'HUSH_VERIFY_PER_NUMBER_PER_HOUR',
  'HUSH_VERIFY_PER_CLIENT_PER_HOUR',
  'HUSH_KEY_FETCHES_PER_TARGET_PER_10_MINUTES',
  'HUSH_KEY_FETCHES_PER_ACCOUNT_PER_HOUR',
  'HUSH_SEND_ENVELOPES_PER_DEVICE_PER_MINUTE',
  'HUSH_WEB_DIR',
];

describe('loadConfig', () => {
  it('defaults: 127.0.0.1:8080, ./data, dev SMS and push, Signal-like verification, key-fetch and send limits', () => {
    const config = loadConfig({});
    const dataDir = resolve('./data');
    expect(config).toEqual({
      host: '127.0.0.1',
      port: 8080,
      dataDir,
      databasePath: join(dataDir, 'hush.sqlite'),
      attachmentsDir: join(dataDir, 'attachments'),
      devSmsFile: join(dataDir, 'dev-sms.log'),
      devPushFile: join(dataDir, 'dev-push.log'),
      secretFile: join(dataDir, 'server-secret.key'),
      logLevel: 'info',
      sms: { kind: 'dev' },
      push: { kind: 'dev' },
      verificationLimits: { resendCooldownMs: 30_000, perNumberPerHour: 10, perClientPerHour: 50 },
      keyFetchLimits: { perTargetPer10Minutes: 30, perAccountPerHour: 2_000 },
      sendLimits: { envelopesPerDevicePerMinute: 60_000 },
      webDir: DEFAULT_WEB_DIR,
    });
    expect(DEFAULT_WEB_DIR).toBe(join(repoRoot, 'apps/mobile/dist'));
    expect(loadConfig({ HUSH_WEB_DIR: 'none' }).webDir).toBeUndefined();
  });

  it('reads every variable', () => {
    const config = loadConfig({
      HUSH_HOST: '0.0.0.0',
      HUSH_PORT: '0',
      HUSH_DATA_DIR: '/var/lib/hush',
      HUSH_LOG_LEVEL: 'warn',
      HUSH_SMS: 'sns',
      HUSH_SNS_REGION: 'eu-west-1',
      HUSH_PUSH: 'webpush',
      HUSH_VAPID_SUBJECT: 'mailto:ops@example.com',
      HUSH_VAPID_PUBLIC_KEY: 'public',
      HUSH_VAPID_PRIVATE_KEY: 'private',
      HUSH_VERIFY_RESEND_COOLDOWN_SECONDS: '0',
      HUSH_VERIFY_PER_NUMBER_PER_HOUR: '3',
      HUSH_VERIFY_PER_CLIENT_PER_HOUR: '7',
      HUSH_KEY_FETCHES_PER_TARGET_PER_10_MINUTES: '5',
      HUSH_KEY_FETCHES_PER_ACCOUNT_PER_HOUR: '100',
      HUSH_SEND_ENVELOPES_PER_DEVICE_PER_MINUTE: '1000000000',
      HUSH_WEB_DIR: 'web',
    });
    expect(config).toMatchObject({
      host: '0.0.0.0',
      port: 0,
      dataDir: '/var/lib/hush',
      databasePath: '/var/lib/hush/hush.sqlite',
      logLevel: 'warn',
      sms: { kind: 'sns', region: 'eu-west-1' },
      push: { kind: 'webpush', subject: 'mailto:ops@example.com', publicKey: 'public', privateKey: 'private' },
      verificationLimits: { resendCooldownMs: 0, perNumberPerHour: 3, perClientPerHour: 7 },
      keyFetchLimits: { perTargetPer10Minutes: 5, perAccountPerHour: 100 },
      sendLimits: { envelopesPerDevicePerMinute: 1_000_000_000 },
      webDir: resolve('web'),
    });
    expect(loadConfig({ HUSH_PORT: '65535' }).port).toBe(65535);
  });

  it('an empty or blank variable means unset, not 0 (HUSH_PORT= in an env file keeps 8080)', () => {
    const config = loadConfig({
      HUSH_PORT: '',
      HUSH_VERIFY_RESEND_COOLDOWN_SECONDS: ' ',
      HUSH_HOST: '',
      HUSH_DATA_DIR: '',
      HUSH_WEB_DIR: '',
    });
    expect(config.port).toBe(8080);
    expect(config.verificationLimits.resendCooldownMs).toBe(30_000);
    expect(config.host).toBe('127.0.0.1');
    expect(config.dataDir).toBe(resolve('./data'));
    expect(config.webDir).toBe(DEFAULT_WEB_DIR);
  });

  const bad: [string, string][] = [
    ['HUSH_PORT', 'abc'],
    ['HUSH_PORT', '65536'],
    ['HUSH_PORT', '70000'],
    ['HUSH_PORT', '-1'],
    ['HUSH_PORT', '80.5'],
    ['HUSH_LOG_LEVEL', 'loud'],
    ['HUSH_SMS', 'pigeon'],
    ['HUSH_SMS', 'SNS'],
    ['HUSH_PUSH', 'apns'],
    ['HUSH_VERIFY_RESEND_COOLDOWN_SECONDS', '-5'],
    ['HUSH_VERIFY_RESEND_COOLDOWN_SECONDS', 'soon'],
    ['HUSH_VERIFY_PER_NUMBER_PER_HOUR', '0'],
    ['HUSH_VERIFY_PER_NUMBER_PER_HOUR', 'many'],
    ['HUSH_VERIFY_PER_CLIENT_PER_HOUR', '0'],
    ['HUSH_VERIFY_PER_CLIENT_PER_HOUR', '2.5'],
    ['HUSH_KEY_FETCHES_PER_TARGET_PER_10_MINUTES', '0'],
    ['HUSH_KEY_FETCHES_PER_TARGET_PER_10_MINUTES', '-3'],
    ['HUSH_KEY_FETCHES_PER_TARGET_PER_10_MINUTES', 'few'],
    ['HUSH_KEY_FETCHES_PER_ACCOUNT_PER_HOUR', '0'],
    ['HUSH_KEY_FETCHES_PER_ACCOUNT_PER_HOUR', '99.5'],
    ['HUSH_KEY_FETCHES_PER_ACCOUNT_PER_HOUR', 'Infinity'],
    ['HUSH_SEND_ENVELOPES_PER_DEVICE_PER_MINUTE', '0'],
    ['HUSH_SEND_ENVELOPES_PER_DEVICE_PER_MINUTE', '1e12'],
    ['HUSH_SEND_ENVELOPES_PER_DEVICE_PER_MINUTE', '6000/min'],
  ];
  for (const [name, value] of bad) {
    it(`${name}=${value} stops with a ConfigError naming ${name} (and only it)`, () => {
      const error = configError({ [name]: value });
      expect(error.name).toBe('ConfigError');
      expect(error.message).toContain(name);
      expect(error.message).toContain(JSON.stringify(value));
      for (const other of ALL_VARS.filter((v) => v !== name && !name.startsWith(v))) {
        expect(error.message).not.toContain(`${other}:`);
      }
    });
  }

  it('webpush without VAPID keys names each missing key', () => {
    const none = configError({ HUSH_PUSH: 'webpush' });
    for (const key of ['HUSH_VAPID_SUBJECT', 'HUSH_VAPID_PUBLIC_KEY', 'HUSH_VAPID_PRIVATE_KEY']) {
      expect(none.message).toContain(key);
    }
    const one = configError({
      HUSH_PUSH: 'webpush',
      HUSH_VAPID_SUBJECT: 'mailto:ops@example.com',
      HUSH_VAPID_PUBLIC_KEY: 'public',
    });
    expect(one.message).toContain('HUSH_VAPID_PRIVATE_KEY');
    expect(one.message).not.toContain('HUSH_VAPID_SUBJECT');
    expect(one.message).not.toContain('HUSH_VAPID_PUBLIC_KEY');
    // Blank counts as missing.
    expect(
      configError({
        HUSH_PUSH: 'webpush',
        HUSH_VAPID_SUBJECT: 'mailto:ops@example.com',
        HUSH_VAPID_PUBLIC_KEY: 'public',
        HUSH_VAPID_PRIVATE_KEY: '',
      }).message,
    ).toContain('HUSH_VAPID_PRIVATE_KEY');
  });

  it('several bad variables are all named at once', () => {
    const error = configError({ HUSH_PORT: 'x', HUSH_SMS: 'pigeon', HUSH_LOG_LEVEL: 'loud' });
    for (const name of ['HUSH_PORT', 'HUSH_SMS', 'HUSH_LOG_LEVEL']) expect(error.message).toContain(name);
  });
});

// ---- the entry point as a child process ----------------------------------------------------------

interface Child {
  proc: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startMain(env: Record<string, string>): Child {
  const base = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('HUSH_')));
  const proc = spawn(process.execPath, ['--import', 'tsx', mainTs], {
    cwd: repoRoot,
    env: { ...base, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout?.on('data', (chunk) => {
    out += chunk;
  });
  proc.stderr?.on('data', (chunk) => {
    err += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => {
    proc.once('exit', (code, signal) => done({ code, signal }));
  });
  return { proc, stdout: () => out, stderr: () => err, exited };
}

async function until<T>(what: string, check: () => T | undefined, child: Child, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value !== undefined) return value;
    if (child.proc.exitCode !== null)
      throw new Error(`exited (${child.proc.exitCode}) before ${what}: ${child.stderr()}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${child.stdout()} ${child.stderr()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function withTimeout<T>(promise: Promise<T>, ms: number, child: Child): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          child.proc.kill('SIGKILL');
          reject(new Error('the child did not exit in time'));
        }, ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

describe('the entry point (npm start) as a child process', () => {
  const badEnvs: [string, Record<string, string>, string[]][] = [
    ['a bad port', { HUSH_PORT: '99999' }, ['HUSH_PORT']],
    ['an unknown SMS sender', { HUSH_SMS: 'pigeon' }, ['HUSH_SMS']],
    [
      'webpush without VAPID keys',
      { HUSH_PUSH: 'webpush' },
      ['HUSH_VAPID_SUBJECT', 'HUSH_VAPID_PUBLIC_KEY', 'HUSH_VAPID_PRIVATE_KEY'],
    ],
  ];
  for (const [what, env, named] of badEnvs) {
    it(`with ${what} it exits with code 2, names ${named.join(', ')} on stderr, and touches nothing`, async () => {
      const dataDir = join(mkdtempSync(join(tmpdir(), 'hush-config-')), 'data');
      const child = startMain({ HUSH_DATA_DIR: dataDir, ...env });
      const { code, signal } = await withTimeout(child.exited, 30_000, child);
      expect(signal).toBeNull();
      expect(code).toBe(2);
      for (const name of named) expect(child.stderr()).toContain(name);
      expect(child.stderr()).toMatch(/^hush-server: invalid configuration/);
      expect(child.stdout()).not.toContain('listening');
      expect(existsSync(dataDir)).toBe(false);
    });
  }

  for (const signalName of ['SIGTERM', 'SIGINT'] as const) {
    it(`with a good environment it prints the address, data path and code log, serves, and exits 0 on ${signalName}`, async () => {
      const dataDir = join(mkdtempSync(join(tmpdir(), 'hush-config-')), 'data');
      const child = startMain({ HUSH_PORT: '0', HUSH_DATA_DIR: dataDir });
      try {
        const url = await until(
          'the address',
          () => /Hush server listening on (http:\/\/127\.0\.0\.1:(\d+))/.exec(child.stdout())?.[1],
          child,
        );
        const port = Number(new URL(url).port);
        expect(port).toBeGreaterThan(0);
        expect(port).not.toBe(8080);
        expect(child.stdout()).toContain(`data (SQLite, attachments): ${dataDir}`);
        expect(child.stdout()).toContain(`printed below and appended to ${join(dataDir, 'dev-sms.log')}`);
        expect(child.stdout()).toContain(`${url}/docs`);

        const health = await fetch(`${url}/healthz`);
        expect(health.status).toBe(200);
        expect(await health.json()).toEqual({ status: 'ok' });
        expect(existsSync(join(dataDir, 'hush.sqlite'))).toBe(true);

        // Codes appear where the banner says: on stdout and in the dev SMS log.
        const started = await fetch(`${url}/v1/verification/sessions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ number: '+1 415 555 2671' }),
        });
        expect(started.status).toBe(200);
        const printed = await until(
          'the dev SMS line',
          () => /\[dev sms\] \+14155552671 code (\d{6})/.exec(child.stdout())?.[1],
          child,
        );
        const logged = readFileSync(join(dataDir, 'dev-sms.log'), 'utf8');
        expect(JSON.parse(logged.trim().split('\n').at(-1) as string)).toMatchObject({
          number: '+14155552671',
          code: printed,
        });

        child.proc.kill(signalName);
        const { code, signal } = await withTimeout(child.exited, 15_000, child);
        expect(signal).toBeNull();
        expect(code).toBe(0);
        expect(child.stderr()).toBe('');
        expect(child.stdout()).toContain('"msg":"stopped"');
        await expect(fetch(`${url}/healthz`)).rejects.toThrow();
      } finally {
        if (child.proc.exitCode === null) child.proc.kill('SIGKILL');
      }
    });
  }
});
