export { type AccountRecord, MIN_SERVER_KEYS, TARGET_SERVER_KEYS } from './account.ts';
export {
  type ClientEvent,
  type Group,
  HushClient,
  type HushClientOptions,
  NotRegisteredError,
  UnknownContactError,
} from './client.ts';
export type { Conversation, StoredAttachment, StoredMessage } from './messages-store.ts';
export type { KeyValueBatch, KeyValueStore } from './store/kv.ts';
export { StoreLockedError } from './store/kv.ts';
export type { Contact } from './store/protocol-stores.ts';
export { StoreValueCorruptedError, checkIdentifier, checkValue, prefixEnd, slotAad } from './store/slot.ts';
export { ApiError, ServerUnreachableError } from './transport/http-api.ts';
export type { SocketFactory, WebSocketLike } from './transport/socket.ts';
