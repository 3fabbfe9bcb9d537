import type { ReactNode } from 'react';
import {
  ActivityIndicator,
  Pressable,
  StyleSheet,
  Text,
  TextInput,
  type TextInputProps,
  View,
  type ViewStyle,
} from 'react-native';

export const colors = {
  background: '#ffffff',
  surface: '#f3f5f7',
  border: '#d9dee3',
  text: '#111417',
  muted: '#5b6670',
  accent: '#1f6feb',
  accentText: '#ffffff',
  outgoing: '#1f6feb',
  incoming: '#eef1f4',
  danger: '#b42318',
  read: '#1a7f37',
};

export function Button(props: {
  title: string;
  onPress: () => void;
  disabled?: boolean;
  busy?: boolean;
  kind?: 'primary' | 'secondary';
  testID?: string;
  accessibilityHint?: string;
  style?: ViewStyle;
}) {
  const primary = (props.kind ?? 'primary') === 'primary';
  const disabled = props.disabled || props.busy;
  return (
    <Pressable
      testID={props.testID}
      accessibilityRole="button"
      accessibilityLabel={props.title}
      accessibilityHint={props.accessibilityHint}
      accessibilityState={{ disabled: !!disabled, busy: !!props.busy }}
      disabled={disabled}
      onPress={props.onPress}
      style={({ pressed }) => [
        styles.button,
        primary ? styles.primary : styles.secondary,
        disabled && styles.disabled,
        pressed && styles.pressed,
        props.style,
      ]}
    >
      {props.busy ? <ActivityIndicator color={primary ? colors.accentText : colors.accent} /> : null}
      <Text style={[styles.buttonText, primary ? styles.primaryText : styles.secondaryText]}>{props.title}</Text>
    </Pressable>
  );
}

export function Field(props: TextInputProps & { label: string; help?: string }) {
  const { label, help, style, ...input } = props;
  return (
    <View style={styles.field}>
      <Text style={styles.label}>{label}</Text>
      <TextInput
        accessibilityLabel={label}
        accessibilityHint={help}
        placeholderTextColor={colors.muted}
        style={[styles.input, style]}
        {...input}
      />
      {help ? <Text style={styles.help}>{help}</Text> : null}
    </View>
  );
}

export function ErrorText(props: { children: ReactNode; testID?: string }) {
  if (!props.children) return null;
  return (
    <Text testID={props.testID} accessibilityRole="alert" accessibilityLiveRegion="assertive" style={styles.error}>
      {props.children}
    </Text>
  );
}

export function Header(props: { title: string; left?: ReactNode; right?: ReactNode }) {
  return (
    <View style={styles.header}>
      <View style={styles.headerSide}>{props.left}</View>
      <Text accessibilityRole="header" style={styles.headerTitle} numberOfLines={1}>
        {props.title}
      </Text>
      <View style={[styles.headerSide, styles.headerRight]}>{props.right}</View>
    </View>
  );
}

/** A short form of an account id for lists (the full id is on the Me screen and in the header hint). */
export const shortId = (accountId: string) => (accountId.length > 13 ? `${accountId.slice(0, 8)}…` : accountId);

export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    if (error.name === 'ServerUnreachableError') return 'The server cannot be reached. Check the connection.';
    return error.message;
  }
  return String(error);
}

export const styles = StyleSheet.create({
  screen: { flex: 1, backgroundColor: colors.background },
  content: { padding: 20, gap: 16 },
  title: { fontSize: 28, fontWeight: '700', color: colors.text },
  body: { fontSize: 16, lineHeight: 22, color: colors.text },
  muted: { fontSize: 14, lineHeight: 20, color: colors.muted },
  button: {
    minHeight: 48,
    borderRadius: 10,
    paddingHorizontal: 18,
    alignItems: 'center',
    justifyContent: 'center',
    flexDirection: 'row',
    gap: 8,
  },
  primary: { backgroundColor: colors.accent },
  secondary: { backgroundColor: colors.surface, borderWidth: 1, borderColor: colors.border },
  disabled: { opacity: 0.5 },
  pressed: { opacity: 0.8 },
  buttonText: { fontSize: 16, fontWeight: '600' },
  primaryText: { color: colors.accentText },
  secondaryText: { color: colors.accent },
  field: { gap: 6 },
  label: { fontSize: 14, fontWeight: '600', color: colors.text },
  input: {
    minHeight: 48,
    borderWidth: 1,
    borderColor: colors.border,
    borderRadius: 10,
    paddingHorizontal: 12,
    fontSize: 16,
    color: colors.text,
    backgroundColor: colors.background,
  },
  help: { fontSize: 13, color: colors.muted },
  error: { fontSize: 15, color: colors.danger },
  header: {
    minHeight: 56,
    flexDirection: 'row',
    alignItems: 'center',
    paddingHorizontal: 12,
    borderBottomWidth: 1,
    borderBottomColor: colors.border,
    backgroundColor: colors.background,
  },
  headerSide: { minWidth: 72, flexDirection: 'row' },
  headerRight: { justifyContent: 'flex-end' },
  headerTitle: { flex: 1, textAlign: 'center', fontSize: 18, fontWeight: '700', color: colors.text },
  mono: { fontFamily: 'monospace', fontSize: 15, color: colors.text },
});
