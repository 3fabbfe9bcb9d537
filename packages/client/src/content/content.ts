/**
 * The plaintext inside the end-to-end encryption: a `hush.content.v1.Content` protobuf
 * (proto/content.proto), versioned and padded Signal-style before it is encrypted.
 *
 * Padding: the protobuf, then 0x80, then zeros up to the next multiple of 160 bytes (there is always
 * at least the 0x80 byte). The server and anyone watching the wire see only the 160-byte bucket.
 * Unpadding takes the last non-zero byte, which must be 0x80; everything before it is the protobuf
 * (protobuf bytes may themselves end in zeros: the marker comes after them, so they are kept).
 */
import { type MessageInitShape, create, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  type Content,
  ContentSchema,
  type DataMessageSchema,
  GroupUpdate_Action,
  ReceiptMessage_Type,
  TypingMessage_Action,
} from './gen/content_pb.ts';

export * from './gen/content_pb.ts';

/** The major version this client writes and the only one it reads. */
export const CONTENT_VERSION = 1;
/** Padded plaintexts are a multiple of this many bytes. */
export const CONTENT_PADDING_BLOCK = 160;
const PADDING_MARKER = 0x80;

export type ContentErrorReason =
  /** The padding is missing or malformed (no 0x80 marker as the last non-zero byte, or empty input). */
  | 'padding'
  /** The bytes inside the padding are not a valid Content protobuf. */
  | 'malformed'
  /** `Content.version` is 0 (unset) or a major version this client does not know. */
  | 'version';

/** Any failure to decode content; `reason` says which. Decoding changes no state. */
export class ContentError extends Error {
  constructor(
    readonly reason: ContentErrorReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ContentError';
  }
}

/** Appends 0x80 and zeros up to the next multiple of `CONTENT_PADDING_BLOCK`. */
export function padContent(bytes: Uint8Array): Uint8Array {
  const padded = new Uint8Array(Math.ceil((bytes.length + 1) / CONTENT_PADDING_BLOCK) * CONTENT_PADDING_BLOCK);
  padded.set(bytes);
  padded[bytes.length] = PADDING_MARKER;
  return padded;
}

/**
 * Strips the padding: the last non-zero byte must be 0x80. Returns a view into `padded`.
 * The length is not required to be a multiple of 160 (be lenient in what we accept from other
 * clients' padding choices; the marker is what matters).
 */
export function unpadContent(padded: Uint8Array): Uint8Array {
  let i = padded.length - 1;
  while (i >= 0 && padded[i] === 0) i--;
  if (i < 0) throw new ContentError('padding', 'content padding: no 0x80 marker (empty or all zeros)');
  if (padded[i] !== PADDING_MARKER)
    throw new ContentError('padding', `content padding: last non-zero byte is 0x${padded[i]?.toString(16)}, not 0x80`);
  return padded.subarray(0, i);
}

/**
 * Serializes and pads `content`. An unset `version` (0) is written as `CONTENT_VERSION`; any other
 * value is written as given.
 */
export function encodeContent(content: Content): Uint8Array {
  const bytes =
    content.version === 0
      ? toBinary(ContentSchema, { ...content, version: CONTENT_VERSION })
      : toBinary(ContentSchema, content);
  return padContent(bytes);
}

/**
 * Unpads and parses decrypted content. Throws `ContentError` on bad padding, a malformed protobuf or
 * an unknown major version.
 *
 * Every uint64 field (timestamps, ids, sizes) of the result is at most `Number.MAX_SAFE_INTEGER`, so
 * `Number(x)` on it is exact (larger values are rejected as 'malformed').
 *
 * `body.case` is `undefined` when the sender used a kind added in a later minor revision of the
 * schema (or sent none): callers should ignore such content (and still acknowledge the envelope).
 */
export function decodeContent(padded: Uint8Array): Content {
  const bytes = unpadContent(padded);
  let content: Content;
  try {
    // A copy: the parsed bytes fields are views into the buffer, which must not be the caller's.
    content = fromBinary(ContentSchema, bytes.slice());
  } catch (cause) {
    throw new ContentError('malformed', `content: not a valid protobuf (${String(cause)})`, { cause });
  }
  if (content.version !== CONTENT_VERSION)
    throw new ContentError(
      'version',
      content.version === 0 ? 'content: no version' : `content: unknown version ${content.version}`,
    );
  if (!uint64sAreSafe(content))
    throw new ContentError('malformed', 'content: a timestamp or size exceeds Number.MAX_SAFE_INTEGER');
  return content;
}

