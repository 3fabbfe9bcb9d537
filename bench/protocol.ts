/**
 * Hush (@hush/protocol, once per crypto provider) against @signalapp/libsignal-client 0.103, in one
 * process and one run. See bench/README.md for what is measured and how to read the output.
 *
 * Run: npm run bench:protocol
 * Env: BENCH_ROUNDS, BENCH_ROUND_MS, BENCH_SLICE_MS, BENCH_WARMUP_MS; BENCH_CASES / BENCH_LIBS to narrow;
 * BENCH_EPOCH=0 skips the SPQR epoch-cost lines.
 *
 * Everything printed before the last line is for humans (progress goes to stderr); the last line
 * of stdout is one JSON object of ratios, Hush ops/s ÷ libsignal ops/s per provider and case.
 */
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import * as Signal from '@signalapp/libsignal-client';
import { jsCrypto } from '../packages/protocol/src/crypto/js.ts';
import { nodeCrypto } from '../packages/protocol/src/crypto/node.ts';
import { webCrypto } from '../packages/protocol/src/crypto/web.ts';
import {
  CiphertextMessageType,
  type CryptoProvider,
  type PreKeyBundle,
  ProtocolAddress,
  SenderKeyDistributionMessage,
  createSenderKeyDistributionMessage,
  groupDecrypt,
  groupEncrypt,
  processPreKeyBundle,
  processSenderKeyDistributionMessage,
  signalDecrypt,
  signalDecryptPreKey,
  signalEncrypt,
} from '../packages/protocol/src/index.ts';
import { ChainDirection } from '../packages/protocol/src/spqr/chain.ts';
import { ChunkDecoder, ChunkEncoder } from '../packages/protocol/src/spqr/erasure.ts';
import { decaps, encaps1, encaps2, generateKeyPair } from '../packages/protocol/src/spqr/incremental-mlkem768.ts';
import { SpqrMessageType, decodeSpqrMessage } from '../packages/protocol/src/spqr/message.ts';
import { type SpqrState, initSpqr, spqrRecv, spqrSend } from '../packages/protocol/src/spqr/ratchet.ts';
import { HushPeer, LibsignalPeer } from '../packages/protocol/test/support/peers.ts';

// ---- configuration ----

const ROUNDS = envInt('BENCH_ROUNDS', 7);
/** Timed milliseconds per round, per case, per library: ROUNDS × ROUND_MS ≈ 2 s by default. */
const ROUND_MS = envInt('BENCH_ROUND_MS', 300);
const WARMUP_MS = envInt('BENCH_WARMUP_MS', 300);
/** Libraries take turns in slices of this many timed milliseconds within a round. */
const SLICE_MS = envInt('BENCH_SLICE_MS', 50);
/**
 * BENCH_CLOCK=cpu times ops by this process's CPU time (all its threads) instead of wall time: on a
 * machine shared with other work, waiting for a core then no longer counts as our time.
 */
const CPU_CLOCK = process.env.BENCH_CLOCK === 'cpu';
const clock = CPU_CLOCK
  ? () => {
      const { user, system } = process.cpuUsage();
      return (user + system) / 1000;
    }
  : () => performance.now();

const SHORT_MESSAGE = bytesOf('hello from the session-setup bench');
const MESSAGE_1K = new Uint8Array(1024).map((_, i) => (i * 131 + 7) & 0xff);
const GROUP_MESSAGE = new Uint8Array(100).map((_, i) => (i * 37 + 11) & 0xff);

const ALL_CASES = ['session_setup', 'encrypt_decrypt_1k', 'sender_key'] as const;
type CaseName = (typeof ALL_CASES)[number];
/** BENCH_CASES=a,b and BENCH_LIBS=libsignal,node,... narrow the run (for profiling); default: all. */
const CASES = only(ALL_CASES, 'BENCH_CASES');

const PROVIDERS: CryptoProvider[] = [nodeCrypto, webCrypto, jsCrypto];
type SubjectName = 'libsignal' | 'node' | 'web' | 'js';
const SUBJECTS = only(['libsignal', 'node', 'web', 'js'] as const satisfies readonly SubjectName[], 'BENCH_LIBS');

function only<T extends string>(all: readonly T[], variable: string): T[] {
  const wanted = process.env[variable]?.split(',').map((s) => s.trim());
  return wanted ? all.filter((x) => wanted.includes(x)) : [...all];
}

