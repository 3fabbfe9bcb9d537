/**
 * The `hush` command as a user runs it: a child process (`node --import tsx src/main.ts …`)
 * against a real standalone server (SQLite, WebSocket) started by the test on a loopback port.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { type RunningServer, loadConfig, startServer } from '@hush/server/standalone';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repo = fileURLToPath(new URL('../../..', import.meta.url));
const main = join(repo, 'packages/cli/src/main.ts');
const temp = mkdtempSync(join(tmpdir(), 'hush-cli-test-'));
afterAll(() => rmSync(temp, { recursive: true, force: true }));

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface Running {
  /** Everything printed so far. */
  readonly stdout: string;
  readonly stderr: string;
  signal(name: NodeJS.Signals): void;
  /** Resolves when `predicate` holds for the output so far. */
  waitFor(predicate: (stdout: string, stderr: string) => boolean, timeoutMs?: number): Promise<void>;
  exited: Promise<Result>;
}

/** Starts `hush …` (asynchronously: the server lives in this process and must keep serving). */
function start(
  args: string[],
  options: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {},
): Running {
  const child = spawn(process.execPath, ['--import', 'tsx', main, ...args], {
    cwd: repo,
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '', HUSH_HOME: '', HUSH_SERVER: '', ...options.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => {
    stdout += d;
  });
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const exited = new Promise<Result>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`hush ${args.join(' ')} timed out\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    }, options.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  child.stdin.end(options.input ?? '');
  return {
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    signal: (name) => child.kill(name),
    async waitFor(predicate, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (!predicate(stdout, stderr)) {
        if (Date.now() > deadline)
          throw new Error(`hush ${args.join(' ')}: gave up waiting\nstdout:\n${stdout}\nstderr:\n${stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    exited,
  };
}

const hush = (args: string[], options: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}) =>
  start(args, options).exited;

