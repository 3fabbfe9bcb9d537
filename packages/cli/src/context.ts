import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { type Contact, type Group, type HushClient, NotRegisteredError, UnknownContactError } from '@hush/client';
import { SqliteKeyValueStore, type StoreProtection, openNodeClient } from '@hush/client/node';
import { DEFAULT_SERVER } from './defaults.ts';
import { CliError, type ErrorContext } from './errors.ts';

/** The options every command accepts (set on the program, read with optsWithGlobals). */
export interface GlobalOptions {
  server?: string;
  home?: string;
  passphraseEnv?: string;
  json?: boolean;
}

export interface Paths {
  home: string;
  store: string;
  keyFile: string;
  /** Plain settings that are not secret: the server this account lives on. */
  config: string;
  /** Held while a command uses the store (one process per device at a time). */
  lock: string;
}

export function paths(options: GlobalOptions, env: NodeJS.ProcessEnv = process.env): Paths {
  const home = resolve(options.home ?? (env.HUSH_HOME || join(homedir(), '.hush')));
  return {
    home,
    store: join(home, 'hush.db'),
    keyFile: join(home, 'store.key'),
    config: join(home, 'config.json'),
    lock: join(home, 'hush.lock'),
  };
}

function readConfig(file: string): { server?: string } {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as { server?: string };
  } catch {
    return {};
  }
}

