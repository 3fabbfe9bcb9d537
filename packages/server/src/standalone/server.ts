import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { SNSClient } from '@aws-sdk/client-sns';
import { createAdaptorServer } from '@hono/node-server';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { DestinationStream, Logger } from 'pino';
import { createCore } from '../core/index.ts';
import type { PushSender, SmsSender } from '../core/ports.ts';
import { SocketTokens } from '../core/socket-tokens.ts';
import { createApp } from '../http/app.ts';
import { createLogger } from '../logging.ts';
import { DevPushSender } from '../push/dev-push-sender.ts';
import { WebPushSender } from '../push/web-push-sender.ts';
import { DevSmsSender } from '../sms/dev-sms-sender.ts';
import { SnsSmsSender } from '../sms/sns-sms-sender.ts';
import { FileAttachmentStore } from '../storage/sqlite/files-attachment-store.ts';
import { SqliteStorage } from '../storage/sqlite/sqlite-storage.ts';
import { SocketServer } from '../ws/socket-server.ts';
import type { ServerConfig } from './config.ts';
import { ServerMetrics } from './metrics.ts';
import { hasWebBuild, serveWebApp } from './web-app.ts';

export { createLogger } from '../logging.ts';

const SWEEP_INTERVAL_MS = 60 * 60 * 1000;

/** The secret that keys verification-code hashes and socket tokens: a file, never the database. */
function loadOrCreateSecret(file: string): Uint8Array {
  if (existsSync(file)) return new Uint8Array(readFileSync(file));
  const secret = randomBytes(32);
  writeFileSync(file, secret, { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600);
  return secret;
}

export interface StartOptions {
  /** Where logs go (default stdout). */
  logDestination?: DestinationStream;
  /** Where the dev SMS sender prints codes (default stdout). */
  devSmsOutput?: NodeJS.WritableStream;
}

export interface RunningServer {
  url: string;
  port: number;
  config: ServerConfig;
  logger: Logger;
  storage: SqliteStorage;
  push: PushSender;
  /** The web build served at `/`, if one was found. */
  webDir: string | undefined;
  /** Stops accepting, closes sockets, lets in-flight requests finish, then closes the database. */
  close(): Promise<void>;
}

/** Starts the standalone server: HTTP + WebSocket on one port, SQLite and files under the data dir. */
export async function startServer(config: ServerConfig, options: StartOptions = {}): Promise<RunningServer> {
  mkdirSync(config.dataDir, { recursive: true });
  const logger = createLogger(config.logLevel, options.logDestination);
  const secret = loadOrCreateSecret(config.secretFile);
  const storage = SqliteStorage.open(config.databasePath);
  const attachments = new FileAttachmentStore(config.attachmentsDir, storage);

  const sms: SmsSender =
    config.sms.kind === 'sns'
      ? new SnsSmsSender(new SNSClient({ region: config.sms.region }))
      : new DevSmsSender(config.devSmsFile, options.devSmsOutput ? { output: options.devSmsOutput } : {});
  const push: PushSender =
    config.push.kind === 'webpush'
      ? new WebPushSender({
          vapid: { subject: config.push.subject, publicKey: config.push.publicKey, privateKey: config.push.privateKey },
          logger,
          onSubscriptionGone: (accountId, deviceId) => storage.setPushSubscription(accountId, deviceId, null),
        })
      : new DevPushSender({ file: config.devPushFile, logger });

  const metrics = new ServerMetrics(() => storage.countAllEnvelopes(Date.now()));
  let sockets: SocketServer | undefined;
  const core = createCore({
    storage,
    sms,
    push,
    // The socket server needs the core too; it is created right below, before any request.
    notifier: {
      notify: (accountId, deviceId) => sockets?.notify(accountId, deviceId) ?? Promise.resolve(false),
      disconnect: (accountId, deviceId) => sockets?.disconnect(accountId, deviceId) ?? Promise.resolve(),
    },
    clock: { now: () => Date.now() },
    codeSecret: secret,
    verificationLimits: config.verificationLimits,
    keyFetchLimits: config.keyFetchLimits,
    // Sends are counted in this process's memory (core/rate-limiter.ts): the standalone server is
    // one process, and a storage write per send would cost more than the send.
    sendLimits: config.sendLimits,
    metrics,
  });
  const socketTokens = new SocketTokens({ secret, clock: core.clock, store: storage });
  sockets = new SocketServer(core, socketTokens, logger, metrics);
  const app = createApp({
    core,
    attachments,
    socketTokens,
    logger,
    metrics,
    clientAddress: (c) => getConnInfo(c).remote.address ?? 'unknown',
  });
  // The web app (apps/mobile's web build) at `/` when it is built; otherwise a note.
  const web = hasWebBuild(config.webDir) ? config.webDir : undefined;
  if (web) serveWebApp(app, web);
  else
    app.get('/', (c) =>
      c.html(
        '<!doctype html><meta charset="utf-8"><title>Hush</title><h1>Hush server</h1><p>Running. API reference: <a href="/docs">/docs</a>.</p>',
      ),
    );

  const server = createAdaptorServer({ fetch: app.fetch });
  sockets.attach(server as import('node:http').Server, app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  const sweeper = setInterval(() => {
    const now = Date.now();
    Promise.all([storage.deleteExpired(now), attachments.deleteExpired(now)])
      .then(([envelopes, blobs]) => logger.info({ envelopes, blobs }, 'expired data removed'))
      .catch((error: unknown) => logger.error({ err: { message: (error as Error).message } }, 'sweep failed'));
  }, SWEEP_INTERVAL_MS);
  sweeper.unref();

  let closing: Promise<void> | undefined;
  return {
    url: `http://${config.host}:${port}`,
    port,
    config,
    logger,
    storage,
    push,
    webDir: web,
    close() {
      closing ??= (async () => {
        clearInterval(sweeper);
        sockets?.close();
        // In-flight requests finish (their writes are synchronous and complete); idle keep-alive
        // connections are closed so that close() does not wait for clients to hang up.
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        (server as import('node:http').Server).closeIdleConnections();
        await closed;
        storage.close();
        logger.info('stopped');
        logger.flush();
      })();
      return closing;
    },
  };
}