/** Runs `tasks` at most `limit` at a time. */
async function pool<T>(items: T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(
    Array.from({ length: limit }, async () => {
      for (let item = queue.shift(); item !== undefined; item = queue.shift()) await task(item);
    }),
  );
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

const digitsOf = (output: string) =>
  (output.match(/^ {4}(\d{5} \d{5} \d{5} \d{5})$/gm) ?? []).join('').replace(/\D/g, '');
const accountIdOf = (output: string) => /account id\s+([0-9a-f-]{36})/.exec(output)?.[1] as string;

describe('hush --help', () => {
  const commands = [
    [[], ['--server', '--home', '--passphrase-env', 'register', 'demo']],
    [['register'], ['--code', '--dev-code-file']],
    [['send'], ['<contact>', '<text>']],
    [['listen'], ['--once', '--timeout']],
    [['chats'], []],
    [['history'], ['--limit', '--no-mark-read']],
    [['group'], ['create', 'add', 'remove', 'send', 'list']],
    [
      ['group', 'create'],
      ['<name>', '<members...>'],
    ],
    [
      ['group', 'add'],
      ['<group>', '<member>'],
    ],
    [
      ['group', 'remove'],
      ['<group>', '<member>'],
    ],
    [
      ['group', 'send'],
      ['<group>', '<text>'],
    ],
    [['group', 'list'], []],
    [['group', 'leave'], ['<group>']],
    [['send-file'], ['--caption', '<path>']],
    [['get-file'], ['--out', '<message-id>']],
    [['safety-number'], ['--accept', '--verify']],
    [['devices'], ['list', 'add', 'remove']],
    [['devices', 'add'], ['<link>']],
    [['devices', 'remove'], ['<device-id>']],
    [['link'], ['--name', '--timeout']],
    [['contacts'], ['add', 'list']],
    [
      ['contacts', 'add'],
      ['<name>', '<account-id>', '--number'],
    ],
    [['contacts', 'list'], []],
    [['whoami'], []],
    [['demo'], ['--keep']],
  ] as const;

  it('every command explains itself and exits 0', async () => {
    await pool([...commands], 4, async ([command, mentions]) => {
      const result = await hush([...command, '--help']);
      expect(result.code, `hush ${command.join(' ')} --help: ${result.stderr}`).toBe(0);
      expect(result.stdout).toContain(`Usage: hush${command.length ? ` ${command.join(' ')}` : ''}`);
      expect(result.stdout).toContain('Options:');
      expect(result.stdout).toContain('--help');
      for (const mention of mentions) expect(result.stdout, `hush ${command.join(' ')} --help`).toContain(mention);
    });
  });
});

describe('hush against a running server', () => {
  let server: RunningServer;
  let smsLog: string;
  const home = (name: string) => join(temp, name);
  const as = (name: string, ...args: string[]) => hush(['--home', home(name), ...args]);
  let aliceId: string;
  let bobId: string;

  beforeAll(async () => {
    const dataDir = join(temp, 'server');
    const config = loadConfig({
      HUSH_PORT: '0',
      HUSH_DATA_DIR: dataDir,
      HUSH_LOG_LEVEL: 'silent',
      HUSH_VERIFY_RESEND_COOLDOWN_SECONDS: '0',
      HUSH_VERIFY_PER_NUMBER_PER_HOUR: '1000',
      HUSH_VERIFY_PER_CLIENT_PER_HOUR: '100000',
    });
    server = await startServer(config, {
      devSmsOutput: new Writable({ write: (_chunk, _encoding, callback) => callback() }),
    });
    smsLog = config.devSmsFile;
  });
  afterAll(async () => {
    await server?.close();
  });

  const register = (name: string, number: string, ...extra: string[]) =>
    hush(['--home', home(name), '--server', server.url, ...extra, 'register', number, '--dev-code-file', smsLog]);

  it('registers two users with codes from the dev SMS log', async () => {
    const [alice, bob] = await Promise.all([register('alice', '+14155550201'), register('bob', '+14155550202')]);
    for (const r of [alice, bob]) {
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('Registered +1415555020');
      expect(r.stderr).toContain('generating identity');
    }
    aliceId = accountIdOf(alice.stdout);
    bobId = accountIdOf(bob.stdout);
    expect(aliceId).toMatch(/^[0-9a-f-]{36}$/);
    // The server is remembered: later commands need no --server.
    const who = await as('alice', '--json', 'whoami');
    expect(who.code, who.stderr).toBe(0);
    expect(JSON.parse(who.stdout)).toMatchObject({ accountId: aliceId, number: '+14155550201', server: server.url });
  });

  it('sends, receives with listen --once, and shows chats and history', async () => {
    expect((await as('alice', 'contacts', 'add', 'bob', bobId, '--number', '+14155550202')).code).toBe(0);
    const sent = await as('alice', 'send', 'bob', 'hello from the CLI test');
    expect(sent.code, sent.stderr).toBe(0);
    expect(sent.stdout).toContain('sent to bob');
    const byNumber = await as('alice', 'send', '+14155550202', 'and by number');
    expect(byNumber.code, byNumber.stderr).toBe(0);

    const listened = await as('bob', 'listen', '--once');
    expect(listened.code, listened.stderr).toBe(0);
    expect(listened.stdout).toContain('hello from the CLI test');
    expect(listened.stdout).toContain('and by number');

    const chats = await as('bob', 'chats');
    expect(chats.code, chats.stderr).toBe(0);
    expect(chats.stdout).toContain(aliceId.slice(0, 8));
    expect(chats.stdout).toContain('2 unread');

    const history = await as('bob', 'history', aliceId);
    expect(history.code, history.stderr).toBe(0);
    expect(history.stdout.indexOf('hello from the CLI test')).toBeGreaterThan(-1);
    expect(history.stdout.indexOf('and by number')).toBeGreaterThan(history.stdout.indexOf('hello from the CLI test'));
    // Reading the history marked the conversation read (and sent read receipts to Alice).
    expect((await as('bob', 'chats')).stdout).not.toContain('unread');
    const receipts = await as('alice', 'listen', '--once');
    expect(receipts.code, receipts.stderr).toBe(0);
    expect(receipts.stdout).toContain('read by bob');
    const aliceHistory = await as('alice', 'history', 'bob');
    expect(aliceHistory.stdout).toMatch(/you: hello from the CLI test\s+✓✓ read/);
  });

  it('shows the same 60-digit safety number on both sides', async () => {
    const [alice, bob] = await Promise.all([as('alice', 'safety-number', 'bob'), as('bob', 'safety-number', aliceId)]);
    expect(alice.code, alice.stderr).toBe(0);
    expect(bob.code, bob.stderr).toBe(0);
    expect(digitsOf(alice.stdout)).toMatch(/^\d{60}$/);
    expect(digitsOf(alice.stdout)).toBe(digitsOf(bob.stdout));
    expect(alice.stdout).toContain('trust: unverified');
    // Bob scans Alice's QR payload: verified.
    const qr = /QR payload \(base64\): (\S+)/.exec(alice.stdout)?.[1] as string;
    const verified = await as('bob', 'safety-number', aliceId, '--verify', qr);
    expect(verified.code, verified.stderr).toBe(0);
    expect(verified.stdout).toContain('trust: verified');
    const wrong = await as('alice', 'safety-number', 'bob', '--verify', qr); // her own code, not Bob's
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('does NOT match');
  });

  it('groups and files', async () => {
    const created = await as('alice', 'group', 'create', 'trio', 'bob');
    expect(created.code, created.stderr).toBe(0);
    const sent = await as('alice', 'group', 'send', 'trio', 'hello group');
    expect(sent.code, sent.stderr).toBe(0);
    const file = join(temp, 'note.txt');
    writeFileSync(file, 'a small encrypted file\n');
    const sentFile = await as('alice', 'send-file', 'bob', file, '--caption', 'the note');
    expect(sentFile.code, sentFile.stderr).toBe(0);

    const listened = await as('bob', 'listen', '--once');
    expect(listened.code, listened.stderr).toBe(0);
    expect(listened.stdout).toContain('#trio');
    expect(listened.stdout).toContain('hello group');
    const id = /hush get-file (\S+)/.exec(listened.stdout)?.[1] as string;
    expect(id).toBeTruthy();
    const out = join(temp, 'got.txt');
    const got = await as('bob', 'get-file', id, '--out', out);
    expect(got.code, got.stderr).toBe(0);
    expect(readFileSync(out, 'utf8')).toBe('a small encrypted file\n');
    const groups = await as('bob', 'group', 'list');
    expect(groups.stdout).toContain('trio');
  });

  it('links a second device by QR link; both devices then receive, and the list shows it', async () => {
    const linking = start(['--home', home('alice-laptop'), '--server', server.url, 'link', '--name', 'laptop']);
    await linking.waitFor((_out, err) => err.includes("hush devices add '"));
    const uri = /hush devices add '([^']+)'/.exec(linking.stderr)?.[1] as string;
    expect(uri).toMatch(/^hush:\/\/link\?address=/);
    const added = await as('alice', 'devices', 'add', uri);
    expect(added.code, added.stderr).toBe(0);
    const linked = await linking.exited;
    expect(linked.code, linked.stderr).toBe(0);
    expect(linked.stdout).toContain(`Linked as device 2 of +14155550201 (account ${aliceId})`);

    const list = await as('alice', 'devices');
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/device 1 {2}\(primary\).*\(this device\)/);
    expect(list.stdout).toContain('device 2  “laptop”');
    // A linked device cannot link others.
    const refused = await as('alice-laptop', 'devices', 'add', uri);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('only the primary device');

    const sent = await as('bob', 'send', aliceId, 'to every device of alice');
    expect(sent.code, sent.stderr).toBe(0);
    for (const device of ['alice', 'alice-laptop']) {
      const got = await as(device, 'listen', '--once');
      expect(got.code, got.stderr).toBe(0);
      expect(got.stdout).toContain('to every device of alice');
    }
  });

  it('listen prints messages live, refuses a second process on the same device, and stops on Ctrl-C', async () => {
    const listening = start(['--home', home('bob'), 'listen']);
    await listening.waitFor((_out, err) => err.includes('up to date'));
    const sent = await as('alice', 'send', 'bob', 'live over the socket');
    expect(sent.code, sent.stderr).toBe(0);
    await listening.waitFor((out) => out.includes('live over the socket'));
    const second = await as('bob', 'send', 'alice', 'from a second process');
    expect(second.code).toBe(1);
    expect(second.stderr).toContain('in use by another hush process');
    expect(second.stderr).toContain('hush listen');
    listening.signal('SIGINT');
    const result = await listening.exited;
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain('stopped');
    // The lock went with it.
    expect((await as('bob', 'whoami')).code).toBe(0);
  });

  it('explains user mistakes: unknown contact, server down, wrong code, locked store, not registered', async () => {
    const unknown = await as('alice', 'send', 'carol', 'hi');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('unknown contact: carol');
    expect(unknown.stderr).toContain('hush contacts add');

    const port = await closedPort();
    const down = await as('alice', '--server', `http://127.0.0.1:${port}`, 'send', 'bob', 'nobody home');
    expect(down.code).toBe(1);
    expect(down.stderr).toContain(
      `cannot reach the Hush server at http://127.0.0.1:${port}; is it running? (npm start)`,
    );

    const wrongCode = await hush([
      '--home',
      home('carol'),
      '--server',
      server.url,
      'register',
      '+14155550203',
      '--code',
      '000000',
    ]);
    expect(wrongCode.code).toBe(1);
    expect(wrongCode.stderr).toMatch(/wrong verification code \(\d attempts? left\)/);

    const pass = { HUSH_TEST_PASS: 'correct horse battery staple' };
    const dave = await hush(
      [
        '--home',
        home('dave'),
        '--server',
        server.url,
        '--passphrase-env',
        'HUSH_TEST_PASS',
        'register',
        '+14155550204',
        '--dev-code-file',
        smsLog,
      ],
      { env: pass },
    );
    expect(dave.code, dave.stderr).toBe(0);
    const opened = await hush(['--home', home('dave'), '--passphrase-env', 'HUSH_TEST_PASS', 'whoami'], { env: pass });
    expect(opened.code, opened.stderr).toBe(0);
    const locked = await hush(['--home', home('dave'), '--passphrase-env', 'HUSH_TEST_PASS', 'whoami'], {
      env: { HUSH_TEST_PASS: 'wrong passphrase' },
    });
    expect(locked.code).toBe(1);
    expect(locked.stderr).toContain('cannot unlock the local store');
    expect(locked.stderr).toContain('wrong passphrase');
    const noPassphrase = await hush(['--home', home('dave'), 'whoami']);
    expect(noPassphrase.code).toBe(1);
    expect(noPassphrase.stderr).toContain('protected by a passphrase');

    const nobody = await hush(['--home', home('nobody'), 'whoami']);
    expect(nobody.code).toBe(1);
    expect(nobody.stderr).toContain('not registered');

    const noCode = await hush(['--home', home('erin'), '--server', server.url, 'register', '+14155550205'], {
      input: '',
    });
    expect(noCode.code).toBe(1);
    expect(noCode.stderr).toContain('no code entered');

    // The message that could not go out while the server was down goes out with the next send.
    const resent = await as('alice', 'send', 'bob', 'the server is back');
    expect(resent.code, resent.stderr).toBe(0);
    expect(resent.stderr).toContain('re-sent 1 earlier message');
    const listened = await as('bob', 'listen', '--once');
    expect(listened.stdout).toContain('nobody home');
    expect(listened.stdout).toContain('the server is back');
  });
});

