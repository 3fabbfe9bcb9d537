import { readFile, stat } from 'node:fs/promises';
import { type Interface, createInterface } from 'node:readline';
import { CliError } from './errors.ts';

/**
 * Lines from stdin through one readline interface for the whole run: a second interface would
 * lose what the first one had already buffered (e.g. piped answers).
 */
let reader:
  | { lines: string[]; waiting: ((line: string | undefined) => void)[]; closed: boolean; rl: Interface }
  | undefined;

function lineReader() {
  if (reader) return reader;
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: process.stdin.isTTY === true });
  const state = { lines: [] as string[], waiting: [] as ((line: string | undefined) => void)[], closed: false, rl };
  rl.on('line', (line) => {
    const waiter = state.waiting.shift();
    if (waiter) waiter(line.trim());
    else state.lines.push(line.trim());
  });
  rl.on('close', () => {
    state.closed = true;
    for (const waiter of state.waiting.splice(0)) waiter(undefined);
  });
  reader = state;
  return state;
}

/** Reads one line from stdin after showing `question` on stderr; undefined when stdin has ended. */
export function askLine(question: string): Promise<string | undefined> {
  const r = lineReader();
  r.rl.setPrompt(question);
  r.rl.prompt();
  const buffered = r.lines.shift();
  if (buffered !== undefined) return Promise.resolve(buffered);
  if (r.closed) return Promise.resolve(undefined);
  return new Promise((resolve) => r.waiting.push(resolve));
}

/** Lets the process exit (stdin no longer read). */
export function closeInput(): void {
  reader?.rl.close();
  reader = undefined;
}

export async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

/**
 * The code the dev SMS sender wrote for `number` after byte `offset` of its log (JSON lines
 * `{"number","code","sentAt"}`), waiting up to `timeoutMs` for it to appear.
 */
export async function waitForDevCode(
  file: string,
  number: string,
  offset: number,
  timeoutMs = 10_000,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let text = '';
    try {
      const all = await readFile(file);
      text = all.subarray(all.length >= offset ? offset : 0).toString('utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    const lines = text.split('\n').reverse();
    for (const line of lines) {
      try {
        const record = JSON.parse(line) as { number?: unknown; code?: unknown };
        if (record.number === number && typeof record.code === 'string') return record.code;
      } catch {
        // a partial or foreign line
      }
    }
    if (Date.now() > deadline) {
      throw new CliError(
        `no code for ${number} appeared in ${file}: is it the server's dev SMS log (e.g. ./data/dev-sms.log)?`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
