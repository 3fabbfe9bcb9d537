import type { StagedStore } from './store/staged.ts';
import { jsonValue, parseJson } from './store/staged.ts';

/*
 * Conversations and messages in the encrypted key-value store. Message keys sort by time within a
 * conversation: `conversationId/timestamp/author`. An index maps a message id to its key, and an
 * expiry index (`expiresAt/key`) lets disappearing messages be swept in order.
 */
const NS = {
  messages: 'messages',
  index: 'message-index',
  expiring: 'expiring',
  conversations: 'conversations',
} as const;

export interface StoredAttachment {
  id: string;
  /** base64 of the 64-byte attachment key. */
  key: string;
  /** base64 of the SHA-256 digest of the encrypted blob. */
  digest: string;
  size: number;
  contentType: string;
  fileName: string;
}

export interface StoredMessage {
  /** `${author}:${timestamp}`: the author's account id and the author's send time. */
  id: string;
  conversationId: string;
  author: string;
  authorDevice: number;
  timestamp: number;
  receivedAt: number;
  direction: 'in' | 'out';
  /** 'system' messages are the client telling the user what happened (identity change, failed decrypt). */
  kind: 'text' | 'system';
  body: string;
  quote?: { id: number; author: string; text: string };
  reactions?: { author: string; emoji: string }[];
  attachments?: StoredAttachment[];
  status: 'sending' | 'sent' | 'delivered' | 'read' | 'failed' | 'received';
  /** Disappearing messages: deleted on both sides at this time (ms). */
  expiresAt?: number;
}

export interface Conversation {
  /** The other account's id, or `group:<hex id>`. */
  id: string;
  kind: 'direct' | 'group';
  lastMessageAt: number;
  /** Disappearing-messages timer in seconds (0: off). */
  expireTimer: number;
  unread: number;
}

export const messageId = (author: string, timestamp: number) => `${author}:${timestamp}`;
const messageKey = (m: Pick<StoredMessage, 'conversationId' | 'timestamp' | 'author'>) =>
  `${m.conversationId}/${m.timestamp.toString().padStart(15, '0')}/${m.author}`;
const expiryKey = (expiresAt: number, key: string) => `${expiresAt.toString().padStart(15, '0')}/${key}`;

export async function getConversation(unit: StagedStore, id: string): Promise<Conversation | undefined> {
  return parseJson<Conversation>(await unit.get(NS.conversations, id));
}

export function putConversation(unit: StagedStore, conversation: Conversation): void {
  unit.put(NS.conversations, conversation.id, jsonValue(conversation));
}

export async function listConversations(unit: StagedStore): Promise<Conversation[]> {
  const all = (await unit.list(NS.conversations)).map(([, v]) => parseJson<Conversation>(v) as Conversation);
  return all.sort((a, b) => b.lastMessageAt - a.lastMessageAt);
}

export async function getMessage(unit: StagedStore, id: string): Promise<StoredMessage | undefined> {
  const key = parseJson<string>(await unit.get(NS.index, id));
  return key ? parseJson<StoredMessage>(await unit.get(NS.messages, key)) : undefined;
}

/** Inserts or replaces a message and keeps the conversation summary current. */
export async function putMessage(unit: StagedStore, message: StoredMessage): Promise<void> {
  const key = messageKey(message);
  const previous = await getMessage(unit, message.id);
  unit.put(NS.messages, key, jsonValue(message));
  unit.put(NS.index, message.id, jsonValue(key));
  if (previous?.expiresAt && previous.expiresAt !== message.expiresAt)
    unit.delete(NS.expiring, expiryKey(previous.expiresAt, key));
  if (message.expiresAt) unit.put(NS.expiring, expiryKey(message.expiresAt, key), jsonValue(message.id));
  if (!previous) {
    const conversation = (await getConversation(unit, message.conversationId)) ?? {
      id: message.conversationId,
      kind: message.conversationId.startsWith('group:') ? 'group' : 'direct',
      lastMessageAt: 0,
      expireTimer: 0,
      unread: 0,
    };
    putConversation(unit, {
      ...conversation,
      lastMessageAt: Math.max(conversation.lastMessageAt, message.timestamp),
      unread: conversation.unread + (message.direction === 'in' && message.kind === 'text' ? 1 : 0),
    });
  }
}

export async function listMessages(unit: StagedStore, conversationId: string, limit = 100): Promise<StoredMessage[]> {
  const entries = await unit.list(NS.messages, `${conversationId}/`);
  return entries.slice(-limit).map(([, v]) => parseJson<StoredMessage>(v) as StoredMessage);
}

/** Removes every message whose disappearing timer ran out; returns their ids. */
export async function deleteExpiredMessages(unit: StagedStore, now: number): Promise<string[]> {
  const removed: string[] = [];
  for (const [slotKey, value] of await unit.list(NS.expiring)) {
    const expiresAt = Number(slotKey.slice(0, slotKey.indexOf('/')));
    if (expiresAt > now) break;
    const id = parseJson<string>(value) as string;
    const key = slotKey.slice(slotKey.indexOf('/') + 1);
    unit.delete(NS.expiring, slotKey);
    unit.delete(NS.messages, key);
    unit.delete(NS.index, id);
    removed.push(id);
  }
  return removed;
}
