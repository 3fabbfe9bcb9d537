import { ConfigError, loadConfig } from './config.ts';
import { startServer } from './server.ts';

/** `npm start`: the standalone server with embedded SQLite and the dev SMS sender. */
async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`hush-server: ${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  const server = await startServer(config);
  const lines = [
    '',
    `  Hush server listening on ${server.url}`,
    `  data (SQLite, attachments): ${config.dataDir}`,
    config.sms.kind === 'dev'
      ? `  verification codes (dev SMS): printed below and appended to ${config.devSmsFile}`
      : `  verification codes: sent by SMS through Amazon SNS (${config.sms.region})`,
    server.webDir
      ? `  web app: ${server.url}/ (from ${server.webDir})`
      : `  web app: not built (${config.webDir ?? 'HUSH_WEB_DIR=none'} has no index.html; npm run build:web)`,
    `  API reference: ${server.url}/docs · health: ${server.url}/healthz · metrics: ${server.url}/metrics`,
    '  Ctrl-C stops it (in-flight requests finish first).',
    '',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  const stop = (signal: string) => {
    server.logger.info({ signal }, 'stopping');
    server.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

main().catch((error: unknown) => {
  process.stderr.write(`hush-server: failed to start: ${(error as Error).message}\n`);
  process.exit(1);
});
