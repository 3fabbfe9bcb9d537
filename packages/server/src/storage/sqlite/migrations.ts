import type Database from 'better-sqlite3';

/**
 * The SQLite schema as an ordered list of migrations. Migration `i` (0-based) brings the database
 * to `PRAGMA user_version = i + 1`. Never edit a migration that has shipped; append a new one.
 *
 * Conventions: STRICT tables; binary fields as BLOB; times as INTEGER milliseconds since the epoch;
 * booleans as INTEGER 0/1. Keys hang off their device (ON DELETE CASCADE), devices off their
 * account, so dropping an account drops its devices and keys. Envelopes and send receipts carry no
 * foreign key (a send racing with an account re-registration must not fail on a constraint); the
 * storage deletes them explicitly when it replaces an account.
 */
export const migrations: readonly { name: string; sql: string }[] = [
  {
    name: 'initial schema',
    sql: `
      CREATE TABLE verification_sessions (
        id              TEXT    PRIMARY KEY,
        number          TEXT    NOT NULL,
        code_hash       BLOB    NOT NULL,
        created_at      INTEGER NOT NULL,
        expires_at      INTEGER NOT NULL,
        failed_attempts INTEGER NOT NULL,
        verified        INTEGER NOT NULL,
        consumed        INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX verification_sessions_created ON verification_sessions (created_at);

      CREATE TABLE rate_limits (
        key      TEXT    PRIMARY KEY,
        count    INTEGER NOT NULL,
        reset_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX rate_limits_reset ON rate_limits (reset_at);

      CREATE TABLE accounts (
        id           TEXT    PRIMARY KEY,
        number       TEXT    NOT NULL UNIQUE,
        identity_key BLOB    NOT NULL,
        name         TEXT,
        created_at   INTEGER NOT NULL
      ) STRICT;

      CREATE TABLE devices (
        account_id        TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        device_id         INTEGER NOT NULL,
        registration_id   INTEGER NOT NULL,
        password_hash     BLOB    NOT NULL,
        password_salt     BLOB    NOT NULL,
        created_at        INTEGER NOT NULL,
        push_subscription TEXT,
        PRIMARY KEY (account_id, device_id)
      ) STRICT;

      CREATE TABLE signed_prekeys (
        account_id TEXT    NOT NULL,
        device_id  INTEGER NOT NULL,
        key_id     INTEGER NOT NULL,
        public_key BLOB    NOT NULL,
        signature  BLOB    NOT NULL,
        PRIMARY KEY (account_id, device_id),
        FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
      ) STRICT;

      CREATE TABLE ec_prekeys (
        account_id TEXT    NOT NULL,
        device_id  INTEGER NOT NULL,
        key_id     INTEGER NOT NULL,
        public_key BLOB    NOT NULL,
        PRIMARY KEY (account_id, device_id, key_id),
        FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
      ) STRICT;

      CREATE TABLE kyber_prekeys (
        account_id TEXT    NOT NULL,
        device_id  INTEGER NOT NULL,
        key_id     INTEGER NOT NULL,
        public_key BLOB    NOT NULL,
        signature  BLOB    NOT NULL,
        PRIMARY KEY (account_id, device_id, key_id),
        FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
      ) STRICT;

      CREATE TABLE kyber_last_resort_prekeys (
        account_id TEXT    NOT NULL,
        device_id  INTEGER NOT NULL,
        key_id     INTEGER NOT NULL,
        public_key BLOB    NOT NULL,
        signature  BLOB    NOT NULL,
        PRIMARY KEY (account_id, device_id),
        FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
      ) STRICT;

      -- position is the queue cursor: AUTOINCREMENT so a position is never reused, even after the
      -- newest envelope was deleted, and a cursor handed out earlier never skips a later envelope.
      CREATE TABLE envelopes (
        position          INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id        TEXT    NOT NULL,
        device_id         INTEGER NOT NULL,
        guid              TEXT    NOT NULL,
        type              INTEGER NOT NULL,
        source_account_id TEXT    NOT NULL,
        source_device_id  INTEGER NOT NULL,
        timestamp         INTEGER NOT NULL,
        server_timestamp  INTEGER NOT NULL,
        content           BLOB    NOT NULL,
        expires_at        INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX envelopes_queue ON envelopes (account_id, device_id, position);
      CREATE UNIQUE INDEX envelopes_guid ON envelopes (account_id, device_id, guid);
      CREATE INDEX envelopes_expiry ON envelopes (expires_at);

      CREATE TABLE send_receipts (
        source_account_id TEXT    NOT NULL,
        source_device_id  INTEGER NOT NULL,
        message_id        TEXT    NOT NULL,
        expires_at        INTEGER NOT NULL,
        PRIMARY KEY (source_account_id, source_device_id, message_id)
      ) STRICT;
      CREATE INDEX send_receipts_expiry ON send_receipts (expires_at);

      CREATE TABLE attachments (
        id         TEXT    PRIMARY KEY,
        size       INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX attachments_expiry ON attachments (expires_at);
    `,
  },
  {
    // Linked devices: an encrypted device name, one-time link codes (only their SHA-256), and the
    // provisioning messages relayed from the primary device to a new one. Both hang off their
    // account, so re-registering a number drops them.
    name: 'device linking',
    sql: `
      ALTER TABLE devices ADD COLUMN name BLOB;

      CREATE TABLE link_codes (
        code_hash  BLOB    PRIMARY KEY,
        account_id TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX link_codes_account ON link_codes (account_id);
      CREATE INDEX link_codes_expiry ON link_codes (expires_at);

      CREATE TABLE provisioning_messages (
        address    TEXT    PRIMARY KEY,
        account_id TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        body       BLOB    NOT NULL,
        expires_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX provisioning_messages_account ON provisioning_messages (account_id);
      CREATE INDEX provisioning_messages_expiry ON provisioning_messages (expires_at);
    `,
  },
  {
    // The expiry sweep drops verification sessions by expires_at.
    name: 'verification session expiry',
    sql: `
      CREATE INDEX verification_sessions_expiry ON verification_sessions (expires_at);
    `,
  },
];

/** The schema version this code writes. */
export const SCHEMA_VERSION = migrations.length;

/**
 * Brings the database to SCHEMA_VERSION. All pending migrations and the version bump run in one
 * IMMEDIATE transaction, so a crash leaves the old version and two processes opening the same file
 * at once migrate it once. Refuses a database written by a newer version of the code.
 */
export function migrate(db: Database.Database): number {
  const run = db.transaction(() => {
    const current = db.pragma('user_version', { simple: true }) as number;
    if (current > migrations.length) {
      throw new Error(`database schema version ${current} is newer than this server's (${migrations.length})`);
    }
    for (let version = current; version < migrations.length; version++) {
      db.exec((migrations[version] as { sql: string }).sql);
    }
    if (current !== migrations.length) db.pragma(`user_version = ${migrations.length}`);
    return migrations.length - current;
  });
  return run.immediate();
}
