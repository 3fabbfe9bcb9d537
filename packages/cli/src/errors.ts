import {
  ApiError,
  NotRegisteredError,
  ServerUnreachableError,
  StoreLockedError,
  UnknownContactError,
} from '@hush/client';

/** A mistake the user can fix, reported as one line without a stack trace. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** What the error means for the person at the terminal, and what to do about it. */
export interface ErrorContext {
  server?: string;
  home?: string;
  usesPassphrase?: boolean;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** One clear message (no stack) for every error a user can cause; other errors keep their message. */
export function describeError(error: unknown, context: ErrorContext = {}): string {
  if (error instanceof CliError) return error.message;
  if (error instanceof ServerUnreachableError) {
    return `cannot reach the Hush server at ${error.url}; is it running? (npm start)`;
  }
  if (error instanceof StoreLockedError) {
    const where = context.home ? ` in ${context.home}` : '';
    if (/protected by a passphrase/.test(error.message)) {
      return `the local store${where} is protected by a passphrase: pass --passphrase-env <VAR> with the passphrase in $VAR`;
    }
    if (/protected by a key file/.test(error.message)) {
      return `the local store${where} is protected by its key file, not a passphrase: leave out --passphrase-env`;
    }
    return context.usesPassphrase
      ? `cannot unlock the local store${where}: wrong passphrase`
      : `cannot unlock the local store${where}: wrong or missing key file (store.key)`;
  }
  if (error instanceof NotRegisteredError) {
    const where = context.home ? ` (home ${context.home})` : '';
    return `not registered on this device${where}: run \`hush register <number>\` first`;
  }
  if (error instanceof UnknownContactError) {
    if (error.who.startsWith('group:'))
      return `unknown group: ${error.who.slice('group:'.length)} (see \`hush group list\`)`;
    if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(error.who)) {
      return `unknown contact: the server at ${context.server ?? 'this address'} has no account ${error.who}`;
    }
    return `unknown contact: ${error.who}. Use an account id, or save a name first: hush contacts add <name> <account-id>`;
  }
  if (error instanceof Error && error.name === 'UntrustedIdentityError') {
    const who = (error as Error & { address?: string }).address?.split('.')[0] ?? 'this contact';
    return `the safety number with ${who} changed, so nothing was sent. Compare it (hush safety-number ${who}) and accept the new key with --accept`;
  }
  if (error instanceof ApiError) return describeApiError(error, context);
  if (error instanceof Error) return error.message;
  return String(error);
}

function describeApiError(error: ApiError, context: ErrorContext): string {
  const retry =
    error.retryAfterSeconds !== undefined ? `; try again in ${plural(error.retryAfterSeconds, 'second')}` : '';
  switch (error.code) {
    case 'invalid_code': {
      const left = error.details.attemptsLeft;
      return `wrong verification code${typeof left === 'number' ? ` (${plural(left, 'attempt')} left)` : ''}`;
    }
    case 'code_expired':
      return 'the verification code has expired: run `hush register <number>` again for a new one';
    case 'invalid_number':
      return `${error.message}`;
    case 'rate_limited':
      return `the server refused: ${error.message.replace(/; retry after \d+ s$/, '')}${retry}`;
    case 'unauthorized':
      return `the server at ${context.server ?? 'this address'} does not accept this device's credentials (was the account registered again elsewhere, or is this the wrong --server?)`;
    case 'payload_too_large':
      return `too large for the server: ${error.message}`;
    default:
      if (error.status === 429) return `the server is rate limiting this device${retry}`;
      return `the server answered ${error.status} ${error.code}: ${error.message}`;
  }
}