function envInt(name: string, fallback: number): number {
  const value = Number(process.env[name]);
  return Number.isFinite(value) && value > 0 ? Math.floor(value) : fallback;
}

function bytesOf(text: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(text) as Uint8Array<ArrayBuffer>;
}

/** libsignal wants Uint8Array<ArrayBuffer>; ours already are, this only satisfies the type. */
function ab(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return bytes as Uint8Array<ArrayBuffer>;
}

function check(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (!Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength).equals(expected)) {
    throw new Error(`${what}: decrypted plaintext differs from the input`);
  }
}

function checkType(actual: number, expected: CiphertextMessageType, what: string): void {
  if (actual !== expected) throw new Error(`${what}: message type ${actual}, expected ${expected}`);
}

// ---- libsignal stores not in peers.ts ----

class SignalSenderKeyStore extends Signal.SenderKeyStore {
  private readonly records = new Map<string, Uint8Array<ArrayBuffer>>();
  async saveSenderKey(sender: Signal.ProtocolAddress, distributionId: string, record: Signal.SenderKeyRecord) {
    this.records.set(`${sender.toString()}::${distributionId}`, record.serialize());
  }
  async getSenderKey(sender: Signal.ProtocolAddress, distributionId: string) {
    const bytes = this.records.get(`${sender.toString()}::${distributionId}`);
    return bytes ? Signal.SenderKeyRecord.deserialize(bytes) : null;
  }
}

function signalBundle(b: PreKeyBundle): Signal.PreKeyBundle {
  return Signal.PreKeyBundle.new(
    b.registrationId,
    b.deviceId,
    b.preKeyId ?? null,
    b.preKey ? Signal.PublicKey.deserialize(ab(b.preKey.serialize())) : null,
    b.signedPreKeyId,
    Signal.PublicKey.deserialize(ab(b.signedPreKey.serialize())),
    ab(b.signedPreKeySignature),
    Signal.PublicKey.deserialize(ab(b.identityKey.serialize())),
    b.kyberPreKeyId,
    Signal.KEMPublicKey.deserialize(ab(b.kyberPreKey.serialize())),
    ab(b.kyberPreKeySignature),
  );
}

// ---- the runners: one per (case, subject) ----

/**
 * A runner performs one checked operation per `op()`. `prepare(n)` (untimed) makes sure at least
 * n inputs are queued for cases that consume one (session_setup consumes a fresh bundle per op).
 * `reset()` (untimed) starts from fresh peers, so that each measurement starts from the same state.
 */
interface Runner {
  prepare?(n: number): Promise<void>;
  queued?(): number;
  reset(): Promise<void>;
  op(): Promise<void>;
}

function hushAddress(peer: HushPeer): ProtocolAddress {
  return new ProtocolAddress(peer.name, peer.deviceId);
}

interface HushSetupInput {
  initiator: HushPeer;
  responder: HushPeer;
  initiatorAddress: ProtocolAddress;
  responderAddress: ProtocolAddress;
  bundle: PreKeyBundle;
}

interface SignalSetupInput {
  initiator: LibsignalPeer;
  responder: LibsignalPeer;
  initiatorAddress: Signal.ProtocolAddress;
  responderAddress: Signal.ProtocolAddress;
  bundle: Signal.PreKeyBundle;
}

function hushSessionSetup(c: CryptoProvider): Runner {
  const queue: HushSetupInput[] = [];
  return {
    async prepare(n) {
      while (queue.length < n) {
        const initiator = await HushPeer.create(c);
        const responder = await HushPeer.create(c);
        const bundle = await responder.bundle();
        queue.push({
          initiator,
          responder,
          initiatorAddress: hushAddress(initiator),
          responderAddress: hushAddress(responder),
          bundle,
        });
      }
    },
    queued: () => queue.length,
    async reset() {},
    async op() {
      const x = queue.shift();
      if (!x) throw new Error('session_setup: no prepared bundle');
      await processPreKeyBundle(c, x.bundle, x.responderAddress, x.initiator.stores);
      const m = await signalEncrypt(c, SHORT_MESSAGE, x.responderAddress, x.initiator.stores);
      checkType(m.type, CiphertextMessageType.PreKey, 'session_setup');
      const plaintext = await signalDecryptPreKey(c, m.serialized, x.initiatorAddress, x.responder.stores);
      check(plaintext, SHORT_MESSAGE, 'session_setup');
    },
  };
}

