/**
 * The client's storage port: a small encrypted key-value store with atomic batches. Everything the
 * client keeps (protocol state, account, contacts, conversations, outbox) is built on it in
 * platform-neutral code, so a platform only has to supply this: SQLite on Node, expo-sqlite on
 * React Native, IndexedDB on the web.
 *
 * Implementations encrypt every value at rest (AES-256-GCM under the device's storage key, with the
 * namespace and key as associated data so a value cannot be moved to another slot). Namespaces and
 * keys are identifiers (account ids, message ids, counters), never message text or key material.
 */
export interface KeyValueStore {
  get(namespace: string, key: string): Promise<Uint8Array | undefined>;
  /** Entries of a namespace whose key starts with `prefix`, in ascending key order. */
  list(namespace: string, prefix?: string): Promise<[key: string, value: Uint8Array][]>;
  /** Applies every put and delete, or none of them (crash-safe). */
  apply(batch: KeyValueBatch): Promise<void>;
  close(): Promise<void>;
}

export interface KeyValueBatch {
  put?: [namespace: string, key: string, value: Uint8Array][];
  delete?: [namespace: string, key: string][];
}

/** Raised when the store cannot be opened with the given passphrase or key file. */
export class StoreLockedError extends Error {
  constructor(message = 'the local store is locked: wrong passphrase or key file') {
    super(message);
    this.name = 'StoreLockedError';
  }
}
