import type { Contact, Conversation, HushClient, StoredMessage } from '@hush/client';
import { useState } from 'react';
import { FlatList, Pressable, StyleSheet, Text, View } from 'react-native';
import { useClientData } from '../hooks';
import { Button, ErrorText, Field, Header, colors, shortId, styles as ui } from '../ui';

interface Row {
  conversation: Conversation;
  title: string;
  last?: StoredMessage;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function displayName(contact: Contact | undefined, id: string): string {
  return contact?.name || contact?.number || shortId(id);
}

async function loadRows(client: HushClient): Promise<Row[]> {
  const conversations = await client.conversations();
  return Promise.all(
    conversations.map(async (conversation) => {
      const [last] = await client.history(conversation.id, 1);
      const title =
        conversation.kind === 'group'
          ? ((await client.group(conversation.id.slice('group:'.length)))?.name ?? 'Group')
          : displayName(await client.contact(conversation.id), conversation.id);
      return { conversation, title, ...(last ? { last } : {}) };
    }),
  );
}

function time(ms: number): string {
  const d = new Date(ms);
  const today = new Date();
  return d.toDateString() === today.toDateString()
    ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleDateString();
}

/** Conversations, newest first, with unread counts; a new chat starts from an account id. */
export function ChatsScreen(props: { client: HushClient; onOpen: (conversationId: string) => void }) {
  const { data } = useClientData(
    props.client,
    () => loadRows(props.client),
    (e) => e.type === 'message' || e.type === 'message-updated' || e.type === 'group-updated' || e.type === 'expired',
  );
  const [composing, setComposing] = useState(false);
  const [accountId, setAccountId] = useState('');
  const [error, setError] = useState('');

  const start = () => {
    const id = accountId.trim().toLowerCase();
    if (!UUID.test(id)) {
      setError('An account id looks like 3f2a…-…: 36 characters, as shown on the Me screen.');
      return;
    }
    if (id === props.client.account.accountId) {
      setError('That is your own account id.');
      return;
    }
    setError('');
    setAccountId('');
    setComposing(false);
    props.onOpen(id);
  };

  return (
    <View style={ui.screen}>
      <Header
        title="Chats"
        right={
          <Button
            testID="chats-new"
            kind="secondary"
            title={composing ? 'Cancel' : 'New chat'}
            onPress={() => setComposing(!composing)}
            style={{ minHeight: 40 }}
          />
        }
      />
      {composing ? (
        <View style={[ui.content, styles.newChat]}>
          <Field
            label="Their account id"
            testID="chats-new-account"
            value={accountId}
            onChangeText={setAccountId}
            autoCapitalize="none"
            autoCorrect={false}
            placeholder="xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
            help="Ask them for the id on their Me screen."
            onSubmitEditing={start}
          />
          <ErrorText>{error}</ErrorText>
          <Button testID="chats-new-start" title="Start chat" onPress={start} disabled={!accountId.trim()} />
        </View>
      ) : null}
      <FlatList
        data={data ?? []}
        keyExtractor={(row) => row.conversation.id}
        ListEmptyComponent={
          data ? <Text style={[ui.muted, styles.empty]}>No chats yet. Start one with someone's account id.</Text> : null
        }
        renderItem={({ item }) => {
          const unread = item.conversation.unread;
          const preview = item.last ? (item.last.direction === 'out' ? `You: ${item.last.body}` : item.last.body) : '';
          return (
            <Pressable
              testID={`chat-${item.conversation.id}`}
              accessibilityRole="button"
              accessibilityLabel={`${item.title}${unread ? `, ${unread} unread` : ''}${preview ? `. ${preview}` : ''}`}
              onPress={() => props.onOpen(item.conversation.id)}
              style={({ pressed }) => [styles.row, pressed && { backgroundColor: colors.surface }]}
            >
              <View style={{ flex: 1, gap: 2 }}>
                <Text style={[ui.body, unread ? styles.bold : null]} numberOfLines={1}>
                  {item.title}
                </Text>
                <Text style={ui.muted} numberOfLines={1}>
                  {preview}
                </Text>
              </View>
              <View style={{ alignItems: 'flex-end', gap: 4 }}>
                <Text style={ui.muted}>{time(item.conversation.lastMessageAt)}</Text>
                {unread ? (
                  <View style={styles.badge} testID={`chat-unread-${item.conversation.id}`}>
                    <Text style={styles.badgeText}>{unread}</Text>
                  </View>
                ) : null}
              </View>
            </Pressable>
          );
        }}
      />
    </View>
  );
}

const styles = StyleSheet.create({
  newChat: { borderBottomWidth: 1, borderBottomColor: colors.border },
  empty: { padding: 20, textAlign: 'center' },
  row: {
    flexDirection: 'row',
    alignItems: 'center',
    gap: 12,
    paddingHorizontal: 16,
    paddingVertical: 12,
    minHeight: 64,
    borderBottomWidth: StyleSheet.hairlineWidth,
    borderBottomColor: colors.border,
  },
  bold: { fontWeight: '700' },
  badge: {
    minWidth: 24,
    height: 24,
    borderRadius: 12,
    paddingHorizontal: 6,
    backgroundColor: colors.accent,
    alignItems: 'center',
    justifyContent: 'center',
  },
  badgeText: { color: colors.accentText, fontSize: 13, fontWeight: '700' },
});
