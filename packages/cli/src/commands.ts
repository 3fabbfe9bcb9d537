import { existsSync, statSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { basename, extname, join, resolve } from 'node:path';
import {
  ApiError,
  type ClientEvent,
  type Conversation,
  type HushClient,
  ServerUnreachableError,
  type StoredMessage,
} from '@hush/client';
import { Directory, type Session, isAccountId, saveConfig } from './context.ts';
import { CliError, describeError } from './errors.ts';
import {
  type Output,
  bytes,
  hex,
  json,
  messageLines,
  pc,
  preview,
  safetyNumberLines,
  statusMark,
  when,
} from './format.ts';
import { askLine, closeInput, fileSize, waitForDevCode } from './input.ts';

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

// ---------------------------------------------------------------- register, whoami, devices

export async function register(
  s: Session,
  o: Output,
  number: string,
  opts: { code?: string; devCodeFile?: string },
): Promise<void> {
  const client = await s.open({ create: true });
  const existing = await client.load();
  if (existing) {
    throw new CliError(
      `${s.paths.home} is already registered as ${existing.number} (account ${existing.accountId}); use another --home for a second account`,
    );
  }
  if (opts.code !== undefined && !/^\d{6}$/.test(opts.code.trim()))
    throw new CliError('--code: the code has six digits');
  const devFile = opts.devCodeFile ? resolve(opts.devCodeFile) : undefined;
  const offset = devFile ? await fileSize(devFile) : 0;

  o.err(`Requesting a verification code for ${number} from ${s.server} …`);
  const { sessionId, number: e164 } = await client.requestCode(number);
  o.err(`  the server sent an SMS code to ${e164}`);
  let code = opts.code?.trim();
  if (code === undefined && devFile) {
    code = await waitForDevCode(devFile, e164, offset);
    o.err(`  code ${code} read from the dev SMS log ${devFile}`);
  }
  const interactive = code === undefined;
  const started = Date.now();
  const elapsed = () => pc.dim(`[${((Date.now() - started) / 1000).toFixed(1)} s]`);
  try {
    for (;;) {
      if (code === undefined) {
        code = await askLine(`Enter the 6-digit code sent to ${e164}: `);
        if (!code) throw new CliError('no code entered: type the code from the SMS, or pass --code <code>');
      }
      try {
        const account = await client.register(sessionId, code, (step) => o.err(`  ${elapsed()} ${step} …`));
        o.err(`  ${elapsed()} done`);
        saveConfig(s.paths, { server: s.server });
        const protectedBy =
          s.options.passphraseEnv !== undefined
            ? `your passphrase ($${s.options.passphraseEnv})`
            : `the key file ${s.paths.keyFile}`;
        o.out(`Registered ${account.number}`);
        o.out(`  account id  ${account.accountId}   (others send to you with this id)`);
        o.out(`  device      ${account.deviceId}`);
        o.out(`  server      ${s.server}`);
        o.out(`  store       ${s.paths.store} (encrypted under ${protectedBy})`);
        o.out(
          'Your private keys were generated on this device and never leave it; the server has only the public halves.',
        );
        return;
      } catch (error) {
        const left = error instanceof ApiError ? error.details.attemptsLeft : undefined;
        if (
          interactive &&
          error instanceof ApiError &&
          error.code === 'invalid_code' &&
          typeof left === 'number' &&
          left > 0
        ) {
          o.err(pc.red(describeError(error)));
          code = undefined;
          continue;
        }
        throw error;
      }
    }
  } finally {
    closeInput();
  }
}

export async function whoami(s: Session, o: Output): Promise<void> {
  const client = await s.open();
  const a = client.account;
  const info = {
    number: a.number,
    accountId: a.accountId,
    deviceId: a.deviceId,
    registrationId: a.registrationId,
    identityKey: hex(client.identity.publicKey.serialize()),
    server: s.server,
    home: s.paths.home,
    store: s.paths.store,
    protection: s.options.passphraseEnv !== undefined ? 'passphrase' : 'key-file',
  };
  if (s.options.json) return o.out(json(info));
  o.out(`${pc.bold(a.number)}`);
  o.out(`  account id     ${a.accountId}`);
  o.out(`  device         ${a.deviceId} (registration id ${a.registrationId})`);
  o.out(`  identity key   ${info.identityKey} (public)`);
  o.out(`  server         ${s.server}`);
  o.out(
    `  store          ${s.paths.store} (encrypted; ${info.protection === 'passphrase' ? 'passphrase' : `key file ${s.paths.keyFile}`})`,
  );
}

export async function devices(s: Session, o: Output): Promise<void> {
  const client = await s.open();
  const list = await client.devices();
  if (s.options.json) return o.out(json(list));
  o.out(`Devices of ${client.account.number}:`);
  for (const d of list) {
    const self = d.current ? pc.green(' (this device)') : '';
    const name = d.name ? `  “${d.name}”` : d.deviceId === 1 ? '  (primary)' : '';
    o.out(`  device ${d.deviceId}${name}  linked ${when(d.createdAt)}${self}`);
  }
  if (client.account.deviceId === 1 && list.length < 6)
    o.out(pc.dim('Link another: run `hush link` on the new device, then `hush devices add <link>` here.'));
}

/** On the new device: show a link as a QR code and wait for the primary device to scan it. */
export async function link(s: Session, o: Output, opts: { name?: string; timeout: number }): Promise<void> {
  const client = await s.open({ create: true });
  const existing = await client.load();
  if (existing) {
    throw new CliError(
      `${s.paths.home} already belongs to ${existing.number} (device ${existing.deviceId}); use another --home to link a new device`,
    );
  }
  const { toString: qr } = (await import('qrcode')).default;
  const account = await client.linkAsNewDevice({
    ...(opts.name ? { name: opts.name } : {}),
    timeoutMs: opts.timeout * 1000,
    onLinkUri: async (uri) => {
      o.err('On your primary device, scan this code, or run there:');
      o.err(`  hush devices add '${uri}'`);
      o.err(await qr(uri, { type: 'terminal', small: true }));
      o.err(`Waiting up to ${plural(opts.timeout, 'second')} …`);
    },
    onProgress: (step) => o.err(`  ${step} …`),
  });
  saveConfig(s.paths, { server: s.server });
  o.out(`Linked as device ${account.deviceId} of ${account.number} (account ${account.accountId})`);
  o.out('This device made its own keys; it shares only the account identity, which arrived end-to-end encrypted.');
}

/** On the primary device: link the new device whose QR code / link was scanned. */
export async function devicesAdd(s: Session, o: Output, uri: string): Promise<void> {
  const client = await s.open();
  if (client.account.deviceId !== 1) throw new CliError('only the primary device (device 1) can link new devices');
  await client.linkDevice(uri);
  o.out('Sent the account keys to the new device (end-to-end encrypted); it finishes linking on its side.');
}

export async function devicesRemove(s: Session, o: Output, deviceId: number): Promise<void> {
  const client = await s.open();
  await client.removeDevice(deviceId);
  o.out(
    deviceId === client.account.deviceId
      ? 'This device is unlinked; its store here no longer works with the account.'
      : `Device ${deviceId} is unlinked: it can no longer read or send for this account.`,
  );
}

// ---------------------------------------------------------------- contacts

export async function contactsAdd(
  s: Session,
  o: Output,
  name: string,
  accountId: string,
  opts: { number?: string },
): Promise<void> {
  const client = await s.open();
  if (!isAccountId(accountId)) {
    throw new CliError(
      `"${accountId}" is not an account id (they look like 0b6f3c1e-…; ask the person to run \`hush whoami\`)`,
    );
  }
  const id = accountId.toLowerCase();
  if (isAccountId(name)) throw new CliError('the name must not look like an account id');
  if (id === client.account.accountId) throw new CliError('that is your own account id');
  const taken = (await client.contacts()).find(
    (c) => c.name?.toLowerCase() === name.toLowerCase() && c.accountId !== id,
  );
  if (taken) throw new CliError(`the name "${name}" is already used for ${taken.accountId}`);
  await client.saveContact(id, { name, ...(opts.number ? { number: opts.number } : {}) });
  o.out(`saved ${pc.bold(name)} → ${id}`);
}

export async function contactsList(s: Session, o: Output): Promise<void> {
  const client = await s.open();
  const contacts = await client.contacts();
  if (s.options.json) return o.out(json(contacts.map(({ previousIdentityKey: _, ...c }) => c)));
  if (contacts.length === 0) return o.out('no contacts yet: hush contacts add <name> <account-id>');
  for (const c of contacts) {
    const trust = c.identityKey ? ` ${trustLabel(c.trust)}` : pc.dim(' (no keys exchanged yet)');
    o.out(`  ${pc.bold(c.name ?? '-')}  ${c.accountId}${c.number ? `  ${c.number}` : ''}${trust}`);
  }
}

function trustLabel(trust: 'unverified' | 'verified' | 'changed'): string {
  if (trust === 'verified') return pc.green('verified');
  if (trust === 'changed') return pc.red('SAFETY NUMBER CHANGED');
  return pc.dim('unverified');
}

// ---------------------------------------------------------------- sending

/** Re-sends messages a previous run stored but could not send; a dead server still fails loudly. */
async function flushOutbox(client: HushClient, o: Output): Promise<void> {
  try {
    const resent = await client.flushOutbox();
    if (resent > 0) o.err(pc.dim(`re-sent ${plural(resent, 'earlier message')} that had not gone out`));
  } catch (error) {
    if (error instanceof ServerUnreachableError) throw error;
    o.err(pc.yellow(`an earlier unsent message is still waiting: ${describeError(error)}`));
  }
}

async function sending<T>(o: Output, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof ServerUnreachableError)
      o.err(pc.dim('the message is kept on this device and goes out with the next `hush send` or `hush listen`'));
    throw error;
  }
}

