import { base64Decode, base64Encode } from '@bufbuild/protobuf/wire';

/** Standard base64 for JSON fields; the same in Node, browsers and React Native (no Buffer). */
export const toBase64 = (bytes: Uint8Array): string => base64Encode(bytes, 'std');
export const fromBase64 = (text: string): Uint8Array => base64Decode(text);
