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

/*
 * Rate limits on key fetches and sends (architecture.md: "rate limits on verification, sends and
 * key fetches"). The counts are configurable (standalone/config.ts); the windows are fixed.
 */
/** Window of the per-(requesting account, target account) key-fetch limit. */
export const KEY_FETCH_TARGET_WINDOW_MS = 10 * 60 * 1000;
/** Window of the per-requesting-account key-fetch limit. */
export const KEY_FETCH_ACCOUNT_WINDOW_MS = 60 * 60 * 1000;
/** Window of the per-device send limit. */
export const SEND_WINDOW_MS = 60 * 1000;

/**
 * Defaults that a real client never reaches. A client fetches a target's bundles once per session
 * set-up, again after a 409/410 or a session repair, and once per member when it starts a group (a
 * multi-recipient send reaches up to 1,000 accounts, so the total allows a group that large twice
 * over): 30 fetches of one target in 10 minutes are a drain attempt, not a client.
 */
export const DEFAULT_KEY_FETCH_LIMITS = { perTargetPer10Minutes: 30, perAccountPerHour: 2_000 } as const;
/**
 * 60,000 envelopes per device per minute, 1,000/s sustained: far beyond a human (and above what
 * the server benchmark's devices send, ~70/s each at the server's full load), while a flood from
 * one device is held to a fraction of the server's throughput. At least 6,000, the most one
 * multi-recipient send can fan out to (1,000 accounts × 6 devices), or such a send could never pass.
 */
export const DEFAULT_SEND_LIMITS = { envelopesPerDevicePerMinute: 60_000 } as const;