export async function send(s: Session, o: Output, who: string, text: string): Promise<void> {
  const client = await s.open();
  const dir = await Directory.load(client);
  const to = dir.contactId(who);
  if (!text) throw new CliError('the message is empty');
  await flushOutbox(client, o);
  const sent = await sending(o, () => client.sendText(to, text));
  o.out(
    `sent to ${pc.bold(dir.label(to))}  ${statusMark(sent.status)}  ${pc.dim(`${when(sent.timestamp)}  id ${sent.id}`)}`,
  );
}

const TYPES: Record<string, string> = {
  '.txt': 'text/plain',
  '.md': 'text/markdown',
  '.json': 'application/json',
  '.pdf': 'application/pdf',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.mp4': 'video/mp4',
  '.mp3': 'audio/mpeg',
  '.zip': 'application/zip',
};

export async function sendFile(
  s: Session,
  o: Output,
  who: string,
  path: string,
  opts: { caption?: string; type?: string },
): Promise<void> {
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new CliError(
      code === 'ENOENT'
        ? `no such file: ${path}`
        : code === 'EISDIR'
          ? `${path} is a directory`
          : (error as Error).message,
    );
  }
  const client = await s.open();
  const dir = await Directory.load(client);
  const to = dir.conversation(who);
  await flushOutbox(client, o);
  const name = basename(path);
  const type = opts.type ?? TYPES[extname(path).toLowerCase()] ?? 'application/octet-stream';
  o.err(pc.dim(`encrypting ${name} (${bytes(data.length)}) on this device and uploading the ciphertext …`));
  const sent = await sending(o, () => client.sendFile(to, new Uint8Array(data), name, type, opts.caption ?? ''));
  o.out(
    `sent ${name} (${bytes(data.length)}) to ${pc.bold(dir.conversationLabel(to))}  ${statusMark(sent.status)}  ${pc.dim(`id ${sent.id}`)}`,
  );
  o.out(pc.dim('the server holds only the encrypted file; its key travels inside the end-to-end encrypted message'));
}