function signalSessionSetup(): Runner {
  const queue: SignalSetupInput[] = [];
  return {
    async prepare(n) {
      while (queue.length < n) {
        const initiator = new LibsignalPeer();
        const responder = new LibsignalPeer();
        const bundle = signalBundle(await responder.bundle());
        queue.push({
          initiator,
          responder,
          initiatorAddress: initiator.address,
          responderAddress: responder.address,
          bundle,
        });
      }
    },
    queued: () => queue.length,
    async reset() {},
    async op() {
      const x = queue.shift();
      if (!x) throw new Error('session_setup: no prepared bundle');
      const { initiator: a, responder: b } = x;
      await Signal.processPreKeyBundle(
        x.bundle,
        x.responderAddress,
        x.initiatorAddress,
        a.sessionStore,
        a.identityStore,
      );
      const m = await Signal.signalEncrypt(
        ab(SHORT_MESSAGE),
        x.responderAddress,
        x.initiatorAddress,
        a.sessionStore,
        a.identityStore,
      );
      checkType(m.type(), CiphertextMessageType.PreKey, 'session_setup');
      const plaintext = await Signal.signalDecryptPreKey(
        Signal.PreKeySignalMessage.deserialize(m.serialize()),
        x.initiatorAddress,
        x.responderAddress,
        b.sessionStore,
        b.identityStore,
        b.preKeyStore,
        b.signedPreKeyStore,
        b.kyberPreKeyStore,
      );
      check(plaintext, SHORT_MESSAGE, 'session_setup');
    },
  };
}

/** Alice and Bob with an acknowledged session (Bob has replied), so Alice sends plain SignalMessages. */
async function hushEstablished(c: CryptoProvider) {
  const alice = await HushPeer.create(c);
  const bob = await HushPeer.create(c);
  await alice.startSession(bob);
  const first = await alice.encrypt(bob, SHORT_MESSAGE);
  check(await bob.decrypt(alice, first), SHORT_MESSAGE, 'setup');
  const reply = await bob.encrypt(alice, SHORT_MESSAGE);
  checkType(reply.type, CiphertextMessageType.Whisper, 'setup reply');
  check(await alice.decrypt(bob, reply), SHORT_MESSAGE, 'setup');
  return { alice, bob, aliceAddress: hushAddress(alice), bobAddress: hushAddress(bob) };
}

async function signalEstablished() {
  const alice = new LibsignalPeer();
  const bob = new LibsignalPeer();
  await alice.startSession(bob);
  const first = await alice.encrypt(bob, SHORT_MESSAGE);
  check(await bob.decrypt(alice, first), SHORT_MESSAGE, 'setup');
  const reply = await bob.encrypt(alice, SHORT_MESSAGE);
  checkType(reply.type, CiphertextMessageType.Whisper, 'setup reply');
  check(await alice.decrypt(bob, reply), SHORT_MESSAGE, 'setup');
  return { alice, bob, aliceAddress: alice.address, bobAddress: bob.address };
}

function hushEncryptDecrypt(c: CryptoProvider): Runner {
  let s: Awaited<ReturnType<typeof hushEstablished>> | undefined;
  return {
    async reset() {
      s = await hushEstablished(c);
    },
    async op() {
      if (!s) throw new Error('not set up');
      const m = await signalEncrypt(c, MESSAGE_1K, s.bobAddress, s.alice.stores);
      checkType(m.type, CiphertextMessageType.Whisper, 'encrypt_decrypt_1k');
      const plaintext = await signalDecrypt(c, m.serialized, s.aliceAddress, s.bob.stores);
      check(plaintext, MESSAGE_1K, 'encrypt_decrypt_1k');
    },
  };
}

function signalEncryptDecrypt(): Runner {
  let s: Awaited<ReturnType<typeof signalEstablished>> | undefined;
  return {
    async reset() {
      s = await signalEstablished();
    },
    async op() {
      if (!s) throw new Error('not set up');
      const { alice, bob } = s;
      const m = await Signal.signalEncrypt(
        ab(MESSAGE_1K),
        s.bobAddress,
        s.aliceAddress,
        alice.sessionStore,
        alice.identityStore,
      );
      checkType(m.type(), CiphertextMessageType.Whisper, 'encrypt_decrypt_1k');
      const plaintext = await Signal.signalDecrypt(
        Signal.SignalMessage.deserialize(m.serialize()),
        s.aliceAddress,
        s.bobAddress,
        bob.sessionStore,
        bob.identityStore,
      );
      check(plaintext, MESSAGE_1K, 'encrypt_decrypt_1k');
    },
  };
}

