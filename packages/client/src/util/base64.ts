import { base64Decode, base64Encode } from '@bufbuild/protobuf/wire';

/** Standard base64 for JSON fields; the same in Node, browsers and React Native (no Buffer). */
export const toBase64 = (bytes: Uint8Array): string => base64Encode(bytes, 'std');
export const fromBase64 = (text: string): Uint8Array => base64Decode(text);
/** URL-safe base64 without padding (RFC 4648 §5), for links and ids in URLs. */
export const toBase64Url = (bytes: Uint8Array): string => base64Encode(bytes, 'url');
/** Reads URL-safe or standard base64, with or without padding. */
export const fromBase64Url = (text: string): Uint8Array => base64Decode(text);
