import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import type * as Commands from './commands.ts';
import type { GlobalOptions, Session } from './context.ts';
import { DEFAULT_SERVER } from './defaults.ts';
import { type Output, pc, stdio } from './format.ts';

const version = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string })
  .version;

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a whole number ≥ 1');
  return n;
}

const examples = (...lines: string[]) => `\nExamples:\n${lines.map((l) => `  $ ${l}`).join('\n')}\n`;

/** Builds the `hush` program; `output` receives everything the commands print. */
export function buildProgram(output: Output = stdio, state: { session?: Session } = {}): Command {
  /**
   * Runs a command with a session built from the global options, and closes the store after. The
   * commands (and the SDK under them) load only when one runs, so `--help` answers quickly.
   */
  const action =
    (name: Exclude<keyof typeof Commands, 'default'>) =>
    async (...args: unknown[]) => {
      const [commands, { Session }] = await Promise.all([import('./commands.ts'), import('./context.ts')]);
      const command = args.at(-1) as Command;
      const label = [command.parent?.parent ? command.parent.name() : '', command.name()].filter(Boolean).join(' ');
      const session = new Session(command.optsWithGlobals() as GlobalOptions, label);
      state.session = session;
      const fn = commands[name] as (s: Session, o: Output, ...rest: unknown[]) => Promise<void>;
      try {
        await fn(session, output, ...args.slice(0, -1));
      } finally {
        await session.close();
      }
    };

  const program = new Command('hush')
    .description('Hush: end-to-end encrypted messaging from the terminal.')
    .version(version, '-V, --version')
    .option(
      '--server <url>',
      `the Hush server (default: $HUSH_SERVER, else the one you registered with, else ${DEFAULT_SERVER})`,
    )
    .option('--home <dir>', 'where this device keeps its encrypted store and key file (default: $HUSH_HOME or ~/.hush)')
    .option(
      '--passphrase-env <VAR>',
      'protect the store with the passphrase in environment variable VAR instead of a key file',
    )
    .option(
      '--json',
      'machine-readable output (whoami, chats, history, contacts, groups, devices, safety-number, listen)',
    )
    .option('--no-color', 'plain output without colors (also NO_COLOR=1)')
    .showHelpAfterError('(run with --help for usage)')
    .showSuggestionAfterError()
    .addHelpText(
      'after',
      `${examples(
        'hush register +14155550123',
        'hush contacts add bob 0b6f3c1e-5d7a-4c2e-9f1b-2a3c4d5e6f70',
        'hush send bob "hello"',
        'hush listen',
        'hush demo',
      )}\nThe server for local use: npm start (http://127.0.0.1:8080). Each --home is one device.\n`,
    );

  program
    .command('register')
    .description('verify a phone number with an SMS code and create this device’s keys and account')
    .argument('<number>', 'phone number in international format, e.g. +14155550123')
    .option('--code <code>', 'the 6-digit code from the SMS (otherwise you are asked for it)')
    .option(
      '--dev-code-file <path>',
      "read the code from a dev server's SMS log (e.g. ./data/dev-sms.log): for demos and tests",
    )
    .addHelpText(
      'after',
      examples(
        'hush register +14155550123',
        'hush register +14155550123 --dev-code-file ./data/dev-sms.log',
        'HUSH_PASS=… hush --passphrase-env HUSH_PASS --home ~/.hush-work register +14155550123',
      ),
    )
    .action(action('register'));

  program
    .command('send')
    .description('send an end-to-end encrypted text')
    .argument('<contact>', 'an account id, or a name or number saved with `hush contacts add`')
    .argument('<text>', 'the message')
    .addHelpText('after', examples('hush send bob "see you at 8"', 'hush send 0b6f3c1e-5d7a-4c2e-9f1b-2a3c4d5e6f70 hi'))
    .action(action('send'));

  program
    .command('listen')
    .description('receive live: messages, receipts, typing, safety-number changes, failures (Ctrl-C stops)')
    .option('--once', 'fetch what is waiting, then exit')
    .addOption(
      new Option('--timeout <seconds>', 'with --once: give up after this long').argParser(positiveInt).default(30),
    )
    .addHelpText('after', examples('hush listen', 'hush listen --once', 'hush listen --json'))
    .action(action('listen'));

  program
    .command('chats')
    .description('conversations on this device, newest first, with unread counts')
    .action(action('chats'));

  program
    .command('history')
    .description('the messages of a conversation (and send read receipts for it)')
    .argument('<contact-or-group>', 'an account id, a saved name or number, or a group name or id')
    .addOption(new Option('--limit <n>', 'show at most the last n messages').argParser(positiveInt).default(50))
    .option('--no-mark-read', 'do not mark the conversation read')
    .addHelpText('after', examples('hush history bob', 'hush history trio --limit 10'))
    .action(action('history'));

  const group = program
    .command('group')
    .description('group conversations (Sender Keys): create, add, remove, send, list, leave');
  group
    .command('create')
    .description('create a group; members get it and your sender key over 1:1 encrypted sessions')
    .argument('<name>', 'the group name')
    .argument('<members...>', 'account ids or saved contact names')
    .addHelpText('after', examples('hush group create trio bob carol'))
    .action(action('groupCreate'));
  group
    .command('add')
    .description('add a member to a group')
    .argument('<group>', 'group name or id')
    .argument('<member>', 'account id or saved contact name')
    .action(action('groupAdd'));
  group
    .command('remove')
    .description('remove a member; the group re-keys so they cannot read what follows')
    .argument('<group>', 'group name or id')
    .argument('<member>', 'account id or saved contact name')
    .action(action('groupRemove'));
  group
    .command('send')
    .description('send a text to everyone in a group')
    .argument('<group>', 'group name or id')
    .argument('<text>', 'the message')
    .addHelpText('after', examples('hush group send trio "dinner at 8?"'))
    .action(action('groupSend'));
  group.command('list').description('your groups and their members').action(action('groupList'));
  group
    .command('leave')
    .description('leave a group')
    .argument('<group>', 'group name or id')
    .action(action('groupLeave'));

  program
    .command('send-file')
    .description('encrypt a file on this device, upload the ciphertext, and send its key in a message')
    .argument('<contact-or-group>', 'an account id, a saved name or number, or a group')
    .argument('<path>', 'the file to send')
    .option('--caption <text>', 'a text to go with the file')
    .option('--type <mime>', 'content type (default: from the file extension)')
    .addHelpText('after', examples('hush send-file bob ./photo.jpg --caption "the view"'))
    .action(action('sendFile'));

  program
    .command('get-file')
    .description('download, check and decrypt the file of a received message')
    .argument('<message-id>', 'the id shown by `hush history` / `hush listen` (author:timestamp)')
    .option(
      '--out <path>',
      'where to save it (a file, or a directory; default: the file name in the current directory)',
    )
    .option('--force', 'overwrite an existing file')
    .action(action('getFile'));

  program
    .command('safety-number')
    .description('the 60-digit safety number and QR payload for a contact, and its trust state')
    .argument('<contact>', 'an account id, or a saved name or number')
    .addOption(new Option('--accept', "accept the contact's new identity key after it changed").conflicts('verify'))
    .option(
      '--verify <qr-payload>',
      'mark the contact verified if their QR payload (base64, from their screen) matches',
    )
    .addHelpText(
      'after',
      examples('hush safety-number bob', 'hush safety-number bob --verify CiEF…', 'hush safety-number bob --accept'),
    )
    .action(action('safetyNumber'));

  program
    .command('link')
    .description('make this device a linked device of an existing account (shows a QR code to scan)')
    .option('--name <name>', 'a name for this device, shown in `hush devices` (encrypted)')
    .addOption(
      new Option('--timeout <seconds>', 'how long to wait for the primary to scan').argParser(positiveInt).default(600),
    )
    .addHelpText(
      'after',
      examples(
        'hush --home ~/.hush-laptop link --name laptop',
        "then on the primary: hush devices add 'hush://link?…'",
      ),
    )
    .action(action('link'));

  const devices = program.command('devices').description('the devices of your account (up to 6): list, link, unlink');
  devices.command('list', { isDefault: true }).description('the devices of your account').action(action('devices'));
  devices
    .command('add')
    .description('on the primary device: link the new device showing this link / QR code')
    .argument('<link>', 'the hush://link?… shown by `hush link` on the new device')
    .action(action('devicesAdd'));
  devices
    .command('remove')
    .description('unlink a device (the primary can unlink any other; a linked device itself)')
    .argument('<device-id>', 'the device number from `hush devices`', positiveInt)
    .action(action('devicesRemove'));

  const contacts = program.command('contacts').description('names for account ids (kept in the encrypted store)');
  contacts
    .command('add')
    .description('save a name (and optionally a number) for an account id')
    .argument('<name>', 'what you want to call them, e.g. bob')
    .argument('<account-id>', 'their account id (they see it with `hush whoami`)')
    .option('--number <e164>', 'their phone number, so you can also address them by it')
    .addHelpText('after', examples('hush contacts add bob 0b6f3c1e-5d7a-4c2e-9f1b-2a3c4d5e6f70 --number +14155550124'))
    .action(action('contactsAdd'));
  contacts.command('list').description('everyone this device knows, with trust state').action(action('contactsList'));

  program
    .command('whoami')
    .description('this device: number, account id, device id, identity key, server, store')
    .action(action('whoami'));

  program
    .command('demo')
    .description('Alice and Bob on an embedded server: the ten steps of end-to-end encryption, narrated')
    .option('--keep', 'keep the temporary stores and server data and print where they are')
    .option('--pause', 'wait for Enter between steps (in a terminal)')
    .action(async (opts: { keep?: boolean; pause?: boolean }) => {
      const { demo } = await import('./demo.ts');
      await demo(output, opts);
    });

  return program;
}

/** Runs `hush` with `argv` (as process.argv); returns the exit code. Usage errors exit in commander. */
export async function run(argv: string[], output: Output = stdio): Promise<number> {
  const state: { session?: Session } = {};
  const program = buildProgram(output, state);
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (error) {
    const { describeError } = await import('./errors.ts');
    output.err(`${pc.red('hush:')} ${describeError(error, state.session?.errorContext)}`);
    if (process.env.HUSH_DEBUG && error instanceof Error && error.stack) output.err(pc.dim(error.stack));
    return 1;
  }
}
