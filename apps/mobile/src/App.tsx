import type { HushClient } from '@hush/client';
import { StatusBar } from 'expo-status-bar';
import { useCallback, useEffect, useState } from 'react';
import { ActivityIndicator, BackHandler, Pressable, StyleSheet, Text, View } from 'react-native';
import { SafeAreaProvider, SafeAreaView } from 'react-native-safe-area-context';
import { useConnectionState } from './hooks';
import { loadServerUrl, openAppClient, saveServerUrl, serverUrlEditable } from './platform/client';
import { ChatsScreen } from './screens/Chats';
import { ConversationScreen } from './screens/Conversation';
import { MeScreen } from './screens/Me';
import { RegisterScreen } from './screens/Register';
import { Button, colors, errorMessage, styles as ui } from './ui';

type Tab = 'chats' | 'me';

/** Starts live delivery and background upkeep once the device is registered. */
function goOnline(client: HushClient): void {
  client
    .connect()
    .then(() => client.flushOutbox())
    .then(() => client.maintainKeys())
    .catch(() => undefined); // the connection retries by itself; the banner shows its state
}

function ConnectionBanner({ client }: { client: HushClient }) {
  const state = useConnectionState(client);
  if (state === 'open') return null;
  return (
    <View style={styles.banner} accessibilityLiveRegion="polite" testID="connection-banner">
      <Text style={styles.bannerText}>{state === 'connecting' ? 'Connecting…' : 'Offline: reconnecting'}</Text>
    </View>
  );
}

function Main({ client, serverUrl }: { client: HushClient; serverUrl: string }) {
  const [tab, setTab] = useState<Tab>('chats');
  const [open, setOpen] = useState<string>();

  useEffect(() => {
    if (!open) return;
    const sub = BackHandler.addEventListener('hardwareBackPress', () => {
      setOpen(undefined);
      return true;
    });
    return () => sub.remove();
  }, [open]);

  return (
    <View style={ui.screen}>
      <ConnectionBanner client={client} />
      <View style={{ flex: 1 }}>
        {open ? (
          <ConversationScreen client={client} conversationId={open} onBack={() => setOpen(undefined)} />
        ) : tab === 'chats' ? (
          <ChatsScreen client={client} onOpen={setOpen} />
        ) : (
          <MeScreen client={client} serverUrl={serverUrl} />
        )}
      </View>
      {open ? null : (
        <View style={styles.tabs} accessibilityRole="tablist">
          {(['chats', 'me'] as const).map((t) => (
            <Pressable
              key={t}
              testID={`tab-${t}`}
              accessibilityRole="tab"
              accessibilityState={{ selected: tab === t }}
              onPress={() => setTab(t)}
              style={styles.tab}
            >
              <Text style={[styles.tabText, tab === t && styles.tabSelected]}>{t === 'chats' ? 'Chats' : 'Me'}</Text>
            </Pressable>
          ))}
        </View>
      )}
    </View>
  );
}

export default function App() {
  const [client, setClient] = useState<HushClient>();
  const [serverUrl, setServerUrl] = useState('');
  const [registered, setRegistered] = useState(false);
  const [failure, setFailure] = useState('');
  const [attempt, setAttempt] = useState(0);

  // biome-ignore lint/correctness/useExhaustiveDependencies: `attempt` is the trigger (Try again, another server)
  useEffect(() => {
    let cancelled = false;
    let opened: HushClient | undefined;
    setFailure('');
    (async () => {
      const url = await loadServerUrl();
      opened = await openAppClient(url);
      if (cancelled) {
        await opened.close();
        return;
      }
      const isRegistered = (() => {
        try {
          return Boolean(opened.account);
        } catch {
          return false;
        }
      })();
      setServerUrl(isRegistered ? opened.account.serverUrl : url);
      setRegistered(isRegistered);
      setClient(opened);
      if (isRegistered) goOnline(opened);
    })().catch((e: unknown) => {
      if (!cancelled) setFailure(errorMessage(e));
    });
    return () => {
      cancelled = true;
      if (opened) void opened.close();
    };
  }, [attempt]);

  const changeServerUrl = useCallback(async (url: string) => {
    await saveServerUrl(url);
    setClient(undefined);
    setAttempt((n) => n + 1);
  }, []);

  const onRegistered = useCallback(() => {
    if (!client) return;
    setRegistered(true);
    goOnline(client);
  }, [client]);

  let body: React.ReactNode;
  if (failure) {
    body = (
      <View style={[ui.screen, ui.content, { justifyContent: 'center' }]}>
        <Text style={ui.title}>Hush could not start</Text>
        <Text style={ui.body} accessibilityRole="alert">
          {failure}
        </Text>
        <Button title="Try again" onPress={() => setAttempt((n) => n + 1)} />
      </View>
    );
  } else if (!client) {
    body = (
      <View style={[ui.screen, { alignItems: 'center', justifyContent: 'center' }]}>
        <ActivityIndicator size="large" color={colors.accent} accessibilityLabel="Opening Hush" />
      </View>
    );
  } else if (!registered) {
    body = (
      <RegisterScreen
        client={client}
        serverUrl={serverUrl}
        serverUrlEditable={serverUrlEditable}
        onChangeServerUrl={changeServerUrl}
        onRegistered={onRegistered}
      />
    );
  } else {
    body = <Main client={client} serverUrl={serverUrl} />;
  }

  return (
    <SafeAreaProvider>
      <SafeAreaView style={styles.root} edges={['top', 'bottom', 'left', 'right']}>
        {body}
        <StatusBar style="dark" />
      </SafeAreaView>
    </SafeAreaProvider>
  );
}

const styles = StyleSheet.create({
  root: { flex: 1, backgroundColor: colors.background },
  banner: { backgroundColor: '#fff4ce', paddingVertical: 6, paddingHorizontal: 12 },
  bannerText: { color: '#5c4400', textAlign: 'center', fontSize: 14 },
  tabs: { flexDirection: 'row', borderTopWidth: 1, borderTopColor: colors.border, backgroundColor: colors.background },
  tab: { flex: 1, minHeight: 56, alignItems: 'center', justifyContent: 'center' },
  tabText: { fontSize: 16, color: colors.muted, fontWeight: '600' },
  tabSelected: { color: colors.accent },
});
