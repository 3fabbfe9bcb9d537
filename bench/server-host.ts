/**
 * The server side of `npm run bench:server`: the real standalone server (`startServer(loadConfig())`,
 * SQLite with synchronous = FULL, WebSocket delivery) in a child process of its own, so that its
 * CPU time and memory are its own. The orchestrator (bench/server.ts) talks to it over the IPC
 * channel; see `HostCommand` for what it can ask.
 *
 * Started as `node --expose-gc --import tsx bench/server-host.ts` with BENCH_DATA_DIR set, and
 * BENCH_SERVER_ROOT for another copy of the repository (the baseline of a comparison; default: this one).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join, resolve } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Writable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import type * as Config from '../packages/server/src/standalone/config.ts';
import type * as Server from '../packages/server/src/standalone/server.ts';

export type HostCommand =
  | { id: number; cmd: 'memory' }
  | { id: number; cmd: 'cpu' }
  | { id: number; cmd: 'queue' }
  | { id: number; cmd: 'sockets' }
  | { id: number; cmd: 'profile-start' }
  | { id: number; cmd: 'profile-stop'; file: string }
  | { id: number; cmd: 'stop' };

/**
 * CPU seconds so far: the whole process, and its main thread (the event loop) alone; and the
 * event loop's delay (ms) since the last `cpu` command: how late timers ran, p99 and max.
 */
export interface HostCpu {
  process: number;
  main: number;
  loopDelayP99: number;
  loopDelayMax: number;
}

export interface HostMemory {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
}

const dataDir = process.env.BENCH_DATA_DIR;
if (!dataDir || !process.send) throw new Error('server-host runs as a child of bench/server.ts');

const root = resolve(process.env.BENCH_SERVER_ROOT ?? join(import.meta.dirname, '..'));
const standalone = (file: string) => pathToFileURL(join(root, 'packages/server/src/standalone', file)).href;
const { loadConfig } = (await import(standalone('config.ts'))) as typeof Config;
const { startServer } = (await import(standalone('server.ts'))) as typeof Server;

const discard = new Writable({ write: (_chunk, _encoding, done) => done() });
const server = await startServer(
  loadConfig({
    HUSH_HOST: '127.0.0.1',
    HUSH_PORT: '0',
    HUSH_DATA_DIR: dataDir,
    // Socket requests are never access-logged; this keeps registration's HTTP lines off the disk.
    HUSH_LOG_LEVEL: 'warn',
    HUSH_VERIFY_RESEND_COOLDOWN_SECONDS: '0',
    HUSH_VERIFY_PER_NUMBER_PER_HOUR: '1000',
    HUSH_VERIFY_PER_CLIENT_PER_HOUR: '1000000000',
  }),
  { logDestination: discard, devSmsOutput: discard },
);

const gc = (globalThis as { gc?: () => void }).gc;

function memory(): HostMemory {
  // Twice: the first full GC can leave work (weak callbacks, finalizers) for the second.
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  return {
    rss: m.rss,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
  };
}

process.on('message', (message: HostCommand) => {
  const reply = (value: unknown) => process.send?.({ id: message.id, value });
  switch (message.cmd) {
    case 'memory':
      return reply(memory());
    case 'cpu':
      return reply(cpu());
    case 'queue':
      return server.storage.countAllEnvelopes(Date.now()).then(reply);
    case 'sockets':
      return reply(openSockets());
    case 'profile-start':
      return profiler('Profiler.enable')
        .then(() => profiler('Profiler.setSamplingInterval', { interval: 200 }))
        .then(() => profiler('Profiler.start'))
        .then(() =>
          // Every allocation, also of objects already collected: where the garbage comes from.
          profiler('HeapProfiler.startSampling', {
            samplingInterval: 16_384,
            includeObjectsCollectedByMajorGC: true,
            includeObjectsCollectedByMinorGC: true,
          }),
        )
        .then(reply);
    case 'profile-stop':
      return profiler('Profiler.stop').then(async (result) => {
        writeFileSync(message.file, JSON.stringify((result as { profile: unknown }).profile));
        const heap = (await profiler('HeapProfiler.stopSampling')) as { profile: unknown };
        writeFileSync(message.file.replace(/\.cpuprofile$/, '.heapprofile'), JSON.stringify(heap.profile));
        reply(message.file);
      });
    case 'stop':
      return server.close().then(() => {
        reply(true);
        process.disconnect();
      });
  }
});

const loopDelay = monitorEventLoopDelay({ resolution: 1 });
loopDelay.enable();

function cpu(): HostCpu {
  const usage = process.cpuUsage();
  const loopDelayP99 = loopDelay.percentile(99) / 1e6;
  const loopDelayMax = loopDelay.max / 1e6;
  loopDelay.reset();
  // utime and stime of the main thread (its tid is the pid), in clock ticks of 10 ms.
  const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return {
    process: (usage.user + usage.system) / 1e6,
    main: (Number(fields[11]) + Number(fields[12])) / 100,
    loopDelayP99,
    loopDelayMax,
  };
}

/** The main thread's CPU profile of just the measured phases (not startup or registration). */
const session = new Session();
session.connect();
function profiler(method: string, params: object = {}): Promise<unknown> {
  return new Promise((resolve, reject) =>
    session.post(method, params, (error, result) => (error ? reject(error) : resolve(result))),
  );
}

/** Open TCP handles in this process (the listening socket included), from Node's resource list. */
function openSockets(): number {
  const resources =
    (process as unknown as { getActiveResourcesInfo?: () => string[] }).getActiveResourcesInfo?.() ?? [];
  return resources.filter((r) => r === 'TCPSocketWrap' || r === 'TCPServerWrap').length;
}

// The orchestrator is gone (killed, crashed): do not outlive it.
process.once('disconnect', () => process.exit(0));
process.send({ ready: true, url: server.url, gc: gc !== undefined });