function hushSenderKey(c: CryptoProvider): Runner {
  let s: { alice: HushPeer; bob: HushPeer; aliceAddress: ProtocolAddress; distributionId: string } | undefined;
  return {
    async reset() {
      const alice = await HushPeer.create(c);
      const bob = await HushPeer.create(c);
      const aliceAddress = hushAddress(alice);
      const distributionId = randomUUID();
      const skdm = await createSenderKeyDistributionMessage(c, aliceAddress, distributionId, alice.stores.senderKeys);
      const received = SenderKeyDistributionMessage.deserialize(skdm.serialize());
      await processSenderKeyDistributionMessage(c, aliceAddress, received, bob.stores.senderKeys);
      s = { alice, bob, aliceAddress, distributionId };
    },
    async op() {
      if (!s) throw new Error('not set up');
      const ciphertext = await groupEncrypt(
        c,
        s.aliceAddress,
        s.distributionId,
        s.alice.stores.senderKeys,
        GROUP_MESSAGE,
      );
      const plaintext = await groupDecrypt(c, s.aliceAddress, s.bob.stores.senderKeys, ciphertext);
      check(plaintext, GROUP_MESSAGE, 'sender_key');
    },
  };
}

function signalSenderKey(): Runner {
  let s:
    | {
        aliceStore: SignalSenderKeyStore;
        bobStore: SignalSenderKeyStore;
        aliceAddress: Signal.ProtocolAddress;
        distributionId: string;
      }
    | undefined;
  return {
    async reset() {
      const alice = new LibsignalPeer();
      const aliceStore = new SignalSenderKeyStore();
      const bobStore = new SignalSenderKeyStore();
      const aliceAddress = alice.address;
      const distributionId = randomUUID();
      const skdm = await Signal.SenderKeyDistributionMessage.create(aliceAddress, distributionId, aliceStore);
      const received = Signal.SenderKeyDistributionMessage.deserialize(skdm.serialize());
      await Signal.processSenderKeyDistributionMessage(aliceAddress, received, bobStore);
      s = { aliceStore, bobStore, aliceAddress, distributionId };
    },
    async op() {
      if (!s) throw new Error('not set up');
      const m = await Signal.groupEncrypt(s.aliceAddress, s.distributionId, s.aliceStore, ab(GROUP_MESSAGE));
      checkType(m.type(), CiphertextMessageType.SenderKey, 'sender_key');
      const plaintext = await Signal.groupDecrypt(s.aliceAddress, s.bobStore, m.serialize());
      check(plaintext, GROUP_MESSAGE, 'sender_key');
    },
  };
}

function runnerFor(caseName: CaseName, subject: SubjectName): Runner {
  const provider = PROVIDERS.find((p) => p.name === subject);
  switch (caseName) {
    case 'session_setup':
      return provider ? hushSessionSetup(provider) : signalSessionSetup();
    case 'encrypt_decrypt_1k':
      return provider ? hushEncryptDecrypt(provider) : signalEncryptDecrypt();
    case 'sender_key':
      return provider ? hushSenderKey(provider) : signalSenderKey();
  }
}

// ---- measurement ----

/**
 * Runs ops for `budgetMs` of timed time. Only op() calls are timed; for cases that consume
 * prepared inputs, the clock stops while the next batch is prepared (sized from `expectedRate`).
 */
async function measure(runner: Runner, budgetMs: number, expectedRate: number): Promise<{ ops: number; ms: number }> {
  let ops = 0;
  let elapsed = 0;
  while (elapsed < budgetMs) {
    let batch = Number.POSITIVE_INFINITY;
    if (runner.prepare && runner.queued) {
      const wanted = Math.ceil((expectedRate * (budgetMs - elapsed)) / 1000 + 1);
      await runner.prepare(Math.min(256, Math.max(4, wanted)));
      batch = runner.queued();
    }
    const start = clock();
    let now = start;
    let done = 0;
    while (done < batch && elapsed + (now - start) < budgetMs) {
      await runner.op();
      done++;
      now = clock();
    }
    elapsed += now - start;
    ops += done;
  }
  return { ops, ms: elapsed };
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
};