describe('hush demo', () => {
  it('runs the ten steps on an embedded server and shows ciphertext, never the plaintext', async () => {
    const started = Date.now();
    const result = await hush(['demo'], { timeoutMs: 90_000 });
    expect(result.code, result.stderr).toBe(0);
    const out = result.stdout;
    for (let n = 1; n <= 10; n++) expect(out).toMatch(new RegExp(`^Step ${n} · `, 'm'));
    for (const name of [
      'Install',
      'verify the phone number',
      'Generate keys',
      'prekey directory',
      'Encrypt',
      'stored durably',
      'WebSocket',
      'Deliver',
      'Decrypt',
      'encrypted at rest',
    ]) {
      expect(out).toContain(name);
    }
    // Beside each message, the server's row: its ciphertext, and not the text.
    const boxes = out.split('┌─ what the server stored').slice(1);
    expect(boxes.length).toBeGreaterThanOrEqual(2);
    for (const box of boxes) {
      const hex = /│ {3}hex\s+([0-9a-f ]+)/.exec(box)?.[1]?.replace(/ /g, '') ?? '';
      const base64 = /│ {3}base64\s+([A-Za-z0-9+/=]+)/.exec(box)?.[1] ?? '';
      expect(hex.length).toBeGreaterThan(0);
      expect(base64.length).toBeGreaterThan(0);
      for (const text of [
        'Hi Bob! This message is end-to-end encrypted.',
        'Hi Alice! Got it. Nobody but you can read this.',
      ]) {
        expect(Buffer.from(hex, 'hex').includes(Buffer.from(text))).toBe(false);
        expect(
          Buffer.from(base64.slice(0, base64.length - (base64.length % 4)), 'base64').includes(Buffer.from(text)),
        ).toBe(false);
      }
      expect(box).toContain('(not in the row)');
    }
    expect(out).toMatch(/type\s+3 = PreKeySignalMessage/);
    expect(out).not.toContain('FOUND');
    expect(out).toContain('none found');
    expect(out).toContain('the same 60 digits on both phones');
    expect(out).toContain('Summary');
    expect(Date.now() - started).toBeLessThan(90_000);
  });
});
