/*
 * What the Hush client needs from the platform and Hermes may lack. Browsers have all of it; on
 * React Native, `react-native-get-random-values` (imported first in index.ts) supplies
 * crypto.getRandomValues, and this file adds the rest where missing.
 */

type CryptoLike = { getRandomValues<T extends ArrayBufferView>(array: T): T; randomUUID?: () => string };

const cryptoObject = (globalThis as { crypto?: CryptoLike }).crypto;

// crypto.randomUUID (client.ts uses it for group distribution ids): RFC 9562 version 4.
if (cryptoObject && typeof cryptoObject.randomUUID !== 'function') {
  cryptoObject.randomUUID = () => {
    const b = cryptoObject.getRandomValues(new Uint8Array(16));
    b[6] = ((b[6] ?? 0) & 0x0f) | 0x40;
    b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  };
}

// TextDecoder (UTF-8 only), for engines that ship TextEncoder alone.
if (typeof (globalThis as { TextDecoder?: unknown }).TextDecoder === 'undefined') {
  class Utf8Decoder {
    readonly encoding = 'utf-8';
    readonly fatal: boolean;
    readonly ignoreBOM: boolean;
    constructor(label = 'utf-8', options: { fatal?: boolean; ignoreBOM?: boolean } = {}) {
      if (!/^utf-?8$/i.test(label)) throw new RangeError(`unsupported encoding ${label}`);
      this.fatal = options.fatal ?? false;
      this.ignoreBOM = options.ignoreBOM ?? false;
    }
    decode(input?: ArrayBuffer | ArrayBufferView): string {
      if (!input) return '';
      const bytes =
        input instanceof ArrayBuffer
          ? new Uint8Array(input)
          : new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
      let out = '';
      let i = 0;
      if (!this.ignoreBOM && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) i = 3;
      const bad = () => {
        if (this.fatal) throw new TypeError('the encoded data was not valid UTF-8');
        return 0xfffd;
      };
      while (i < bytes.length) {
        const b0 = bytes[i++] as number;
        let cp: number;
        if (b0 < 0x80) cp = b0;
        else {
          const extra = b0 >= 0xf0 && b0 < 0xf5 ? 3 : b0 >= 0xe0 ? 2 : b0 >= 0xc2 ? 1 : -1;
          if (extra < 0 || b0 >= 0xf5) {
            cp = bad();
          } else {
            cp = b0 & (0x3f >> extra);
            let ok = true;
            for (let k = 0; k < extra; k++) {
              const b = bytes[i];
              if (b === undefined || (b & 0xc0) !== 0x80) {
                ok = false;
                break;
              }
              cp = (cp << 6) | (b & 0x3f);
              i++;
            }
            const min = [0, 0x80, 0x800, 0x10000][extra] as number;
            if (!ok || cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) cp = bad();
          }
        }
        out += String.fromCodePoint(cp);
      }
      return out;
    }
  }
  (globalThis as { TextDecoder?: unknown }).TextDecoder = Utf8Decoder;
}
