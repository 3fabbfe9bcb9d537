/**
 * Server benchmark: the standalone server (SQLite, synchronous = FULL, WebSocket delivery) under
 * load from simulated devices on loopback sockets. See bench/README.md ("Server benchmark").
 *
 * Run: npm run bench:server
 * Env: BENCH_DEVICES, BENCH_WINDOWS, BENCH_WARMUP_MS, BENCH_MEASURE_MS, BENCH_HALF_MS,
 *      BENCH_IDLE_SOCKETS, BENCH_IDLE_ACCOUNTS, BENCH_SKIP_IDLE,
 *      BENCH_BASELINE (a git revision: its server is measured too, phase by phase, in the same run),
 *      BENCH_SERVER_NODE_ARGS (extra node flags for the server process), BENCH_OPEN_RATE (the open
 *      loop's rate instead of half the max),
 *      BENCH_SERVER_PROF (a directory: the server's CPU and allocation profiles of the load phases,
 *      the load generator's whole-run CPU profile under load/).
 *
 * Processes: this one only orchestrates; each server runs in bench/server-host.ts and all devices
 * in bench/server-load.ts, each a child with its own event loop, CPU time and heap. Progress goes
 * to stderr; stdout gets a table and, as its last line, one JSON object.
 */
import { type ChildProcess, execFileSync, fork } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import type { HostCommand, HostCpu, HostMemory } from './server-host.ts';
import type { LoadCommand, PhaseResult } from './server-load.ts';

const DEVICES = envInt('BENCH_DEVICES', 100);
/** Closed-loop phases: unanswered sends per device; the best delivered rate is the max. */
const WINDOWS = (process.env.BENCH_WINDOWS ?? '2,8,32')
  .split(',')
  .map(Number)
  .filter((n) => n > 0);
const WARMUP_MS = envInt('BENCH_WARMUP_MS', 1_500);
const MEASURE_MS = envInt('BENCH_MEASURE_MS', 5_000);
const HALF_MS = envInt('BENCH_HALF_MS', 10_000);
/** The open loop's rate instead of half the max (for profiling at a given load). */
const OPEN_RATE = envInt('BENCH_OPEN_RATE', 0);
const IDLE_SOCKETS = envInt('BENCH_IDLE_SOCKETS', 10_000);
const IDLE_ACCOUNTS = envInt('BENCH_IDLE_ACCOUNTS', 100);
const SKIP_IDLE = process.env.BENCH_SKIP_IDLE === '1';
const BASELINE = process.env.BENCH_BASELINE;
const PROFILE_DIR = process.env.BENCH_SERVER_PROF;
/** Extra node flags for the server processes (e.g. GC tuning: --max-semi-space-size=64). */
const SERVER_NODE_ARGS = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean);

function envInt(name: string, fallback: number): number {
  const value = Number(process.env[name]);
  return Number.isFinite(value) && value > 0 ? Math.floor(value) : fallback;
}

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..');
const log = (line: string) => process.stderr.write(`${line}\n`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A child process answering `{id, ...command}` with `{id, value}` or `{id, error}` over IPC. */
class Child<C extends { cmd: string }> {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  readonly ready: Promise<any>;

  constructor(
    readonly name: string,
    readonly process: ChildProcess,
  ) {
    this.ready = new Promise((resolve, reject) => {
      process.once('exit', (code, signal) => {
        const error = new Error(`${name} exited (${code ?? signal})`);
        reject(error);
        for (const w of this.waiting.values()) w.reject(error);
        this.waiting.clear();
      });
      process.on('message', (message: any) => {
        if (message.ready) return resolve(message);
        const w = this.waiting.get(message.id);
        if (!w) return;
        this.waiting.delete(message.id);
        if (message.error) w.reject(new Error(`${name}: ${message.error}`));
        else w.resolve(message.value);
      });
    });
  }

  request<T>(command: C, extra: object = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.process.send({ ...command, ...extra, id });
    });
  }

  exited(): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => this.process.once('exit', () => resolve()));
  }
}

