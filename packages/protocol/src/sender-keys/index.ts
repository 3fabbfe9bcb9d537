export {
  MAX_FORWARD_JUMPS,
  createSenderKeyDistributionMessage,
  groupDecrypt,
  groupEncrypt,
  processSenderKeyDistributionMessage,
} from './group-cipher.ts';
export { SENDER_KEY_MESSAGE_VERSION, SenderKeyDistributionMessage, SenderKeyMessage } from './messages.ts';
export { MAX_SENDER_KEY_STATES, MAX_SKIPPED_MESSAGE_KEYS, SenderKeyRecord } from './sender-key-record.ts';