async function findMessage(client: HushClient, id: string): Promise<StoredMessage | undefined> {
  const author = id.slice(0, id.lastIndexOf(':'));
  const conversations = await client.conversations();
  // Likeliest first: the author's 1:1 conversation, then the rest (groups, our own messages).
  conversations.sort((a, b) => Number(b.id === author) - Number(a.id === author));
  for (const c of conversations) {
    const found = (await client.history(c.id, 100_000)).find((m) => m.id === id);
    if (found) return found;
  }
  return undefined;
}

const safeName = (name: string) =>
  basename(name)
    .replace(/[^\w.\- ]/g, '_')
    .replace(/^\.+/, '') || 'attachment';

export async function getFile(
  s: Session,
  o: Output,
  id: string,
  opts: { out?: string; force?: boolean },
): Promise<void> {
  const client = await s.open();
  const message = await findMessage(client, id);
  if (!message)
    throw new CliError(`no message ${id} on this device (ids are shown by \`hush history\` and \`hush listen\`)`);
  const attachments = message.attachments ?? [];
  if (attachments.length === 0) throw new CliError(`message ${id} has no attachment`);
  const outDir = opts.out && existsSync(opts.out) && statSync(opts.out).isDirectory() ? opts.out : undefined;
  if (opts.out && !outDir && attachments.length > 1)
    throw new CliError('this message has several files: give --out a directory');
  for (const attachment of attachments) {
    const target = resolve(opts.out && !outDir ? opts.out : join(outDir ?? '.', safeName(attachment.fileName)));
    if (existsSync(target) && !opts.force) throw new CliError(`${target} already exists (use --force to overwrite)`);
    const data = await client.downloadAttachment(attachment);
    await writeFile(target, data);
    o.out(
      `saved ${attachment.fileName} (${bytes(data.length)}) to ${target}; digest and MAC checked, decrypted on this device`,
    );
  }
}

