import type { StoredMessage } from '@hush/client';
import pc from 'picocolors';
import type { Directory } from './context.ts';

export { pc };

/** Where output goes: stdout for results, stderr for progress and errors (tests capture both). */
export interface Output {
  out(line?: string): void;
  err(line?: string): void;
}

export const stdio: Output = {
  out: (line = '') => process.stdout.write(`${line}\n`),
  err: (line = '') => process.stderr.write(`${line}\n`),
};

const pad2 = (n: number) => String(n).padStart(2, '0');

/** HH:MM:SS today, else YYYY-MM-DD HH:MM. */
export function when(timestamp: number, now = Date.now()): string {
  const d = new Date(timestamp);
  const today = new Date(now);
  const time = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  if (d.toDateString() === today.toDateString()) return `${time}:${pad2(d.getSeconds())}`;
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${time}`;
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export const hex = (data: Uint8Array) => Buffer.from(data).toString('hex');

/** `0a1b 2c3d …` for the first `max` bytes. */
export function hexPreview(data: Uint8Array, max = 32): string {
  const shown = hex(data.subarray(0, max))
    .replace(/(.{4})/g, '$1 ')
    .trim();
  return data.length > max ? `${shown} …` : shown;
}

/** The 60 digits as 12 groups of five, four groups a line (as phones show them). */
export function safetyNumberLines(digits: string): string[] {
  const groups = digits.match(/.{1,5}/g) ?? [];
  const lines: string[] = [];
  for (let i = 0; i < groups.length; i += 4) lines.push(groups.slice(i, i + 4).join(' '));
  return lines;
}

const STATUS: Record<StoredMessage['status'], string> = {
  sending: '… sending',
  sent: '✓ sent',
  delivered: '✓✓ delivered',
  read: '✓✓ read',
  failed: '✗ not sent',
  received: '',
};

export function statusMark(status: StoredMessage['status']): string {
  const text = STATUS[status];
  if (status === 'read') return pc.blue(text);
  if (status === 'failed') return pc.red(text);
  return pc.dim(text);
}

/** One message as a line (plus a line per attachment), for `listen` and `history`. */
export function messageLines(
  message: StoredMessage,
  dir: Directory,
  options: { showConversation?: boolean } = {},
): string[] {
  const time = pc.dim(when(message.timestamp));
  if (message.kind === 'system') return [`${time} ${pc.yellow(`· ${message.body}`)}`];
  const where =
    options.showConversation && message.conversationId.startsWith('group:')
      ? pc.cyan(` ${dir.conversationLabel(message.conversationId)}`)
      : '';
  const author = message.direction === 'out' ? pc.green('you') : pc.bold(dir.label(message.author));
  const status = message.direction === 'out' ? `  ${statusMark(message.status)}` : '';
  const expires = message.expiresAt ? pc.dim(` ⏱ ${when(message.expiresAt)}`) : '';
  const quote = message.quote ? `${pc.dim(`> ${message.quote.text}`)} ` : '';
  const reactions = message.reactions?.length ? ` ${message.reactions.map((r) => r.emoji).join('')}` : '';
  const lines = [`${time}${where} ${author}: ${quote}${message.body}${reactions}${status}${expires}`];
  for (const a of message.attachments ?? []) {
    lines.push(`    📎 ${a.fileName} (${bytes(a.size)}, ${a.contentType}) ${pc.dim(`hush get-file ${message.id}`)}`);
  }
  return lines;
}

/** A short preview of a message for the chat list. */
export function preview(message: StoredMessage | undefined, dir: Directory): string {
  if (!message) return '';
  const text = message.attachments?.length && !message.body ? `📎 ${message.attachments[0]?.fileName}` : message.body;
  const short = text.length > 48 ? `${text.slice(0, 47)}…` : text;
  if (message.kind === 'system') return pc.dim(short);
  return message.direction === 'out'
    ? `you: ${short}`
    : message.conversationId.startsWith('group:')
      ? `${dir.label(message.author)}: ${short}`
      : short;
}

export const json = (value: unknown) => JSON.stringify(value, null, 2);
