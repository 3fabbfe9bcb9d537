import type { HushClient, StoredMessage } from '@hush/client';
import { useEffect, useRef, useState } from 'react';
import { FlatList, KeyboardAvoidingView, Platform, StyleSheet, Text, TextInput, View } from 'react-native';
import { useClientData } from '../hooks';
import { Button, ErrorText, Header, colors, errorMessage, styles as ui } from '../ui';
import { displayName } from './Chats';

const STATUS: Record<StoredMessage['status'], { tick: string; label: string }> = {
  sending: { tick: '◷', label: 'Sending' },
  sent: { tick: '✓', label: 'Sent' },
  delivered: { tick: '✓✓', label: 'Delivered' },
  read: { tick: '✓✓', label: 'Read' },
  failed: { tick: '!', label: 'Not sent' },
  received: { tick: '', label: '' },
};

function clock(ms: number): string {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function Bubble({ message }: { message: StoredMessage }) {
  if (message.kind === 'system') {
    return (
      <Text style={[ui.muted, styles.system]} accessibilityRole="text">
        {message.body}
      </Text>
    );
  }
  const out = message.direction === 'out';
  const status = STATUS[message.status];
  const label = `${out ? 'You' : 'They'} at ${clock(message.timestamp)}: ${message.body}${out ? `. ${status.label}` : ''}`;
  return (
    <View
      testID={`message-${message.id}`}
      accessible
      accessibilityLabel={label}
      style={[styles.bubble, out ? styles.outgoing : styles.incoming]}
    >
      <Text style={[styles.text, out && styles.outgoingText]}>{message.body}</Text>
      <View style={styles.meta}>
        <Text style={[styles.time, out && styles.outgoingMeta]}>{clock(message.timestamp)}</Text>
        {out ? (
          <Text
            testID={`status-${message.id}`}
            accessibilityLabel={status.label}
            style={[styles.tick, styles.outgoingMeta, message.status === 'read' && styles.readTick]}
          >
            {status.tick}
          </Text>
        ) : null}
      </View>
    </View>
  );
}

/** One conversation: messages with status ticks, live over the client's socket, and a composer. */
export function ConversationScreen(props: { client: HushClient; conversationId: string; onBack: () => void }) {
  const { client, conversationId } = props;
  const [title, setTitle] = useState(conversationId);
  const { data: messages, reload } = useClientData(
    client,
    () => client.history(conversationId, 200),
    (e) =>
      ((e.type === 'message' || e.type === 'message-updated') && e.message.conversationId === conversationId) ||
      e.type === 'expired',
  );
  const [draft, setDraft] = useState('');
  const [sending, setSending] = useState(0);
  const [error, setError] = useState('');
  const list = useRef<FlatList<StoredMessage>>(null);

  useEffect(() => {
    client.contact(conversationId).then(
      (c) => setTitle(displayName(c, conversationId)),
      () => undefined,
    );
  }, [client, conversationId]);

  // Everything shown here is read: clear the unread count and send read receipts.
  const unread = (messages ?? []).some((m) => m.direction === 'in' && m.status === 'received');
  useEffect(() => {
    if (unread) client.markRead(conversationId).catch(() => undefined);
  }, [client, conversationId, unread]);

  const send = async () => {
    const body = draft.trim();
    if (!body) return;
    setDraft('');
    setError('');
    setSending((n) => n + 1);
    // The message is stored (status "sending") before it goes out: show it at once.
    const sent = client.sendText(conversationId, body);
    setTimeout(reload, 30);
    try {
      await sent;
    } catch (e) {
      setError(errorMessage(e));
    } finally {
      setSending((n) => n - 1);
      reload();
    }
  };

  return (
    <KeyboardAvoidingView style={ui.screen} behavior={Platform.OS === 'ios' ? 'padding' : undefined}>
      <Header
        title={title}
        left={
          <Button
            testID="conversation-back"
            kind="secondary"
            title="Back"
            onPress={props.onBack}
            style={{ minHeight: 40 }}
          />
        }
      />
      <FlatList
        ref={list}
        testID="conversation-messages"
        data={messages ?? []}
        keyExtractor={(m) => m.id}
        renderItem={({ item }) => <Bubble message={item} />}
        contentContainerStyle={styles.messages}
        onContentSizeChange={() => list.current?.scrollToEnd({ animated: false })}
        ListEmptyComponent={
          messages ? (
            <Text style={[ui.muted, styles.system]}>
              Messages here are end-to-end encrypted: only you and {title} can read them.
            </Text>
          ) : null
        }
      />
      <ErrorText testID="conversation-error">{error}</ErrorText>
      <View style={styles.composer}>
        <TextInput
          testID="composer-input"
          accessibilityLabel="Message"
          placeholder="Message"
          placeholderTextColor={colors.muted}
          value={draft}
          onChangeText={setDraft}
          multiline
          style={[ui.input, styles.input]}
          onKeyPress={(e) => {
            // On the web, Enter sends and Shift+Enter starts a new line.
            const native = e.nativeEvent as { key: string; shiftKey?: boolean };
            if (Platform.OS === 'web' && native.key === 'Enter' && !native.shiftKey) {
              (e as unknown as { preventDefault?: () => void }).preventDefault?.();
              void send();
            }
          }}
        />
        <Button testID="composer-send" title="Send" onPress={send} disabled={!draft.trim()} busy={sending > 0} />
      </View>
    </KeyboardAvoidingView>
  );
}

const styles = StyleSheet.create({
  messages: { padding: 12, gap: 6, flexGrow: 1 },
  system: { textAlign: 'center', paddingVertical: 8, paddingHorizontal: 20 },
  bubble: { maxWidth: '80%', borderRadius: 14, paddingHorizontal: 12, paddingVertical: 8, gap: 2 },
  outgoing: { alignSelf: 'flex-end', backgroundColor: colors.outgoing },
  incoming: { alignSelf: 'flex-start', backgroundColor: colors.incoming },
  text: { fontSize: 16, lineHeight: 22, color: colors.text },
  outgoingText: { color: colors.accentText },
  meta: { flexDirection: 'row', justifyContent: 'flex-end', gap: 6 },
  time: { fontSize: 12, color: colors.muted },
  outgoingMeta: { color: '#dbe7ff' },
  tick: { fontSize: 12, fontWeight: '700' },
  readTick: { color: '#a7f3c0' },
  composer: {
    flexDirection: 'row',
    alignItems: 'flex-end',
    gap: 8,
    padding: 10,
    borderTopWidth: 1,
    borderTopColor: colors.border,
  },
  input: { flex: 1, maxHeight: 140, paddingVertical: 12 },
});