/**
 * True if every bigint (every uint64 field: timestamps, ids, sizes) in the decoded message is at most
 * 2^53 - 1. `decodeContent` guarantees this, so `Number(x)` on those fields is exact.
 */
function uint64sAreSafe(value: unknown): boolean {
  if (typeof value === 'bigint') return value <= MAX_SAFE;
  if (typeof value !== 'object' || value === null || value instanceof Uint8Array) return true;
  for (const v of Array.isArray(value) ? value : Object.values(value)) if (!uint64sAreSafe(v)) return false;
  return true;
}
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

// ---- builders for the common contents -------------------------------------------------------------
//
// Builders take timestamps and sizes as `number` (Date.now(), envelope JSON) or `bigint` (the uint64
// fields of the generated types); they must be non-negative integers.

export type Uint64 = number | bigint;

function u64(value: Uint64): bigint {
  const v = BigInt(value); // throws a RangeError on a fraction, NaN or Infinity
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new RangeError(`not a uint64: ${value}`);
  return v;
}

export interface GroupContextInit {
  id: Uint8Array;
  revision: number;
}

export interface QuoteInit {
  /** The quoted message's timestamp (its id, with `author`). */
  id: Uint64;
  author: string;
  /** A snippet of the quoted text. */
  text: string;
}

export interface AttachmentPointerInit {
  /** The server's attachment id. */
  id: string;
  /** 64 bytes: AES-256 key || HMAC-SHA256 key (from `encryptAttachment`). */
  key: Uint8Array;
  /** SHA-256 of the uploaded blob (from `encryptAttachment`). */
  digest: Uint8Array;
  /** Plaintext size in bytes. */
  size: Uint64;
  contentType?: string;
  fileName?: string;
}

function dataContent(value: MessageInitShape<typeof DataMessageSchema>): Content {
  return create(ContentSchema, { version: CONTENT_VERSION, body: { case: 'dataMessage', value } });
}

export interface TextContentInit {
  /** Sent time in ms; with the sender's account id, the message id. */
  timestamp: Uint64;
  body: string;
  quote?: QuoteInit;
  attachments?: readonly AttachmentPointerInit[];
  group?: GroupContextInit;
  /** The conversation's disappearing-messages timer in seconds (0 or absent: off). */
  expireTimer?: number;
}

/** A text message, optionally quoting another, with attachments, in a group, disappearing. */
export function textContent(init: TextContentInit): Content {
  return dataContent({
    timestamp: u64(init.timestamp),
    body: init.body,
    quote: init.quote && { id: u64(init.quote.id), author: init.quote.author, text: init.quote.text },
    attachments: init.attachments?.map((a) => ({
      id: a.id,
      key: a.key,
      digest: a.digest,
      size: u64(a.size),
      contentType: a.contentType ?? '',
      fileName: a.fileName ?? '',
    })),
    group: init.group && { id: init.group.id, revision: init.group.revision },
    expireTimer: init.expireTimer ?? 0,
  });
}

export interface ReactionContentInit {
  timestamp: Uint64;
  emoji: string;
  targetAuthor: string;
  targetTimestamp: Uint64;
  /** true removes this sender's earlier `emoji` reaction. */
  remove?: boolean;
  group?: GroupContextInit;
  expireTimer?: number;
}

export function reactionContent(init: ReactionContentInit): Content {
  return dataContent({
    timestamp: u64(init.timestamp),
    reaction: {
      emoji: init.emoji,
      remove: init.remove ?? false,
      targetAuthor: init.targetAuthor,
      targetTimestamp: u64(init.targetTimestamp),
    },
    group: init.group && { id: init.group.id, revision: init.group.revision },
    expireTimer: init.expireTimer ?? 0,
  });
}

/** Delivery or read receipts for messages (by timestamp) that the receipt's recipient sent. */
export function receiptContent(type: 'delivery' | 'read', timestamps: readonly Uint64[]): Content {
  return create(ContentSchema, {
    version: CONTENT_VERSION,
    body: {
      case: 'receiptMessage',
      value: {
        type: type === 'delivery' ? ReceiptMessage_Type.DELIVERY : ReceiptMessage_Type.READ,
        timestamps: timestamps.map(u64),
      },
    },
  });
}

/** Typing started / stopped; `groupId` for a group conversation. */
export function typingContent(action: 'started' | 'stopped', timestamp: Uint64, groupId?: Uint8Array): Content {
  return create(ContentSchema, {
    version: CONTENT_VERSION,
    body: {
      case: 'typingMessage',
      value: {
        timestamp: u64(timestamp),
        action: action === 'started' ? TypingMessage_Action.STARTED : TypingMessage_Action.STOPPED,
        groupId: groupId ?? new Uint8Array(0),
      },
    },
  });
}