const log = (line: string) => process.stderr.write(`${line}\n`);

async function main() {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  console.log(
    `Hush vs libsignal-client ${libsignalVersion()} | node ${process.version} | ${cpus().length}× ${cpu} | ` +
      `${ROUNDS} rounds × ${ROUND_MS} ms (in ${SLICE_MS} ms turns) per case per library, warm-up ${WARMUP_MS} ms, ` +
      `${CPU_CLOCK ? 'CPU' : 'wall'} clock | ` +
      `load average ${loadavg()[0]?.toFixed(2)}`,
  );
  const t0 = performance.now();
  const rates = new Map<string, number[]>();

  for (const caseName of CASES) {
    const runners = new Map(SUBJECTS.map((s) => [s, runnerFor(caseName, s)] as const));
    const expected = new Map<SubjectName, number>();
    for (const subject of SUBJECTS) {
      // Warm-up (JIT, lazy native init); its rate sizes the prepared batches.
      const runner = runners.get(subject) as Runner;
      await runner.reset();
      const w = await measure(runner, WARMUP_MS, 200);
      expected.set(subject, (w.ops / w.ms) * 1000);
      log(`  warm-up ${caseName} ${subject}: ${fmt((w.ops / w.ms) * 1000)} ops/s`);
    }
    for (let round = 0; round < ROUNDS; round++) {
      // Each round gives every library ROUND_MS of timed work, in SLICE_MS slices taken in turn
      // (rotating who goes first), so a burst of outside load lands on all of them alike.
      const totals = new Map(SUBJECTS.map((s) => [s, { ops: 0, ms: 0 }] as const));
      for (const subject of SUBJECTS) await (runners.get(subject) as Runner).reset();
      const slices = Math.max(1, Math.round(ROUND_MS / SLICE_MS));
      for (let slice = 0; slice < slices; slice++) {
        const shift = round * slices + slice;
        for (let i = 0; i < SUBJECTS.length; i++) {
          const subject = SUBJECTS[(i + shift) % SUBJECTS.length] as SubjectName;
          const r = await measure(runners.get(subject) as Runner, ROUND_MS / slices, expected.get(subject) as number);
          const total = totals.get(subject) as { ops: number; ms: number };
          total.ops += r.ops;
          total.ms += r.ms;
        }
      }
      const line: string[] = [];
      for (const subject of SUBJECTS) {
        const total = totals.get(subject) as { ops: number; ms: number };
        const rate = (total.ops / total.ms) * 1000;
        const key = `${caseName}/${subject}`;
        rates.set(key, [...(rates.get(key) ?? []), rate]);
        line.push(`${subject} ${fmt(rate)}`);
      }
      log(`  ${caseName} round ${round + 1}/${ROUNDS}: ${line.join(', ')}`);
    }
  }

  // ---- report ----
  const table: string[][] = [['case', 'library', 'ops/s (median)', 'µs/op', 'min–max ops/s', '× libsignal']];
  const ratios: Record<string, Record<string, number | null>> = {};
  for (const caseName of CASES) {
    const base = median(rates.get(`${caseName}/libsignal`) ?? []);
    for (const subject of SUBJECTS) {
      const values = rates.get(`${caseName}/${subject}`) ?? [];
      const m = median(values);
      const ratio = m / base; // NaN when libsignal was left out (BENCH_LIBS)
      if (subject !== 'libsignal') {
        ratios[subject] ??= {};
        (ratios[subject] as Record<string, number | null>)[caseName] = Number.isFinite(ratio)
          ? Math.round(ratio * 100) / 100
          : null;
      }
      table.push([
        caseName,
        subject === 'libsignal' ? 'libsignal 0.103' : `hush/${subject}`,
        fmt(m),
        (1e6 / m).toFixed(1),
        `${fmt(Math.min(...values))}–${fmt(Math.max(...values))}`,
        subject === 'libsignal' ? '1.00' : ratio.toFixed(2),
      ]);
    }
  }
  console.log();
  console.log(formatTable(table));
  console.log();
  if (process.env.BENCH_EPOCH !== '0') {
    console.log();
    console.log(await epochReport());
  }
  console.log();
  console.log(`total ${((performance.now() - t0) / 1000).toFixed(1)} s, load average now ${loadavg()[0]?.toFixed(2)}`);
  console.log(JSON.stringify(ratios));
}