// ---------------------------------------------------------------- reading

export async function chats(s: Session, o: Output): Promise<void> {
  const client = await s.open();
  const dir = await Directory.load(client);
  const conversations = await client.conversations();
  const rows: { c: Conversation; name: string; last: StoredMessage | undefined }[] = [];
  for (const c of conversations)
    rows.push({ c, name: dir.conversationLabel(c.id), last: (await client.history(c.id, 1))[0] });
  if (s.options.json) {
    return o.out(
      json(
        rows.map(({ c, name, last }) => ({
          ...c,
          name,
          last: last ? { id: last.id, body: last.body, author: last.author } : null,
        })),
      ),
    );
  }
  if (rows.length === 0) {
    o.out(
      'no conversations yet. Send a message with `hush send <contact> <text>`; fetch new ones with `hush listen --once`.',
    );
    return;
  }
  const width = Math.max(...rows.map((r) => r.name.length));
  for (const { c, name, last } of rows) {
    const unread = c.unread > 0 ? pc.bold(pc.green(`${c.unread} unread`.padEnd(9))) : pc.dim('-'.padEnd(9));
    o.out(`  ${pc.bold(name.padEnd(width))}  ${unread}  ${pc.dim(when(c.lastMessageAt))}  ${preview(last, dir)}`);
  }
  o.out(pc.dim('messages this device has received; `hush listen --once` fetches new ones'));
}

export async function history(
  s: Session,
  o: Output,
  who: string,
  opts: { limit: number; markRead: boolean },
): Promise<void> {
  const client = await s.open();
  const dir = await Directory.load(client);
  const conversation = dir.conversation(who);
  const messages = await client.history(conversation, opts.limit);
  if (s.options.json) o.out(json(messages));
  else if (messages.length === 0) o.out(`no messages with ${dir.conversationLabel(conversation)} on this device yet`);
  else {
    o.out(pc.bold(`Conversation with ${dir.conversationLabel(conversation)}`));
    for (const m of messages) for (const line of messageLines(m, dir)) o.out(line);
  }
  if (opts.markRead && messages.some((m) => m.direction === 'in' && m.status === 'received')) {
    // Opening a conversation reads it: tell the sender (best effort; the history needs no server).
    await client.markRead(conversation).catch((error: unknown) => {
      o.err(pc.dim(`read receipts not sent: ${describeError(error, s.errorContext)}`));
    });
  }
}

/** What `listen` prints for each event (text), or one JSON line per event (--json). */
function eventPrinter(s: Session, o: Output, dir: Directory, self: string) {
  let connectedOnce = false;
  let upToDate = false;
  return (event: ClientEvent) => {
    if (s.options.json) {
      if (event.type !== 'connection') o.out(JSON.stringify(event));
      return;
    }
    switch (event.type) {
      case 'message':
        for (const line of messageLines(event.message, dir, { showConversation: true })) o.out(line);
        return;
      case 'message-updated': {
        const m = event.message;
        if (m.direction === 'out' && (m.status === 'delivered' || m.status === 'read')) {
          const text = m.body.length > 40 ? `${m.body.slice(0, 39)}…` : m.body || (m.attachments?.[0]?.fileName ?? '');
          o.out(
            `${pc.dim(when(Date.now()))} ${statusMark(m.status)} ${pc.dim(`by ${dir.conversationLabel(m.conversationId)}: “${text}”`)}`,
          );
        } else if (m.reactions) {
          o.out(
            `${pc.dim(when(Date.now()))} reactions on “${m.body}”: ${m.reactions.map((r) => `${r.emoji} ${dir.label(r.author)}`).join(', ')}`,
          );
        }
        return;
      }
      case 'typing':
        if (event.started) o.out(pc.dim(`${when(Date.now())} ${dir.label(event.from)} is typing…`));
        return;
      case 'identity-changed':
        o.out(
          pc.yellow(
            `⚠ The safety number with ${dir.label(event.accountId)} changed. Their messages still arrive, but nothing is sent to them until you compare it: hush safety-number ${event.accountId}`,
          ),
        );
        return;
      case 'decryption-failed':
        o.out(
          pc.red(
            `✗ a message from ${dir.label(event.from)} (sent ${when(event.timestamp)}) could not be decrypted (${event.reason}); asked their device to send it again`,
          ),
        );
        return;
      case 'group-updated': {
        dir.noteGroup(event.group);
        const g = event.group;
        if (!g.active) o.out(pc.yellow(`you are no longer a member of “${g.name}”`));
        else
          o.out(pc.cyan(`group “${g.name}” (${g.id.slice(0, 8)}): ${g.members.map((m) => dir.label(m)).join(', ')}`));
        return;
      }
      case 'expired':
        o.out(pc.dim(`${plural(event.ids.length, 'disappearing message')} removed`));
        return;
      case 'connection':
        if (event.state === 'open') {
          o.err(pc.dim(connectedOnce ? 'reconnected' : `connected to ${s.server} as ${self}`));
          connectedOnce = true;
        } else if (event.state === 'closed' && event.detail && connectedOnce) {
          o.err(pc.yellow(`connection lost (${event.detail})`));
        }
        return;
      case 'queue-empty':
        if (!upToDate) o.err(pc.dim('— up to date; waiting for new messages (Ctrl-C to stop) —'));
        upToDate = true;
        return;
    }
  };
}