export function saveConfig(p: Paths, config: { server: string }): void {
  writeFileSync(p.config, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
}

/** --server, else $HUSH_SERVER, else the server this home registered with, else the local default. */
export function serverUrl(options: GlobalOptions, p: Paths, env: NodeJS.ProcessEnv = process.env): string {
  const raw = options.server ?? (env.HUSH_SERVER || readConfig(p.config).server || DEFAULT_SERVER);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new CliError(`--server: not a URL: ${raw} (e.g. ${DEFAULT_SERVER})`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new CliError(`--server: use an http:// or https:// URL, not ${url.protocol}`);
  }
  return url.toString().replace(/\/+$/, '');
}

/** The key file in the home directory, or a passphrase from the named environment variable. */
export function protection(options: GlobalOptions, p: Paths, env: NodeJS.ProcessEnv = process.env): StoreProtection {
  if (options.passphraseEnv === undefined) return { keyFile: p.keyFile };
  const passphrase = env[options.passphraseEnv];
  if (!passphrase) {
    throw new CliError(
      `--passphrase-env ${options.passphraseEnv}: the environment variable ${options.passphraseEnv} is not set`,
    );
  }
  return { passphrase };
}

/** Everything a command needs: the paths, the server, and (once opened) the client. */
export class Session {
  readonly paths: Paths;
  readonly server: string;
  private opened: HushClient | undefined;

  private locked = false;

  constructor(
    readonly options: GlobalOptions,
    readonly command = 'hush',
  ) {
    this.paths = paths(options);
    this.server = serverUrl(options, this.paths);
  }

  get errorContext(): ErrorContext {
    return { server: this.server, home: this.paths.home, usesPassphrase: this.options.passphraseEnv !== undefined };
  }

  /**
   * Opens the encrypted store. Only `register` may create it; every other command needs a
   * registered account and never leaves a new store or key file behind.
   */
  async open({ create = false }: { create?: boolean } = {}): Promise<HushClient> {
    if (this.opened) return this.opened;
    const storeProtection = protection(this.options, this.paths);
    if (!create && !(await SqliteKeyValueStore.exists(this.paths.store))) throw new NotRegisteredError();
    if (create) mkdirSync(this.paths.home, { recursive: true, mode: 0o700 });
    this.lock();
    let client: HushClient | undefined;
    try {
      client = await openNodeClient({
        serverUrl: this.server,
        storePath: this.paths.store,
        protection: storeProtection,
      });
      if (!create) void client.account; // NotRegisteredError when the store holds no account
    } catch (error) {
      await client?.close().catch(() => undefined);
      this.unlock();
      throw error;
    }
    this.opened = client;
    return client;
  }

  async close(): Promise<void> {
    const client = this.opened;
    this.opened = undefined;
    await client?.close().catch(() => undefined);
    this.unlock();
  }

  /**
   * One process per device: the ratchet state is read, advanced and written back per message, and
   * two processes doing that at once could both use the same message key. A lock file holds the
   * owner's pid; one left behind by a process that died is taken over.
   */
  private lock(): void {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        writeFileSync(this.paths.lock, JSON.stringify({ pid: process.pid, command: this.command }), {
          flag: 'wx',
          mode: 0o600,
        });
        this.locked = true;
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      let owner: { pid?: number; command?: string } = {};
      try {
        owner = JSON.parse(readFileSync(this.paths.lock, 'utf8')) as typeof owner;
      } catch {
        // unreadable or half-written: treat as stale
      }
      if (typeof owner.pid === 'number' && isAlive(owner.pid)) {
        throw new CliError(
          `this device is in use by another hush process (pid ${owner.pid}: hush ${owner.command ?? '?'}); ` +
            'stop it first: one process at a time keeps the encryption state consistent',
        );
      }
      try {
        unlinkSync(this.paths.lock);
      } catch {
        // someone else took it over first; try again
      }
    }
    throw new CliError(`could not take the lock ${this.paths.lock}`);
  }

  private unlock(): void {
    if (!this.locked) return;
    this.locked = false;
    try {
      unlinkSync(this.paths.lock);
    } catch {
      // already gone
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isAccountId = (text: string) => UUID.test(text);
const digitsOf = (text: string) => text.replace(/[^\d]/g, '');

/** Names for account ids and groups, and the reverse: what the user typed → an id. */
export class Directory {
  private constructor(
    private readonly self: string,
    readonly contacts: Contact[],
    readonly groups: Group[],
  ) {}

  static async load(client: HushClient): Promise<Directory> {
    return new Directory(client.account.accountId, await client.contacts(), await client.groups());
  }

  /** An account id, or the name or number of a saved contact. */
  contactId(who: string): string {
    const text = who.trim();
    if (isAccountId(text)) return text.toLowerCase();
    const lower = text.toLowerCase();
    let matches = this.contacts.filter((c) => c.name?.toLowerCase() === lower);
    if (matches.length === 0 && digitsOf(text).length >= 5) {
      matches = this.contacts.filter((c) => c.number && digitsOf(c.number) === digitsOf(text));
    }
    if (matches.length === 1) return (matches[0] as Contact).accountId;
    if (matches.length > 1) {
      throw new CliError(
        `"${who}" matches ${matches.length} contacts (${matches.map((c) => c.accountId).join(', ')}); use the account id`,
      );
    }
    if (this.groupOrUndefined(text)) throw new CliError(`"${who}" is a group: use \`hush group send\` for groups`);
    throw new UnknownContactError(who);
  }

  private groupOrUndefined(what: string): Group | undefined {
    const text = what.trim().replace(/^group:/, '');
    const lower = text.toLowerCase();
    const byId = this.groups.find((g) => g.id === lower);
    if (byId) return byId;
    const byName = this.groups.filter((g) => g.name.toLowerCase() === lower);
    const active = byName.filter((g) => g.active);
    if (active.length === 1 || byName.length === 1) return (active[0] ?? byName[0]) as Group;
    if (byName.length > 1) {
      throw new CliError(
        `"${what}" matches ${byName.length} groups (${byName.map((g) => g.id).join(', ')}); use the group id`,
      );
    }
    if (/^[0-9a-f]{6,}$/.test(lower)) {
      const byPrefix = this.groups.filter((g) => g.id.startsWith(lower));
      if (byPrefix.length === 1) return byPrefix[0] as Group;
    }
    return undefined;
  }

  /** A group by id, id prefix, `group:<id>` or name. */
  group(what: string): Group {
    const group = this.groupOrUndefined(what);
    if (!group) throw new UnknownContactError(`group:${what}`);
    return group;
  }

  /** A conversation id: `group:<id>` for a group, else the contact's account id. */
  conversation(what: string): string {
    const group = isAccountId(what.trim()) ? undefined : this.groupOrUndefined(what);
    return group ? `group:${group.id}` : this.contactId(what);
  }

  /** How to show an account: "you", a saved name, a number, or the start of the id. */
  label(accountId: string): string {
    if (accountId === this.self) return 'you';
    const contact = this.contacts.find((c) => c.accountId === accountId);
    return contact?.name ?? contact?.number ?? accountId.slice(0, 8);
  }

  conversationLabel(conversationId: string): string {
    if (!conversationId.startsWith('group:')) return this.label(conversationId);
    const id = conversationId.slice('group:'.length);
    return `#${this.groups.find((g) => g.id === id)?.name ?? id.slice(0, 8)}`;
  }

  /** Remembers a group (e.g. one created during `listen`) so its messages get its name. */
  noteGroup(group: Group): void {
    const at = this.groups.findIndex((g) => g.id === group.id);
    if (at >= 0) this.groups[at] = group;
    else this.groups.push(group);
  }
}