// ---- the cost of an SPQR epoch ----

const EPOCHS_MEASURED = 5;

interface EpochCost {
  messages: number;
  /** Bytes of SignalMessage field 5, both directions. */
  bytes: number;
  /** Of those, messages that carried a chunk. */
  chunks: number;
  ms: number;
}

/**
 * Two Hush SPQR ratchets (braid and chain, no Double Ratchet) in ping-pong, the pace at which
 * epochs are shortest: the median over EPOCHS_MEASURED steady-state epochs (epoch 1 is warm-up) of
 * the messages, field-5 bytes and send + receive time per epoch, both sides together. The clock is
 * read only when the epoch label changes, so timing adds nothing per message.
 */
async function spqrPingPong(c: CryptoProvider): Promise<EpochCost> {
  const authKey = c.randomBytes(32);
  const sides: SpqrState[] = [
    await initSpqr(c, authKey, ChainDirection.A2B),
    await initSpqr(c, authKey, ChainDirection.B2A),
  ];
  const costs: EpochCost[] = [];
  let cost: EpochCost = { messages: 0, bytes: 0, chunks: 0, ms: 0 };
  let label = 1;
  let started = clock();
  for (let turn = 0; costs.length <= EPOCHS_MEASURED; turn++) {
    const from = turn % 2;
    const sent = await spqrSend(c, sides[from] as SpqrState);
    const message = decodeSpqrMessage(sent.message);
    if (message.epoch !== label) {
      // The first message of the next epoch: close the last one (its time ends with this send's start).
      const now = clock();
      cost.ms = now - started;
      costs.push(cost);
      cost = { messages: 0, bytes: 0, chunks: 0, ms: 0 };
      label = message.epoch;
      started = now;
    }
    sides[from] = sent.state;
    sides[1 - from] = (await spqrRecv(c, sides[1 - from] as SpqrState, sent.message)).state;
    cost.messages++;
    cost.bytes += sent.message.length;
    if (message.chunk) cost.chunks++;
  }
  const steady = costs.slice(1);
  const pick = (key: keyof EpochCost) => median(steady.map((x) => x[key]));
  return { messages: pick('messages'), bytes: pick('bytes'), chunks: pick('chunks'), ms: pick('ms') };
}

/** Send + receive time per message when the braid has nothing to do (one-way traffic: chain keys only). */
async function spqrChainOnly(c: CryptoProvider, messages: number): Promise<number> {
  const authKey = c.randomBytes(32);
  let sender = await initSpqr(c, authKey, ChainDirection.B2A); // the responder sends None until it hears a header
  let receiver = await initSpqr(c, authKey, ChainDirection.A2B);
  const start = clock();
  for (let i = 0; i < messages; i++) {
    const sent = await spqrSend(c, sender);
    if (decodeSpqrMessage(sent.message).type !== SpqrMessageType.None) throw new Error('epoch cost: braid moved');
    receiver = (await spqrRecv(c, receiver, sent.message)).state;
    sender = sent.state;
  }
  return (clock() - start) / messages;
}

/** Median µs of `op` over `n` runs. */
function timeOp(n: number, op: () => void): number {
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const start = clock();
    op();
    samples.push((clock() - start) * 1000);
  }
  return median(samples);
}

/** The ML-KEM-768 and erasure-code work of one epoch, piece by piece (provider-independent: @noble). */
function epochOps(): Record<string, number> {
  const keys = generateKeyPair(nodeCrypto.randomBytes(64));
  const m = nodeCrypto.randomBytes(32);
  const { ct1 } = encaps1(keys.header, m);
  const ct2 = encaps2(keys.header, keys.ekVector, m);
  // Every chunked value of an epoch (Hdr 96 B, ek 1152 B, ct1 960 B, ct2 160 B), sent and decoded
  // from its systematic chunks, plus a header decoded from parity chunks only.
  const values = [96, 1152, 960, 160].map((length) => nodeCrypto.randomBytes(length));
  const n = CPU_CLOCK ? 30 : 50;
  return {
    keygen: timeOp(n, () => generateKeyPair(nodeCrypto.randomBytes(64))),
    encaps1: timeOp(n, () => encaps1(keys.header, m)),
    encaps2: timeOp(n, () => encaps2(keys.header, keys.ekVector, m)),
    decaps: timeOp(n, () => decaps(keys.dk, ct1, ct2)),
    erasure: timeOp(n, () => {
      for (const value of values) {
        const encoder = new ChunkEncoder(value);
        const decoder = new ChunkDecoder(value.length);
        for (let i = 0; i < value.length / 32; i++) decoder.add({ index: i, data: encoder.chunk(i) });
      }
    }),
    'parity Hdr': timeOp(n, () => {
      const encoder = new ChunkEncoder(values[0] as Uint8Array);
      const decoder = new ChunkDecoder(96);
      for (let i = 3; i < 6; i++) decoder.add({ index: i, data: encoder.chunk(i) });
    }),
  };
}

