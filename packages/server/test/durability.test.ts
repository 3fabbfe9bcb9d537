/**
 * Durability: a send the server answered with 200 is never lost, across a clean restart, a SIGKILL
 * in the middle of a load and a SIGTERM (graceful shutdown) with sends in flight. The crash tests
 * run the real entry point (`main.ts`) as a child process on a temporary data directory.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { TestDevice, type TestServer, api, marker, startTestServer } from './support/harness.ts';

const decode = (b: Uint8Array) => new TextDecoder().decode(b);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const MAIN = fileURLToPath(new URL('../src/standalone/main.ts', import.meta.url));

const tempDirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'hush-durability-'));
  tempDirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

// ---- the standalone server as a child process ----

interface ChildServer {
  url: string;
  dataDir: string;
  proc: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
}

const children = new Set<ChildServer>();
afterEach(async () => {
  // A failed test must not leave a server running.
  for (const child of children) {
    if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
    await child.exited;
  }
  children.clear();
});

/** `node --import tsx main.ts` on `dataDir`, port 0; resolves with the URL main prints. */
async function startChild(dataDir: string): Promise<ChildServer> {
  const proc = spawn(process.execPath, ['--import', 'tsx', MAIN], {
    cwd: REPO_ROOT,
    env: {
      ...process.env,
      HUSH_HOST: '127.0.0.1',
      HUSH_PORT: '0',
      HUSH_DATA_DIR: dataDir,
      HUSH_LOG_LEVEL: 'warn',
      HUSH_VERIFY_RESEND_COOLDOWN_SECONDS: '0',
      HUSH_VERIFY_PER_NUMBER_PER_HOUR: '1000',
      HUSH_VERIFY_PER_CLIENT_PER_HOUR: '100000',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  proc.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString('utf8');
  });
  proc.stderr?.on('data', (chunk: Buffer) => {
    output += chunk.toString('utf8');
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const child: ChildServer = { url: '', dataDir, proc, exited, output: () => output };
  children.add(child);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const match = /listening on (http:\/\/[0-9.]+:[0-9]+)/.exec(output);
    if (match?.[1]) {
      child.url = match[1];
      return child;
    }
    if (proc.exitCode !== null || proc.signalCode !== null) break;
    await sleep(25);
  }
  proc.kill('SIGKILL');
  throw new Error(`the server did not start:\n${output}`);
}

/** TestDevice.register reads the dev SMS file of the data directory; a child server has one too. */
const asTestServer = (child: { url: string; dataDir: string }) => child as unknown as TestServer;

// ---- load: several senders, pre-encrypted messages with client-chosen ids ----

interface Outgoing {
  sender: TestDevice;
  id: string;
  plaintext: string;
  type: number;
  content: Uint8Array;
  /** acked = 200 received; failed = attempted, no answer (connection error); unsent = never tried. */
  status: 'unsent' | 'acked' | 'failed' | 'other';
  httpStatus?: number;
}

async function prepareMessages(
  server: { url: string },
  senders: TestDevice[],
  recipient: TestDevice,
  perSender: number,
  label: string,
): Promise<Outgoing[][]> {
  const all: Outgoing[][] = [];
  for (const [s, sender] of senders.entries()) {
    const list: Outgoing[] = [];
    for (let i = 0; i < perSender; i++) {
      const bytes = marker(`${label}-s${s}-m${i}`);
      const message = await sender.encryptFor(server, recipient, bytes);
      list.push({
        sender,
        id: `${label}-s${s}-m${i}`,
        plaintext: decode(bytes),
        type: message.type,
        content: message.serialized,
        status: 'unsent',
      });
    }
    all.push(list);
  }
  return all;
}

/**
 * Every sender runs `concurrency` workers that send its messages as fast as they can. `stopAt` is
 * called after each 200 with the number of 200s so far; when it returns true the load stops taking
 * new messages (the caller kills the server there). Bounded by `timeLimitMs`.
 */
async function runLoad(
  server: { url: string },
  recipient: TestDevice,
  perSender: Outgoing[][],
  options: { concurrency: number; timeLimitMs: number; onAck: (acked: number) => void },
): Promise<void> {
  let acked = 0;
  let stopped = false;
  const started = Date.now();
  const workers = perSender.flatMap((messages) => {
    let next = 0;
    return Array.from({ length: options.concurrency }, async () => {
      while (!stopped && next < messages.length && Date.now() - started < options.timeLimitMs) {
        const m = messages[next++] as Outgoing;
        try {
          const res = await m.sender.send(server, recipient, m.content, { id: m.id, type: m.type });
          m.httpStatus = res.status;
          if (res.status === 200 && res.body?.duplicate === false) {
            m.status = 'acked';
            options.onAck(++acked);
          } else {
            m.status = 'other';
          }
        } catch {
          // Connection refused / reset / closed: the sender never got an answer.
          m.status = 'failed';
          stopped = true;
        }
      }
    });
  });
  await Promise.all(workers);
}

/** Drains the device's queue over HTTP: fetch a page, decrypt, acknowledge each, until empty. */
async function drainHttp(server: { url: string }, device: TestDevice, maxEnvelopes: number) {
  const delivered: { guid: string; source: string; plaintext?: string; error?: string }[] = [];
  for (let round = 0; round <= Math.ceil(maxEnvelopes / 100) + 2; round++) {
    const page = await api(server, 'GET', '/v1/messages?limit=100', { auth: device });
    expect(page.status).toBe(200);
    if (page.body.messages.length === 0) return delivered;
    for (const envelope of page.body.messages) {
      const entry: (typeof delivered)[number] = { guid: envelope.guid, source: envelope.sourceAccountId };
      try {
        entry.plaintext = decode(await device.decrypt(envelope));
      } catch (error) {
        entry.error = `${(error as Error).name}: ${(error as Error).message}`;
      }
      delivered.push(entry);
      expect((await api(server, 'DELETE', `/v1/messages/${envelope.guid}`, { auth: device })).status).toBe(204);
    }
  }
  throw new Error(`the queue did not drain within ${maxEnvelopes} envelopes`);
}

function countBy<T>(items: T[]): Map<T, number> {
  const counts = new Map<T, number>();
  for (const item of items) counts.set(item, (counts.get(item) ?? 0) + 1);
  return counts;
}

describe('durability', () => {
  it('acknowledged messages survive a clean restart and are delivered exactly once', async () => {
    const first = await startTestServer({}, tempDir());
    const alice = await TestDevice.register(first);
    const bob = await TestDevice.register(first);
    const sent: string[] = [];
    for (let i = 0; i < 20; i++) {
      const m = marker(`restart-${i}`);
      const res = await alice.sendText(first, bob, m, { id: `restart-${i}` });
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ duplicate: false });
      sent.push(decode(m));
    }
    await first.close();

    const second = await startTestServer({}, first.dataDir);
    try {
      // Send receipts are durable too: a retry after the restart stores nothing.
      const retry = await alice.send(second, bob, new Uint8Array([1, 2, 3]), { id: 'restart-7' });
      expect(retry.body).toEqual({ duplicate: true });

      const socket = await bob.connect(second);
      await socket.next((f) => f.type === 'queue-empty');
      const backlog = socket.envelopes();
      expect(backlog.map((e) => e.sourceAccountId)).toEqual(sent.map(() => alice.accountId));
      const received: string[] = [];
      for (const envelope of backlog) {
        received.push(decode(await bob.decrypt(envelope)));
        socket.ack(envelope.guid);
      }
      expect(received).toEqual(sent);
      await socket.close();

      // Acked means deleted: reconnecting delivers nothing more.
      const again = await bob.connect(second);
      await again.next((f) => f.type === 'queue-empty');
      await sleep(100);
      expect(again.envelopes()).toHaveLength(0);
      await again.close();
    } finally {
      await second.close();
    }

    // The deletions are durable as well.
    const third = await startTestServer({}, first.dataDir);
    try {
      expect((await api(third, 'GET', '/v1/messages', { auth: bob })).body).toEqual({ messages: [], more: false });
    } finally {
      await third.close();
    }
  });

  it('SIGKILL in the middle of a send load loses no acknowledged message and duplicates nothing', async () => {
    const SENDERS = 6;
    const PER_SENDER = 60;
    const dataDir = tempDir();
    const child = await startChild(dataDir);
    const server = asTestServer(child);
    const recipient = await TestDevice.register(server, { keys: SENDERS + 2 });
    const senders = await Promise.all(Array.from({ length: SENDERS }, () => TestDevice.register(server)));
    const perSender = await prepareMessages(server, senders, recipient, PER_SENDER, 'kill');
    const all = perSender.flat();

    // Kill once about a third of the load is acknowledged.
    const killAt = Math.floor(all.length / 3);
    let killedAfterAcks = -1;
    await runLoad(server, recipient, perSender, {
      concurrency: 4,
      timeLimitMs: 20_000,
      onAck: (acked) => {
        if (acked >= killAt && killedAfterAcks < 0) {
          killedAfterAcks = acked;
          child.proc.kill('SIGKILL');
        }
      },
    });
    if (killedAfterAcks < 0) child.proc.kill('SIGKILL');
    expect((await child.exited).signal).toBe('SIGKILL');

    const acked = all.filter((m) => m.status === 'acked');
    const failed = all.filter((m) => m.status === 'failed');
    expect(all.filter((m) => m.status === 'other').map((m) => m.httpStatus)).toEqual([]);
    expect(killedAfterAcks).toBeGreaterThan(0);
    expect(acked.length).toBeLessThan(all.length); // the kill hit the load, not its end
    expect(failed.length).toBeGreaterThan(0); // some sends were in flight

    // Restart on the same data directory; the recipient drains its queue.
    const restarted = await startChild(dataDir);
    const drained = await drainHttp(restarted, recipient, all.length);
    expect(drained.filter((d) => d.error)).toEqual([]);
    const deliveredTexts = drained.map((d) => d.plaintext as string);
    const duplicates = [...countBy(deliveredTexts)].filter(([, n]) => n > 1);
    expect(duplicates).toEqual([]);
    const delivered = new Set(deliveredTexts);
    const attempted = new Set([...acked, ...failed].map((m) => m.plaintext));
    expect(acked.filter((m) => !delivered.has(m.plaintext)).map((m) => m.id)).toEqual([]); // none lost
    expect(deliveredTexts.filter((t) => !attempted.has(t))).toEqual([]); // nothing invented

    // The sends that got no answer are retried with the same ids: those the server had stored
    // before the kill are recognised as duplicates, the rest are stored now.
    const storedUnacked = failed.filter((m) => delivered.has(m.plaintext));
    for (const m of failed) {
      const res = await m.sender.send(restarted, recipient, m.content, { id: m.id, type: m.type });
      expect(res.status).toBe(200);
      expect({ id: m.id, duplicate: res.body.duplicate }).toEqual({ id: m.id, duplicate: delivered.has(m.plaintext) });
    }
    // Retrying an acknowledged send is a duplicate too.
    for (const m of acked.slice(0, 5)) {
      expect((await m.sender.send(restarted, recipient, m.content, { id: m.id, type: m.type })).body).toEqual({
        duplicate: true,
      });
    }
    const second = await drainHttp(restarted, recipient, all.length);
    expect(second.filter((d) => d.error)).toEqual([]);
    const secondTexts = second.map((d) => d.plaintext as string);
    expect(secondTexts.sort()).toEqual(
      failed
        .filter((m) => !delivered.has(m.plaintext))
        .map((m) => m.plaintext)
        .sort(),
    );
    const everything = [...deliveredTexts, ...secondTexts];
    expect(everything.length).toBe(attempted.size);
    expect(new Set(everything)).toEqual(attempted);

    console.info(
      `SIGKILL: ${all.length} prepared, ${acked.length + failed.length} attempted, ${acked.length} acknowledged ` +
        `(kill after ${killedAfterAcks}), ${failed.length} without answer, of which ${storedUnacked.length} were ` +
        `stored; delivered after restart ${drained.length}, duplicates ${duplicates.length}, lost 0; ` +
        `retries stored ${second.length} more`,
    );
    restarted.proc.kill('SIGTERM');
    expect((await restarted.exited).code).toBe(0);
  });

  it('SIGTERM with sends in flight: every send gets a 200 that is kept, or a connection error', async () => {
    const SENDERS = 4;
    const PER_SENDER = 50;
    const dataDir = tempDir();
    const child = await startChild(dataDir);
    const server = asTestServer(child);
    const recipient = await TestDevice.register(server, { keys: SENDERS + 2 });
    const senders = await Promise.all(Array.from({ length: SENDERS }, () => TestDevice.register(server)));
    const perSender = await prepareMessages(server, senders, recipient, PER_SENDER, 'term');
    const all = perSender.flat();

    let termAt = -1;
    let termSentAt = 0;
    await runLoad(server, recipient, perSender, {
      concurrency: 4,
      timeLimitMs: 20_000,
      onAck: (acked) => {
        if (acked >= all.length / 3 && termAt < 0) {
          termAt = acked;
          termSentAt = Date.now();
          child.proc.kill('SIGTERM');
        }
      },
    });
    if (termAt < 0) child.proc.kill('SIGTERM');
    const exit = await Promise.race([child.exited, sleep(20_000).then(() => 'still running after 20 s')]);
    const shutdownMs = Date.now() - termSentAt;
    expect(exit).toEqual({ code: 0, signal: null });

    const acked = all.filter((m) => m.status === 'acked');
    const failed = all.filter((m) => m.status === 'failed');
    // No 5xx or any other answer while stopping: a 200, or no answer at all.
    expect(all.filter((m) => m.status === 'other').map((m) => m.httpStatus)).toEqual([]);
    expect(acked.length).toBeGreaterThanOrEqual(termAt);
    expect(acked.length).toBeLessThan(all.length);

    const restarted = await startChild(dataDir);
    const drained = await drainHttp(restarted, recipient, all.length);
    expect(drained.filter((d) => d.error)).toEqual([]);
    const texts = drained.map((d) => d.plaintext as string);
    expect([...countBy(texts)].filter(([, n]) => n > 1)).toEqual([]);
    const delivered = new Set(texts);
    expect(acked.filter((m) => !delivered.has(m.plaintext)).map((m) => m.id)).toEqual([]);
    const attempted = new Set([...acked, ...failed].map((m) => m.plaintext));
    expect(texts.filter((t) => !attempted.has(t))).toEqual([]);

    console.info(
      `SIGTERM: ${acked.length + failed.length} attempted, ${acked.length} acknowledged (term after ${termAt}), ` +
        `${failed.length} connection errors, ${failed.filter((m) => delivered.has(m.plaintext)).length} of them stored; ` +
        `delivered after restart ${drained.length}; shutdown took ${shutdownMs} ms`,
    );
    restarted.proc.kill('SIGTERM');
    expect((await restarted.exited).code).toBe(0);
  });
});