export type GroupAction = 'create' | 'add' | 'remove' | 'leave';

export interface GroupUpdateContentInit {
  timestamp: Uint64;
  groupId: Uint8Array;
  action: GroupAction;
  revision: number;
  name: string;
  /** The complete membership after the change (account ids). */
  members: readonly string[];
  /** The sender's serialized SenderKeyDistributionMessage, when it has (re)keyed. */
  senderKeyDistribution?: Uint8Array;
}

const GROUP_ACTIONS: Record<GroupAction, GroupUpdate_Action> = {
  create: GroupUpdate_Action.CREATE,
  add: GroupUpdate_Action.ADD,
  remove: GroupUpdate_Action.REMOVE,
  leave: GroupUpdate_Action.LEAVE,
};

export function groupUpdateContent(init: GroupUpdateContentInit): Content {
  return create(ContentSchema, {
    version: CONTENT_VERSION,
    body: {
      case: 'groupUpdate',
      value: {
        timestamp: u64(init.timestamp),
        groupId: init.groupId,
        action: GROUP_ACTIONS[init.action],
        revision: init.revision,
        name: init.name,
        members: [...init.members],
        senderKeyDistribution: init.senderKeyDistribution ?? new Uint8Array(0),
      },
    },
  });
}

/** Sets a conversation's disappearing-messages timer (seconds; 0 = off). */
export function expirationTimerContent(timestamp: Uint64, expireTimer: number, group?: GroupContextInit): Content {
  return create(ContentSchema, {
    version: CONTENT_VERSION,
    body: {
      case: 'expirationTimerUpdate',
      value: {
        timestamp: u64(timestamp),
        expireTimer,
        group: group && { id: group.id, revision: group.revision },
      },
    },
  });
}

export interface RetryRequestContentInit {
  /** The failed envelope's timestamp. */
  originalTimestamp: Uint64;
  /** The failed envelope's ciphertext type (libsignal CiphertextMessageType). */
  originalType: number;
  /** The device the failed envelope came from. */
  originalDeviceId: number;
  /** The failed SignalMessage's sender ratchet key, if it could be parsed. */
  ratchetKey?: Uint8Array;
}

/** Session repair: asks the sender of an undecryptable envelope to re-send it. */
export function retryRequestContent(init: RetryRequestContentInit): Content {
  return create(ContentSchema, {
    version: CONTENT_VERSION,
    body: {
      case: 'retryRequest',
      value: {
        originalTimestamp: u64(init.originalTimestamp),
        originalType: init.originalType,
        originalDeviceId: init.originalDeviceId,
        ratchetKey: init.ratchetKey ?? new Uint8Array(0),
      },
    },
  });
}

/** A sender's serialized SenderKeyDistributionMessage for a group, sent pairwise. */
export function senderKeyDistributionContent(groupId: Uint8Array, distribution: Uint8Array): Content {
  return create(ContentSchema, {
    version: CONTENT_VERSION,
    body: { case: 'senderKeyDistribution', value: { groupId, distribution } },
  });
}

/**
 * To our own other devices: a message we sent to `destination` from this device (1:1 data messages
 * and timer changes), so every device of the account shows the same conversation.
 */
export function syncSentContent(destination: string, sent: Content): Content {
  const body = sent.body;
  return create(ContentSchema, {
    version: CONTENT_VERSION,
    body: {
      case: 'syncMessage',
      value: {
        sent: {
          destination,
          ...(body.case === 'dataMessage' ? { message: body.value } : {}),
          ...(body.case === 'expirationTimerUpdate' ? { expirationTimerUpdate: body.value } : {}),
        },
      },
    },
  });
}

/** To our own other devices: messages the user read here. */
export function syncReadContent(read: readonly { author: string; timestamp: Uint64 }[]): Content {
  return create(ContentSchema, {
    version: CONTENT_VERSION,
    body: {
      case: 'syncMessage',
      value: { read: read.map((r) => ({ author: r.author, timestamp: u64(r.timestamp) })) },
    },
  });
}

/** A newly linked device's first message to the account's other devices (they set up sessions with it). */
export function deviceLinkedContent(): Content {
  return create(ContentSchema, {
    version: CONTENT_VERSION,
    body: { case: 'syncMessage', value: { deviceLinked: true } },
  });
}
