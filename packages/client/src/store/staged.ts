import type { KeyValueBatch, KeyValueStore } from './kv.ts';

const slot = (namespace: string, key: string) => `${namespace}\u0000${key}`;

/**
 * A unit of work over the key-value store: reads see the staged writes, and nothing reaches the
 * store until `commit`, which applies every write in one atomic batch. Receiving a message stages
 * the session update, the stored message and the de-duplication mark together, so a crash can
 * never leave a ratchet advanced without the message it decrypted (or the other way round).
 */
export class StagedStore {
  private readonly writes = new Map<string, { namespace: string; key: string; value: Uint8Array | null }>();

  constructor(private readonly base: KeyValueStore) {}

  async get(namespace: string, key: string): Promise<Uint8Array | undefined> {
    const staged = this.writes.get(slot(namespace, key));
    if (staged) return staged.value ?? undefined;
    return this.base.get(namespace, key);
  }

  async list(namespace: string, prefix = ''): Promise<[string, Uint8Array][]> {
    const merged = new Map(await this.base.list(namespace, prefix));
    for (const w of this.writes.values()) {
      if (w.namespace !== namespace || !w.key.startsWith(prefix)) continue;
      if (w.value) merged.set(w.key, w.value);
      else merged.delete(w.key);
    }
    return [...merged].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  put(namespace: string, key: string, value: Uint8Array): void {
    this.writes.set(slot(namespace, key), { namespace, key, value });
  }

  delete(namespace: string, key: string): void {
    this.writes.set(slot(namespace, key), { namespace, key, value: null });
  }

  get pending(): number {
    return this.writes.size;
  }

  async commit(): Promise<void> {
    if (this.writes.size === 0) return;
    const batch: Required<KeyValueBatch> = { put: [], delete: [] };
    for (const w of this.writes.values()) {
      if (w.value) batch.put.push([w.namespace, w.key, w.value]);
      else batch.delete.push([w.namespace, w.key]);
    }
    await this.base.apply(batch);
    this.writes.clear();
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** JSON values in the store (bytes inside are base64 strings). */
export function jsonValue(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

export function parseJson<T>(bytes: Uint8Array | undefined): T | undefined {
  return bytes ? (JSON.parse(decoder.decode(bytes)) as T) : undefined;
}
