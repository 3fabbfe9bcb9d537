/**
 * Client tests run against the real standalone server (SQLite, WebSocket) on a loopback port, and
 * each client keeps its own encrypted SQLite store in a temporary directory.
 */
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { startDynamoDbLocal, startServerlessLocal } from '@hush/server/aws-local';
import { type RunningServer, loadConfig, readLatestDevCode, startServer } from '@hush/server/standalone';
import type { ClientEvent, HushClient, KeyValueStore } from '../../src/index.ts';
import { openNodeClient } from '../../src/node.ts';

export interface TestServer extends RunningServer {
  dataDir: string;
  /** Everything the server stores: the files under its data directory (SQLite, WAL, attachments). */
  storedBytes(): Promise<Uint8Array>;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(join(dir, e.name)) : [join(dir, e.name)],
  );
}

/** `port` 0 (the default) picks a free port; pass a fixed one to restart a server at the same URL. */
export async function startTestServer(
  dataDir = mkdtempSync(join(tmpdir(), 'hush-client-server-')),
  port = 0,
): Promise<TestServer> {
  const config = loadConfig({
    HUSH_PORT: String(port),
    HUSH_DATA_DIR: dataDir,
    HUSH_LOG_LEVEL: 'silent',
    HUSH_VERIFY_RESEND_COOLDOWN_SECONDS: '0',
    HUSH_VERIFY_PER_NUMBER_PER_HOUR: '1000',
    HUSH_VERIFY_PER_CLIENT_PER_HOUR: '100000',
    // keys-and-trust drains a target's one-time keys on purpose, with ~100 fetches from one account.
    HUSH_KEY_FETCHES_PER_TARGET_PER_10_MINUTES: '1000',
  });
  const server = await startServer(config, { devSmsOutput: new PassThrough() });
  return Object.assign(server, {
    dataDir,
    storedBytes: async () => Buffer.concat(filesUnder(dataDir).map((file) => readFileSync(file))),
  });
}

/** What the tests need of a deployment: its base URL and the directory of its dev SMS log. */
export interface TestTarget {
  url: string;
  dataDir: string;
  /** Serverless: the WebSocket API's own URL (ws://…/{stage}), as AWS gives it. */
  socketUrl?: string;
  /** Everything the deployment stores (database files or tables, attachment blobs), for scans. */
  storedBytes(): Promise<Uint8Array>;
  close(): Promise<void>;
}

/**
 * The serverless deployment run locally (@hush/server/aws-local): the Lambda handlers behind a
 * local API Gateway, on a DynamoDB Local of its own (Java 17) and s3rver, with the same limits.
 */
export async function startServerlessTestServer(): Promise<TestTarget> {
  const dynamo = await startDynamoDbLocal();
  const dataDir = mkdtempSync(join(tmpdir(), 'hush-client-serverless-'));
  try {
    const deployment = await startServerlessLocal({
      dynamoEndpoint: dynamo.endpoint,
      dataDir,
      ttl: false,
      env: {
        HUSH_LOG_LEVEL: 'silent',
        HUSH_VERIFY_RESEND_COOLDOWN_SECONDS: '0',
        HUSH_VERIFY_PER_NUMBER_PER_HOUR: '1000',
        HUSH_VERIFY_PER_CLIENT_PER_HOUR: '100000',
        HUSH_KEY_FETCHES_PER_TARGET_PER_10_MINUTES: '1000',
      },
    });
    return {
      url: deployment.url,
      dataDir,
      socketUrl: deployment.gateway.callbackUrl.replace(/^http/, 'ws'),
      storedBytes: () => deployment.storedBytes(),
      async close() {
        await deployment.close();
        await dynamo.stop();
      },
    };
  } catch (error) {
    await dynamo.stop();
    throw error;
  }
}

/** A loopback port that was free a moment ago (for a server that must come back at the same URL). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/** The client's own encrypted key-value store (for tests that inspect or damage device state). */
export function clientStore(client: HushClient): KeyValueStore {
  return (client as unknown as { options: { store: KeyValueStore } }).options.store;
}

let counter = 0;
export function freshNumber(): string {
  counter++;
  return `+1415${String(3_000_000 + ((process.pid * 100 + counter) % 6_999_999)).padStart(7, '0')}`;
}

export interface TestClient {
  client: HushClient;
  storePath: string;
  keyFile: string;
  events: ClientEvent[];
  /** Resolves with the first event (seen or future) that matches. */
  next(predicate: (event: ClientEvent) => boolean, timeoutMs?: number): Promise<ClientEvent>;
}

export interface ClientOptions {
  /** The client's clock (e.g. to test key rotation). */
  now?: () => number;
  /** Register this number (e.g. again, as a new device) instead of a fresh one. */
  number?: string;
  /** The live socket's URL, when it is not the server's /v1/websocket. */
  socketUrl?: string;
}

/** Opens (or reopens) a client whose store lives in `dir`. */
export async function openClient(
  server: { url: string },
  dir = mkdtempSync(join(tmpdir(), 'hush-client-')),
  options: ClientOptions = {},
): Promise<TestClient> {
  const storePath = join(dir, 'hush.db');
  const keyFile = join(dir, 'store.key');
  const client = await openNodeClient({
    serverUrl: server.url,
    storePath,
    protection: { keyFile },
    ...(options.now ? { now: options.now } : {}),
    ...(options.socketUrl ? { socketUrl: options.socketUrl } : {}),
  });
  const events: ClientEvent[] = [];
  const waiters: { predicate: (e: ClientEvent) => boolean; resolve: (e: ClientEvent) => void }[] = [];
  client.on((event) => {
    events.push(event);
    for (const w of [...waiters]) {
      if (w.predicate(event)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(event);
      }
    }
  });
  return {
    client,
    storePath,
    keyFile,
    events,
    next(predicate, timeoutMs = 15_000) {
      const seen = events.find(predicate);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('timed out waiting for a client event')), timeoutMs);
        waiters.push({
          predicate,
          resolve: (e) => {
            clearTimeout(timer);
            resolve(e);
          },
        });
      });
    },
  };
}

/** Registers a new client: SMS code from the dev sender's file, keys generated on the device. */
export async function registeredClient(
  server: { url: string; dataDir: string },
  options: ClientOptions = {},
): Promise<TestClient> {
  const test = await openClient(server, undefined, options);
  const { sessionId, number } = await test.client.requestCode(options.number ?? freshNumber());
  const code = await readLatestDevCode(join(server.dataDir, 'dev-sms.log'), number);
  if (!code) throw new Error('no dev SMS code');
  await test.client.register(sessionId, code);
  return test;
}
