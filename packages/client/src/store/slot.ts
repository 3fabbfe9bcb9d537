/*
 * The slot encoding every KeyValueStore adapter binds its ciphertexts to, in platform-neutral code
 * (no Buffer): browsers and React Native use it; the Node adapter has the same encoding on Buffers.
 *
 *   "hush-kv-v1\0" ‖ u32be(len(namespace)) ‖ namespace ‖ u32be(len(key)) ‖ key    (UTF-8)
 *
 * A value sealed for one slot fails authentication in any other slot (or namespace).
 */

const SLOT_AAD_LABEL = new TextEncoder().encode('hush-kv-v1\0');

/** Lone surrogates would be replaced by U+FFFD on the way to UTF-8, so two identifiers would share a slot. */
const LONE_SURROGATE = /\p{Cs}/u;

/** Throws unless `value` is a well-formed string (no lone surrogates). */
export function checkIdentifier(what: string, value: unknown): asserts value is string {
  if (typeof value !== 'string') throw new TypeError(`${what} must be a string`);
  if (LONE_SURROGATE.test(value)) throw new TypeError(`${what} must be well-formed UTF-16 (no lone surrogates)`);
}

/** Throws unless `value` is a Uint8Array. */
export function checkValue(value: unknown): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) throw new TypeError('value must be a Uint8Array');
}

/** The associated data that binds a sealed value to its namespace and key. */
export function slotAad(namespace: string, key: string): Uint8Array<ArrayBuffer> {
  const encoder = new TextEncoder();
  const ns = encoder.encode(namespace);
  const k = encoder.encode(key);
  const out = new Uint8Array(SLOT_AAD_LABEL.length + 4 + ns.length + 4 + k.length);
  const view = new DataView(out.buffer);
  let at = 0;
  out.set(SLOT_AAD_LABEL, at);
  at += SLOT_AAD_LABEL.length;
  view.setUint32(at, ns.length);
  at += 4;
  out.set(ns, at);
  at += ns.length;
  view.setUint32(at, k.length);
  at += 4;
  out.set(k, at);
  return out;
}

/**
 * The smallest string above every string that starts with `prefix`, in JavaScript's string order
 * (UTF-16 code units, which is also IndexedDB's order); undefined when there is none (empty
 * prefix, or only U+FFFF code units).
 */
export function prefixEnd(prefix: string): string | undefined {
  for (let i = prefix.length - 1; i >= 0; i--) {
    const unit = prefix.charCodeAt(i);
    if (unit < 0xffff) return prefix.slice(0, i) + String.fromCharCode(unit + 1);
  }
  return undefined;
}

/** Thrown when a stored value fails authentication: it was modified, moved to another slot, or is corrupted. */
export class StoreValueCorruptedError extends Error {
  constructor(namespace: string, key: string) {
    super(
      `the stored value at ${JSON.stringify(namespace)}/${JSON.stringify(key)} failed authentication: ` +
        'the store was modified (e.g. a value moved between slots) or is corrupted',
    );
    this.name = 'StoreCorruptedError';
  }
}
