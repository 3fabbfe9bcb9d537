/** Limits in the spirit of Signal-Server (architecture.md, "Delivery semantics"). */
export const MAX_MESSAGE_BYTES = 96 * 1024;
export const MAX_KEYS_PER_UPLOAD = 100;
export const MAX_DEVICES_PER_ACCOUNT = 6;
export const ENVELOPE_TTL_MS = 30 * 24 * 60 * 60 * 1000;
export const VERIFICATION_CODE_TTL_MS = 10 * 60 * 1000;
export const MAX_WRONG_CODES = 5;
/** A verified session may be turned into an account for this long after it was created. */
export const VERIFIED_SESSION_TTL_MS = 60 * 60 * 1000;
/**
 * The expiry sweep (`deleteExpired`) drops a verification session this long after its `expiresAt`
 * (when its code stopped being accepted), whatever its state. Until then a late code still gets
 * 410 `code_expired` rather than 404. Must outlast VERIFIED_SESSION_TTL_MS - VERIFICATION_CODE_TTL_MS,
 * the time a verified session can still be registered after its code expired.
 */
export const VERIFICATION_SESSION_RETENTION_MS = 24 * 60 * 60 * 1000;
export const MIN_PASSWORD_LENGTH = 20;
export const MAX_PASSWORD_LENGTH = 512;
export const MAX_FETCH_BATCH = 100;
/** Device linking: a link code and a provisioning message are kept this long. */
export const LINK_CODE_TTL_MS = 10 * 60 * 1000;
export const PROVISIONING_TTL_MS = 10 * 60 * 1000;
export const MAX_PROVISIONING_MESSAGE_BYTES = 65_536;
/** A linked device's encrypted name. */
export const MAX_DEVICE_NAME_BYTES = 256;
export const LINK_CODES_PER_ACCOUNT_PER_HOUR = 10;
/** Link attempts (PUT /v1/devices/link) per link code, over its lifetime. */
export const LINK_ATTEMPTS_PER_CODE = 10;
export const PROVISIONING_MESSAGES_PER_ACCOUNT_PER_HOUR = 60;