async function epochReport(): Promise<string> {
  const lines: string[] = [];
  const hushProviders = PROVIDERS.filter((p) => SUBJECTS.includes(p.name as SubjectName));
  // Warm every provider up first, then measure in interleaved repetitions and take medians, so that
  // JIT and the garbage the cases above left behind do not land on one provider.
  for (const c of hushProviders) await spqrPingPong(c);
  const runs = new Map(hushProviders.map((c) => [c.name, { epochs: [] as EpochCost[], chain: [] as number[] }]));
  for (let rep = 0; rep < 3; rep++) {
    for (const c of hushProviders) {
      const run = runs.get(c.name) as { epochs: EpochCost[]; chain: number[] };
      run.epochs.push(await spqrPingPong(c));
      run.chain.push(await spqrChainOnly(c, 200));
    }
  }
  for (const c of hushProviders) {
    const run = runs.get(c.name) as { epochs: EpochCost[]; chain: number[] };
    const epoch = run.epochs[0] as EpochCost;
    const ms = median(run.epochs.map((e) => e.ms));
    const chainOnly = median(run.chain);
    const braidMs = ms - chainOnly * epoch.messages;
    log(`  epoch cost ${c.name}: ${run.epochs.map((e) => e.ms.toFixed(2)).join(', ')} ms per epoch`);
    if (lines.length === 0) {
      const plain = epoch.messages * 4;
      lines.push(
        `SPQR epoch (Hush ↔ Hush ping-pong, steady state, both sides): ${epoch.messages} messages, ${epoch.chunks} with a ` +
          `32-byte chunk; ${fmt(epoch.bytes)} B of field 5 on the wire (${fmt(plain)} B if every message were a bare ` +
          `4-byte None: +${fmt(epoch.bytes - plain)} B per epoch, +${((epoch.bytes - plain) / epoch.messages).toFixed(1)} B per message)`,
      );
    }
    lines.push(
      `SPQR epoch CPU, hush/${c.name}: ${ms.toFixed(2)} ms per epoch (send + receive, both sides), ` +
        `of which ${braidMs.toFixed(2)} ms above the chain alone (${(chainOnly * 1000).toFixed(0)} µs per message)`,
    );
  }
  const ops = epochOps();
  lines.push(
    `SPQR epoch pieces (µs; keygen 3× per epoch on the send_ek side, the rest once): ${Object.entries(ops)
      .map(([name, us]) => `${name} ${us.toFixed(0)}`)
      .join(', ')}`,
  );
  return lines.join('\n');
}

function fmt(rate: number): string {
  return rate >= 100 ? Math.round(rate).toLocaleString('en-US') : rate.toFixed(1);
}

function formatTable(rows: string[][]): string {
  const widths = rows[0]?.map((_, col) => Math.max(...rows.map((r) => (r[col] ?? '').length))) ?? [];
  const numeric = new Set([2, 3, 4, 5]);
  const render = (r: string[]) =>
    r
      .map((cell, col) => (numeric.has(col) ? cell.padStart(widths[col] ?? 0) : cell.padEnd(widths[col] ?? 0)))
      .join('  ');
  const [header, ...body] = rows;
  const lines = [render(header ?? []), widths.map((w) => '-'.repeat(w)).join('  ')];
  let previousCase = body[0]?.[0];
  for (const r of body) {
    if (r[0] !== previousCase) lines.push('');
    previousCase = r[0];
    lines.push(render(r));
  }
  return lines.join('\n');
}

function libsignalVersion(): string {
  const pkg = createRequire(import.meta.url)('@signalapp/libsignal-client/package.json') as { version: string };
  return pkg.version;
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
