import { type DestinationStream, type Logger, pino } from 'pino';

/**
 * Logs are JSON lines. They never carry message content, keys, codes or passwords: the code never
 * logs bodies, and these paths are redacted as a second line of defence.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'hush-server' },
      redact: {
        paths: [
          'password',
          'code',
          'content',
          '*.password',
          '*.code',
          '*.content',
          'req.headers.authorization',
          'headers.authorization',
        ],
        censor: '[redacted]',
      },
    },
    destination,
  );
}