/** Omit over each member of a union. */
type Without<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
type HostRequest = Without<HostCommand, 'id'>;
type LoadRequest = Without<LoadCommand, 'id' | 'url' | 'target'>;

/** One server under test: this working tree ("hush") or the baseline revision. */
interface Subject {
  name: string;
  /** The repository copy its server code comes from. */
  root: string;
  dataDir: string;
  host: Child<HostRequest>;
  url: string;
}

async function startHost(root: string, dataDir: string): Promise<{ host: Child<HostRequest>; url: string }> {
  const child = fork(join(here, 'server-host.ts'), [], {
    execArgv: ['--expose-gc', ...SERVER_NODE_ARGS, '--import', 'tsx'],
    env: { ...process.env, BENCH_DATA_DIR: dataDir, BENCH_SERVER_ROOT: root },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const host = new Child<HostRequest>('server', child);
  const ready = await host.ready;
  if (!ready.gc) throw new Error('server-host started without --expose-gc');
  return { host, url: ready.url };
}

async function startLoad(): Promise<Child<Without<LoadCommand, 'id'>>> {
  const execArgv = ['--import', 'tsx'];
  if (PROFILE_DIR) execArgv.push('--cpu-prof', `--cpu-prof-dir=${join(PROFILE_DIR, 'load')}`);
  const child = fork(join(here, 'server-load.ts'), [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const load = new Child<Without<LoadCommand, 'id'>>('load generator', child);
  await load.ready;
  return load;
}

/**
 * The server package of `revision`, unpacked under scratch/ (ignored by git, biome and vitest)
 * so that its imports resolve to this repository's node_modules.
 */
function checkoutBaseline(revision: string): string {
  const commit = execFileSync('git', ['-C', repo, 'rev-parse', '--short', `${revision}^{commit}`], {
    encoding: 'utf8',
  }).trim();
  const root = join(repo, 'scratch', `bench-server-baseline-${commit}`);
  if (!existsSync(join(root, 'packages/server/src'))) {
    mkdirSync(root, { recursive: true });
    const archive = execFileSync('git', ['-C', repo, 'archive', commit, 'packages/server/src'], {
      maxBuffer: 64 * 1024 * 1024,
    });
    execFileSync('tar', ['-x', '-C', root], { input: archive });
  }
  return root;
}

/** What one durable commit costs on this disk right now (it varies a lot on shared machines). */
function commitProbe(dir: string): { p50: number; p99: number } {
  const db = new Database(join(dir, 'probe.sqlite'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)');
  const insert = db.prepare('INSERT INTO t (b) VALUES (?)');
  const blob = Buffer.alloc(1024, 7);
  const times: number[] = [];
  for (let i = 0; i < 200; i++) {
    const t = performance.now();
    insert.run(blob);
    times.push(performance.now() - t);
  }
  db.close();
  for (const suffix of ['', '-wal', '-shm']) rmSync(join(dir, `probe.sqlite${suffix}`), { force: true });
  times.sort((a, b) => a - b);
  return { p50: times[100] as number, p99: times[198] as number };
}

/** CPU pressure (share of time some runnable task waited for a CPU), if the kernel reports it. */
function cpuPressure(): string {
  try {
    return `${readFileSync('/proc/pressure/cpu', 'utf8').match(/avg60=([0-9.]+)/)?.[1] ?? '?'}%`;
  } catch {
    return 'n/a';
  }
}

function openFileLimit(): number {
  const match = readFileSync('/proc/self/limits', 'utf8').match(/Max open files\s+\d+\s+(\d+|unlimited)/);
  if (!match || match[1] === 'unlimited') return Number.POSITIVE_INFINITY;
  return Number(match[1]);
}

interface Measured {
  subject: string;
  label: string;
  result: PhaseResult;
  /** CPU time ÷ wall time: the server process (all threads), its event-loop thread, the load generator. */
  serverCpu: number;
  serverMainCpu: number;
  loadCpu: number;
  /** p99 of how late each process's event loop ran its timers during the phase (ms). */
  serverLoopDelay: number;
  loadLoopDelay: number;
}

type LoadCpu = NodeJS.CpuUsage & { loopDelayP99: number; loopDelayMax: number };

interface Idle {
  subject: string;
  sockets: number;
  accounts: number;
  before: HostMemory;
  after: HostMemory;
}

async function main(): Promise<void> {
  const started = performance.now();
  const runDir = mkdtempSync(join(tmpdir(), 'hush-bench-server-'));
  log(
    `bench:server: data under ${runDir}; ${cpus().length} cores, load average ${loadavg()[0]?.toFixed(2)}, CPU pressure ${cpuPressure()}`,
  );
  const probe = commitProbe(runDir);
  log(
    `SQLite commit (synchronous = FULL, one 1 KiB row) on this disk: p50 ${fmt(probe.p50 * 1000, 0)} µs, p99 ${fmt(probe.p99 * 1000, 0)} µs`,
  );

  // Each of the two children holds one end of every idle socket.
  const fdLimit = openFileLimit();
  let idleSockets = IDLE_SOCKETS;
  if (fdLimit < idleSockets + 1_000) {
    idleSockets = Math.max(100, fdLimit - 1_000);
    log(`open-file hard limit is ${fdLimit}: opening ${idleSockets} idle sockets instead of ${IDLE_SOCKETS}`);
  }

  const roots: { name: string; root: string }[] = [{ name: 'hush', root: repo }];
  if (BASELINE) roots.unshift({ name: `baseline ${BASELINE}`, root: checkoutBaseline(BASELINE) });
  const subjects: Subject[] = [];
  for (const [i, { name, root }] of roots.entries()) {
    const dataDir = join(runDir, `server-${i}`);
    subjects.push({ name, root, dataDir, ...(await startHost(root, dataDir)) });
  }
  const load = await startLoad();
  const loadRequest = <T>(s: Subject, command: LoadRequest) =>
    load.request<T>(command as Without<LoadCommand, 'id'>, { url: s.url, target: s.name });
  const stopHost = async (s: Subject) => {
    await s.host.request({ cmd: 'stop' }).catch(() => {});
    await s.host.exited();
  };

  try {
    for (const s of subjects) {
      const t = performance.now();
      await loadRequest(s, { cmd: 'register', dataDir: s.dataDir, devices: DEVICES });
      await loadRequest(s, { cmd: 'connect' });
      log(`${s.name}: registered and connected ${DEVICES} devices in ${seconds(t)} s`);
    }

    const measure = async (s: Subject, label: string, command: LoadRequest): Promise<Measured> => {
      const [hostBefore, loadBefore] = await Promise.all([
        s.host.request<HostCpu>({ cmd: 'cpu' }),
        loadRequest<LoadCpu>(s, { cmd: 'cpu' }),
      ]);
      const runStarted = performance.now();
      const result = await loadRequest<PhaseResult>(s, command);
      const wall = (performance.now() - runStarted) / 1000;
      const [hostAfter, loadAfter] = await Promise.all([
        s.host.request<HostCpu>({ cmd: 'cpu' }),
        loadRequest<LoadCpu>(s, { cmd: 'cpu' }),
      ]);
      const queued = await s.host.request<number>({ cmd: 'queue' });
      if (queued !== 0) throw new Error(`${s.name}, ${label}: ${queued} envelopes still stored after every ack`);
      if (result.received !== result.ok) {
        throw new Error(`${s.name}, ${label}: ${result.ok} stored, ${result.received} received`);
      }
      const m: Measured = {
        subject: s.name,
        label,
        result,
        serverCpu: (hostAfter.process - hostBefore.process) / wall,
        serverMainCpu: (hostAfter.main - hostBefore.main) / wall,
        loadCpu: (loadAfter.user - loadBefore.user + loadAfter.system - loadBefore.system) / 1e6 / wall,
        serverLoopDelay: hostAfter.loopDelayP99,
        loadLoopDelay: loadAfter.loopDelayP99,
      };
      log(
        `${s.name.padEnd(10)} ${label.padEnd(22)} ${fmt(result.deliveredPerSecond, 0).padStart(6)} msg/s  p50 ${fmt(result.latency.p50)} ms  p99 ${fmt(result.latency.p99)} ms  server CPU ${pct(m.serverCpu)} (event loop ${pct(m.serverMainCpu)})  load CPU ${pct(m.loadCpu)}  loop delay p99 ${fmt(m.serverLoopDelay)} / ${fmt(m.loadLoopDelay)} ms`,
      );
      return m;
    };

    const candidate = subjects[subjects.length - 1] as Subject;
    if (PROFILE_DIR) await candidate.host.request({ cmd: 'profile-start' });
    const closed: Measured[] = [];
    for (const [i, window] of WINDOWS.entries()) {
      // Alternating order, so that neither subject always runs first after a pause.
      const order = i % 2 === 0 ? subjects : [...subjects].reverse();
      for (const s of order) {
        closed.push(
          await measure(s, `closed, ${window * DEVICES} in flight`, {
            cmd: 'closed',
            window,
            warmupMs: WARMUP_MS,
            measureMs: MEASURE_MS,
          }),
        );
      }
    }
    const best = new Map<string, Measured>();
    for (const m of closed) {
      const b = best.get(m.subject);
      if (!b || m.result.deliveredPerSecond > b.result.deliveredPerSecond) best.set(m.subject, m);
    }
    const half: Measured[] = [];
    for (const s of subjects) {
      const rate = OPEN_RATE || Math.max(1, Math.floor((best.get(s.name) as Measured).result.deliveredPerSecond / 2));
      const m = await measure(s, `open, ${rate}/s${OPEN_RATE ? '' : ' (½ max)'}`, {
        cmd: 'open',
        rate,
        warmupMs: WARMUP_MS,
        measureMs: HALF_MS,
      });
      if (m.result.skipped > 0) log(`warning: ${s.name}: ${m.result.skipped} sends skipped at half load`);
      half.push(m);
    }
    if (PROFILE_DIR) {
      mkdirSync(PROFILE_DIR, { recursive: true });
      const file = join(PROFILE_DIR, `server-${Date.now()}.cpuprofile`);
      log(`server CPU profile of the load phases: ${await candidate.host.request({ cmd: 'profile-stop', file })}`);
    }

    // Idle sockets: register accounts, then measure a freshly started server process on the same
    // data, so that the load phases' heap and allocator state do not blur the delta.
    const idle: Idle[] = [];
    if (!SKIP_IDLE) {
      for (const s of subjects) {
        const accounts = Math.min(IDLE_ACCOUNTS, idleSockets);
        let t = performance.now();
        await loadRequest(s, { cmd: 'idle-register', dataDir: s.dataDir, accounts });
        log(`${s.name}: registered ${accounts} idle accounts in ${seconds(t)} s`);
        await stopHost(s);
        Object.assign(s, await startHost(s.root, s.dataDir));
        // Warm up the upgrade path (JIT, lazily created state), then take the baseline.
        await loadRequest(s, { cmd: 'idle-open', sockets: 200 });
        await loadRequest(s, { cmd: 'idle-close' });
        await sleep(500);
        const before = await s.host.request<HostMemory>({ cmd: 'memory' });
        t = performance.now();
        await loadRequest(s, { cmd: 'idle-open', sockets: idleSockets });
        log(`${s.name}: opened ${idleSockets} authenticated idle sockets in ${seconds(t)} s`);
        await sleep(1_000);
        const after = await s.host.request<HostMemory>({ cmd: 'memory' });
        const open = await s.host.request<number>({ cmd: 'sockets' });
        if (open < idleSockets) throw new Error(`${s.name}: the server holds ${open} sockets, not ${idleSockets}`);
        await loadRequest(s, { cmd: 'idle-close' });
        idle.push({ subject: s.name, sockets: idleSockets, accounts, before, after });
      }
    }

    report(subjects, closed, best, half, idle);
    log(`bench:server took ${seconds(started)} s`);
  } finally {
    // Disconnecting ends a child (it exits on 'disconnect'), which also lets --cpu-prof write.
    if (load.process.connected) load.process.disconnect();
    await Promise.all([load.exited(), ...subjects.map(stopHost)]);
    rmSync(runDir, { recursive: true, force: true });
  }
}

const seconds = (since: number) => ((performance.now() - since) / 1000).toFixed(1);
const fmt = (value: number, digits = 1) => value.toFixed(digits);
const pct = (fraction: number) => `${(fraction * 100).toFixed(0)}%`;
const mib = (bytes: number) => (bytes / 1024 / 1024).toFixed(1);
const round2 = (value: number) => Math.round(value * 100) / 100;

function report(
  subjects: Subject[],
  closed: Measured[],
  best: Map<string, Measured>,
  half: Measured[],
  idle: Idle[],
): void {
  const out = (line: string) => process.stdout.write(`${line}\n`);
  const nameWidth = Math.max(...subjects.map((s) => s.name.length));
  out(`${DEVICES} devices, 1 KiB envelopes, one socket each; latency = send → receipt at the receiver`);
  out(
    [
      'server'.padEnd(nameWidth),
      'phase'.padEnd(26),
      'delivered/s'.padStart(11),
      'p50 ms'.padStart(8),
      'p99 ms'.padStart(8),
      'max ms'.padStart(8),
      '200 p99 ms'.padStart(10),
      'server CPU'.padStart(10),
      'loop CPU'.padStart(9),
      'µs/msg'.padStart(7),
      'load CPU'.padStart(9),
      'lag p99'.padStart(13),
    ].join(' '),
  );
  for (const m of [...closed, ...half]) {
    const r = m.result;
    out(
      [
        m.subject.padEnd(nameWidth),
        (best.get(m.subject) === m ? `${m.label} *` : m.label).padEnd(26),
        fmt(r.deliveredPerSecond, 0).padStart(11),
        fmt(r.latency.p50).padStart(8),
        fmt(r.latency.p99).padStart(8),
        fmt(r.latency.max).padStart(8),
        fmt(r.answer.p99).padStart(10),
        pct(m.serverCpu).padStart(10),
        pct(m.serverMainCpu).padStart(9),
        fmt((m.serverCpu * 1e6) / r.deliveredPerSecond, 0).padStart(7),
        pct(m.loadCpu).padStart(9),
        `${fmt(m.serverLoopDelay, 0)} / ${fmt(m.loadLoopDelay, 0)} ms`.padStart(13),
      ].join(' '),
    );
  }
  out('* the max rate; ½ max is an open loop (sends on a fixed schedule) at half of it');
  out(
    'server CPU: all threads of the server process; loop CPU: its event-loop thread; µs/msg: server CPU per delivery',
  );
  out('lag p99: event-loop delay p99, server / load generator (how late a callback that was due ran)');
  for (const i of idle) {
    const per = (key: keyof HostMemory) => (i.after[key] - i.before[key]) / i.sockets;
    out('');
    out(
      `${i.subject}: ${i.sockets} idle sockets, each authenticated (Basic auth at the upgrade), over ${i.accounts} registered accounts`,
    );
    out(
      `  per socket: RSS ${fmt(per('rss'), 0)} B, JS heap ${fmt(per('heapUsed'), 0)} B, external ${fmt(per('external'), 0)} B (array buffers ${fmt(per('arrayBuffers'), 0)} B)`,
    );
    out(
      `  server RSS ${mib(i.before.rss)} → ${mib(i.after.rss)} MiB, JS heap ${mib(i.before.heapUsed)} → ${mib(i.after.heapUsed)} MiB`,
    );
  }
  const candidate = (subjects[subjects.length - 1] as Subject).name;
  const max = best.get(candidate) as Measured;
  const atHalf = half.find((m) => m.subject === candidate) as Measured;
  const memory = idle.find((i) => i.subject === candidate);
  out(
    JSON.stringify({
      delivered_per_s: Math.round(max.result.deliveredPerSecond),
      p50_ms: round2(max.result.latency.p50),
      p99_ms: round2(max.result.latency.p99),
      p99_ms_at_half_load: round2(atHalf.result.latency.p99),
      bytes_per_idle_socket: memory ? Math.round((memory.after.rss - memory.before.rss) / memory.sockets) : null,
    }),
  );
}

main().catch((error: unknown) => {
  process.stderr.write(`bench:server failed: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
