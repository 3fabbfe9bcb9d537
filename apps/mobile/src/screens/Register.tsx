import type { HushClient } from '@hush/client';
import { useState } from 'react';
import { ActivityIndicator, KeyboardAvoidingView, Platform, ScrollView, Text, View } from 'react-native';
import { Button, ErrorText, Field, colors, errorMessage, styles } from '../ui';

/**
 * Register: phone number → SMS code → keys generated on this device (identity, signed prekey,
 * 100 one-time EC and 100 Kyber prekeys), with progress, then the account exists.
 */
export function RegisterScreen(props: {
  client: HushClient;
  serverUrl: string;
  serverUrlEditable: boolean;
  onChangeServerUrl: (url: string) => Promise<void>;
  onRegistered: () => void;
}) {
  const [step, setStep] = useState<'number' | 'code' | 'keys'>('number');
  const [number, setNumber] = useState('');
  const [code, setCode] = useState('');
  const [sessionId, setSessionId] = useState('');
  const [server, setServer] = useState(props.serverUrl);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');
  const [progress, setProgress] = useState('');

  const requestCode = async () => {
    setBusy(true);
    setError('');
    try {
      if (props.serverUrlEditable && server.trim() !== props.serverUrl) {
        await props.onChangeServerUrl(server.trim());
        return; // the client is reopened for the new server; the user presses again
      }
      const started = await props.client.requestCode(number.trim());
      setSessionId(started.sessionId);
      setNumber(started.number);
      setStep('code');
    } catch (e) {
      setError(errorMessage(e));
    } finally {
      setBusy(false);
    }
  };

  const register = async () => {
    setBusy(true);
    setError('');
    setStep('keys');
    setProgress('checking the code');
    try {
      // Let the progress text render before the key generation takes the thread.
      await new Promise((resolve) => setTimeout(resolve, 50));
      await props.client.register(sessionId, code.trim(), (step) => setProgress(step));
      props.onRegistered();
    } catch (e) {
      setError(errorMessage(e));
      setStep('code');
    } finally {
      setBusy(false);
    }
  };

  return (
    <KeyboardAvoidingView style={styles.screen} behavior={Platform.OS === 'ios' ? 'padding' : undefined}>
      <ScrollView contentContainerStyle={[styles.content, { maxWidth: 520, width: '100%', alignSelf: 'center' }]}>
        <Text accessibilityRole="header" style={styles.title}>
          Hush
        </Text>
        <Text style={styles.body}>
          End-to-end encrypted messages. Your keys are made on this device and never leave it.
        </Text>

        {step === 'number' ? (
          <>
            <Field
              label="Phone number"
              testID="register-number"
              value={number}
              onChangeText={setNumber}
              placeholder="+14155550123"
              keyboardType="phone-pad"
              autoComplete="tel"
              inputMode="tel"
              help="International format, starting with + and the country code."
              onSubmitEditing={requestCode}
            />
            {props.serverUrlEditable ? (
              <Field
                label="Server"
                testID="register-server"
                value={server}
                onChangeText={setServer}
                autoCapitalize="none"
                autoCorrect={false}
                keyboardType="url"
                help="The Hush server to register with (the Android emulator reaches your computer at 10.0.2.2)."
              />
            ) : null}
            <Button
              testID="register-request-code"
              title={props.serverUrlEditable && server.trim() !== props.serverUrl ? 'Use this server' : 'Send code'}
              onPress={requestCode}
              busy={busy}
              disabled={number.trim().length < 4}
            />
          </>
        ) : null}

        {step === 'code' ? (
          <>
            <Text style={styles.body}>We sent a code by SMS to {number}.</Text>
            <Field
              label="Verification code"
              testID="register-code"
              value={code}
              onChangeText={setCode}
              placeholder="123456"
              keyboardType="number-pad"
              inputMode="numeric"
              autoComplete="sms-otp"
              textContentType="oneTimeCode"
              maxLength={8}
              onSubmitEditing={register}
            />
            <Button
              testID="register-verify"
              title="Verify and create keys"
              onPress={register}
              busy={busy}
              disabled={code.trim().length < 4}
            />
            <Button kind="secondary" title="Use another number" onPress={() => setStep('number')} disabled={busy} />
          </>
        ) : null}

        {step === 'keys' ? (
          <View
            testID="register-progress"
            accessibilityRole="progressbar"
            accessibilityLabel={`Setting up: ${progress}`}
            accessibilityLiveRegion="polite"
            style={{ gap: 12, alignItems: 'center', paddingVertical: 24 }}
          >
            <ActivityIndicator size="large" color={colors.accent} />
            <Text style={styles.body}>{progress}</Text>
          </View>
        ) : null}

        <ErrorText testID="register-error">{error}</ErrorText>
      </ScrollView>
    </KeyboardAvoidingView>
  );
}