export async function listen(s: Session, o: Output, opts: { once?: boolean; timeout: number }): Promise<void> {
  const client = await s.open();
  const dir = await Directory.load(client);
  // An HTTP round trip first: a down server or refused credentials fail here with a clear message
  // (the socket itself just keeps retrying). It also keeps the one-time prekeys stocked.
  const kept = await client.maintainKeys();
  if (kept.preKeys + kept.pqPreKeys > 0)
    o.err(pc.dim(`uploaded ${kept.preKeys + kept.pqPreKeys} fresh one-time prekeys`));
  if (kept.rotated) o.err(pc.dim('rotated the signed prekey and the last-resort Kyber key'));
  await flushOutbox(client, o);

  const print = eventPrinter(s, o, dir, client.account.number);
  let received = 0;
  await new Promise<void>((resolveListen, reject) => {
    let done = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const sweep = setInterval(() => void client.removeExpired().catch(() => undefined), 1000);
    const finish = (error?: unknown) => {
      if (done) return;
      done = true;
      clearInterval(sweep);
      clearTimeout(timer);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      off();
      client.disconnect();
      if (error) reject(error);
      else resolveListen();
    };
    const onSignal = () => {
      if (!s.options.json) o.err(pc.dim('stopped'));
      finish();
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    const off = client.on((event) => {
      if (event.type === 'message') received++;
      if (opts.once) {
        if (event.type === 'queue-empty') {
          client.idle().then(
            () => finish(),
            (error: unknown) => finish(error),
          );
          return;
        }
        if (event.type !== 'connection') print(event);
        return;
      }
      print(event);
    });
    if (opts.once) {
      timer = setTimeout(
        () => finish(new CliError(`the server did not deliver the queue within ${opts.timeout} s`)),
        opts.timeout * 1000,
      );
    }
    client.connect().catch((error: unknown) => finish(error));
  });
  if (opts.once && !s.options.json)
    o.err(pc.dim(received === 0 ? 'no new messages' : `${plural(received, 'new message')}`));
}

// ---------------------------------------------------------------- groups

export async function groupCreate(s: Session, o: Output, name: string, members: string[]): Promise<void> {
  const client = await s.open();
  const dir = await Directory.load(client);
  const ids = members.map((m) => dir.contactId(m));
  const group = await client.createGroup(name, ids);
  dir.noteGroup(group);
  o.out(`created group ${pc.bold(`“${group.name}”`)} ${pc.dim(group.id)}`);
  o.out(`  members: ${group.members.map((m) => dir.label(m)).join(', ')}`);
  o.out(pc.dim('each member got the group and your sender key over their 1:1 encrypted session'));
}

export async function groupAdd(s: Session, o: Output, which: string, member: string): Promise<void> {
  const client = await s.open();
  const dir = await Directory.load(client);
  const group = dir.group(which);
  const id = dir.contactId(member);
  if (group.members.includes(id)) throw new CliError(`${dir.label(id)} is already in “${group.name}”`);
  const next = await client.addMember(group.id, id);
  o.out(`added ${dir.label(id)} to “${next.name}”: ${next.members.map((m) => dir.label(m)).join(', ')}`);
}

export async function groupRemove(s: Session, o: Output, which: string, member: string): Promise<void> {
  const client = await s.open();
  const dir = await Directory.load(client);
  const group = dir.group(which);
  const id = dir.contactId(member);
  if (!group.members.includes(id)) throw new CliError(`${dir.label(id)} is not in “${group.name}”`);
  const next = await client.removeMember(group.id, id);
  o.out(`removed ${dir.label(id)} from “${next.name}”: ${next.members.map((m) => dir.label(m)).join(', ')}`);
  o.out(pc.dim('you made a new sender key; they cannot read what follows'));
}

export async function groupLeave(s: Session, o: Output, which: string): Promise<void> {
  const client = await s.open();
  const dir = await Directory.load(client);
  const group = dir.group(which);
  await client.leaveGroup(group.id);
  o.out(`left “${group.name}”`);
}

export async function groupSend(s: Session, o: Output, which: string, text: string): Promise<void> {
  const client = await s.open();
  const dir = await Directory.load(client);
  const group = dir.group(which);
  if (!group.active) throw new CliError(`you are no longer a member of “${group.name}”`);
  if (!text) throw new CliError('the message is empty');
  await flushOutbox(client, o);
  const sent = await sending(o, () => client.sendText(`group:${group.id}`, text));
  o.out(
    `sent to ${pc.bold(`“${group.name}”`)} (${plural(group.members.length - 1, 'other member')})  ${statusMark(sent.status)}  ${pc.dim(`id ${sent.id}`)}`,
  );
}

export async function groupList(s: Session, o: Output): Promise<void> {
  const client = await s.open();
  const dir = await Directory.load(client);
  const groups = await client.groups();
  if (s.options.json) return o.out(json(groups.map(({ distributionId: _, ...g }) => g)));
  if (groups.length === 0) return o.out('no groups yet: hush group create <name> <members...>');
  for (const g of groups) {
    const state = g.active ? '' : pc.dim(' (left or removed)');
    o.out(`  ${pc.bold(g.name)}  ${pc.dim(g.id)}${state}`);
    o.out(`    ${g.members.map((m) => dir.label(m)).join(', ')}`);
  }
}

// ---------------------------------------------------------------- safety numbers

export async function safetyNumber(
  s: Session,
  o: Output,
  who: string,
  opts: { accept?: boolean; verify?: string },
): Promise<void> {
  const client = await s.open();
  const dir = await Directory.load(client);
  const id = dir.contactId(who);
  const name = dir.label(id);
  const contact = await client.contact(id);
  if (!contact?.identityKey) {
    throw new CliError(`no keys exchanged with ${name} yet: send them a message (or receive one) first`);
  }
  if (opts.verify !== undefined) {
    const ok = await client.acceptIdentity(id, opts.verify.trim()).catch((error: unknown) => {
      if (error instanceof Error && error.name === 'UnknownContactError') throw error;
      throw new CliError(
        `--verify: not a safety-number code (${(error as Error).message}); paste the base64 "QR payload" that \`hush safety-number\` shows on their device`,
      );
    });
    if (!ok) {
      throw new CliError(
        `the scanned code does NOT match ${name}'s safety number: you may not be talking to ${name}'s device. Nothing was changed.`,
      );
    }
    o.out(pc.green(`✓ the scanned code matches: ${name} is now verified`));
  } else if (opts.accept) {
    await client.acceptIdentity(id);
    o.out(`accepted ${name}'s current identity key; sending resumes (compare the safety number to mark it verified)`);
  }
  const sn = await client.safetyNumber(id);
  if (s.options.json) return o.out(json({ accountId: id, name, digits: sn.digits, qr: sn.qr, trust: sn.trust }));
  o.out(`Safety number with ${pc.bold(name)} ${pc.dim(`(${id})`)}:`);
  for (const line of safetyNumberLines(sn.digits)) o.out(`    ${line}`);
  o.out(`QR payload (base64): ${sn.qr}`);
  o.out(`trust: ${trustLabel(sn.trust)}`);
  if (sn.trust === 'changed') {
    o.out(
      pc.yellow(
        `${name}'s identity key changed. Compare the number in person, then: hush safety-number ${who} --accept`,
      ),
    );
  } else if (sn.trust === 'unverified') {
    o.out(pc.dim(`Compare these digits with ${name} (in person or over a call). They see the same 60 digits.`));
    o.out(pc.dim(`To mark ${name} verified, scan their code: hush safety-number ${who} --verify <their QR payload>`));
  }
}
