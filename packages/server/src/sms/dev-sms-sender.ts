import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { SmsSender } from '../core/ports.ts';

/** One line of the dev SMS log (JSON lines). */
export interface DevSmsRecord {
  /** E.164. */
  number: string;
  code: string;
  /** When it was "sent" (ms since the epoch). */
  sentAt: number;
}

/** Where the human-readable line goes: a stream such as `process.stdout`, or a function. */
export type DevSmsOutput = { write(chunk: string): unknown } | ((line: string) => void);

export interface DevSmsSenderOptions {
  /** Defaults to `process.stdout`. */
  output?: DevSmsOutput;
  /** Defaults to `Date.now`. */
  now?: () => number;
}

/**
 * The development SMS sender: instead of sending a text it prints the code
 * (`[dev sms] +14155550123 code 123456`) and appends `{"number","code","sentAt"}` as one JSON line
 * to a file (e.g. `./data/dev-sms.log`), from which `readLatestDevCode` reads it back for tests and
 * the web app's dev mode. Only for development: it writes verification codes in the clear.
 */
export class DevSmsSender implements SmsSender {
  private readonly output: DevSmsOutput;
  private readonly now: () => number;
  private dirReady: Promise<unknown> | undefined;
  /** Appends run one after another, so the file's order is the order of the sends. */
  private tail: Promise<void> = Promise.resolve();

  constructor(
    readonly file: string,
    options: DevSmsSenderOptions = {},
  ) {
    this.output = options.output ?? process.stdout;
    this.now = options.now ?? Date.now;
  }

  async sendVerificationCode(number: string, code: string): Promise<void> {
    const record: DevSmsRecord = { number, code, sentAt: this.now() };
    const line = `${JSON.stringify(record)}\n`;
    const write = this.tail.then(async () => {
      this.dirReady ??= mkdir(dirname(this.file), { recursive: true });
      await this.dirReady;
      // One append(2) of one small buffer with O_APPEND: the line lands whole, also next to
      // other processes appending to the same file.
      await appendFile(this.file, line, { encoding: 'utf8', flag: 'a' });
    });
    // A failed append must not block the ones after it; the caller still sees its own failure.
    this.tail = write.catch(() => {
      this.dirReady = undefined;
    });
    await write;
    const text = `[dev sms] ${number} code ${code}`;
    if (typeof this.output === 'function') this.output(text);
    else this.output.write(`${text}\n`);
  }
}

/**
 * The newest code sent to `number` according to a dev SMS log, or undefined when there is none
 * (also when the file does not exist yet). Lines that are not complete records are skipped.
 */
export async function readLatestDevCode(file: string, number: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const lines = text.split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    const record = parseRecord(lines[i]);
    if (record?.number === number) return record.code;
  }
  return undefined;
}

function parseRecord(line: string | undefined): DevSmsRecord | undefined {
  if (!line?.trim()) return undefined;
  try {
    const value: unknown = JSON.parse(line);
    if (typeof value !== 'object' || value === null) return undefined;
    const { number, code, sentAt } = value as Record<string, unknown>;
    if (typeof number !== 'string' || typeof code !== 'string' || typeof sentAt !== 'number') return undefined;
    return { number, code, sentAt };
  } catch {
    return undefined;
  }
}
