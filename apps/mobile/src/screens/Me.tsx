import type { HushClient } from '@hush/client';
import { useEffect, useState } from 'react';
import { Platform, ScrollView, Share, Text, View } from 'react-native';
import { useClientData } from '../hooks';
import { Button, ErrorText, Header, errorMessage, styles as ui } from '../ui';
import { displayName } from './Chats';

/** 60 digits as 12 groups of 5, three groups a line, as Signal shows them. */
function groups(digits: string): string[] {
  const blocks = digits.match(/.{1,5}/g) ?? [];
  const lines: string[] = [];
  for (let i = 0; i < blocks.length; i += 3) lines.push(blocks.slice(i, i + 3).join(' '));
  return lines;
}

const TRUST: Record<string, string> = {
  unverified: 'Not verified yet: compare these numbers with theirs, in person or on a call.',
  verified: 'Verified.',
  changed: 'Their safety number changed. Compare it with theirs before you send anything.',
};

/** Me: the account id to share, and the safety number with each contact. */
export function MeScreen(props: { client: HushClient; serverUrl: string }) {
  const { client } = props;
  const account = client.account;
  const { data: contacts } = useClientData(
    client,
    () => client.contacts(),
    (e) => e.type === 'message' || e.type === 'identity-changed',
  );
  const [selected, setSelected] = useState<string>();
  const [safety, setSafety] = useState<{ digits: string; trust: string }>();
  const [error, setError] = useState('');
  const [copied, setCopied] = useState(false);

  useEffect(() => {
    setSafety(undefined);
    setError('');
    if (!selected) return;
    client.safetyNumber(selected).then(
      (s) => setSafety(s),
      (e: unknown) => setError(errorMessage(e)),
    );
  }, [client, selected]);

  const share = async () => {
    const nav = (globalThis as { navigator?: { clipboard?: { writeText(t: string): Promise<void> } } }).navigator;
    if (Platform.OS === 'web' && nav?.clipboard) {
      await nav.clipboard.writeText(account.accountId).then(
        () => setCopied(true),
        () => undefined,
      );
      return;
    }
    await Share.share({ message: `My Hush account id: ${account.accountId}` }).catch(() => undefined);
  };

  return (
    <View style={ui.screen}>
      <Header title="Me" />
      <ScrollView contentContainerStyle={[ui.content, { maxWidth: 640, width: '100%', alignSelf: 'center' }]}>
        <View style={{ gap: 6 }}>
          <Text style={ui.label}>Your account id</Text>
          <Text
            testID="me-account-id"
            selectable
            style={ui.mono}
            accessibilityLabel={`Account id ${account.accountId}`}
          >
            {account.accountId}
          </Text>
          <Text style={ui.muted}>Give this id to people who want to message you.</Text>
          <Button
            testID="me-share"
            kind="secondary"
            title={Platform.OS === 'web' ? (copied ? 'Copied' : 'Copy account id') : 'Share account id'}
            onPress={share}
          />
        </View>
        <View style={{ gap: 4 }}>
          <Text style={ui.label}>Number</Text>
          <Text style={ui.body}>{account.number}</Text>
          <Text style={ui.muted}>
            Device {account.deviceId} · server {props.serverUrl}
          </Text>
        </View>

        <View style={{ gap: 8 }}>
          <Text accessibilityRole="header" style={[ui.body, { fontWeight: '700' }]}>
            Safety numbers
          </Text>
          <Text style={ui.muted}>
            If the numbers you see match the ones your contact sees, no one sits between you.
          </Text>
          {(contacts ?? []).length === 0 ? <Text style={ui.muted}>No contacts yet.</Text> : null}
          {(contacts ?? []).map((c) => (
            <Button
              key={c.accountId}
              testID={`me-contact-${c.accountId}`}
              kind={selected === c.accountId ? 'primary' : 'secondary'}
              title={displayName(c, c.accountId)}
              accessibilityHint="Shows the safety number with this contact"
              onPress={() => setSelected(selected === c.accountId ? undefined : c.accountId)}
            />
          ))}
          {safety ? (
            <View testID="me-safety-number" style={{ gap: 4, paddingVertical: 8 }} accessible>
              {groups(safety.digits).map((line) => (
                <Text key={line} selectable style={[ui.mono, { fontSize: 20, letterSpacing: 1 }]}>
                  {line}
                </Text>
              ))}
              <Text style={ui.muted}>{TRUST[safety.trust] ?? ''}</Text>
            </View>
          ) : null}
          <ErrorText>{error}</ErrorText>
        </View>
      </ScrollView>
    </View>
  );
}
