/** Parses `Authorization: Basic base64(accountId.deviceId:password)`; null when malformed. */
export function parseBasicAuthorization(
  header: string | undefined,
): { accountId: string; deviceId: number; password: string } | null {
  // The scheme name is case-insensitive (RFC 9110 §11.1).
  const match = header?.match(/^basic (.+)$/i);
  if (!match) return null;
  const decoded = Buffer.from(match[1] as string, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  const user = decoded.slice(0, colon);
  const dot = user.lastIndexOf('.');
  if (dot < 0) return null;
  const deviceId = Number(user.slice(dot + 1));
  if (!Number.isInteger(deviceId)) return null;
  return { accountId: user.slice(0, dot), deviceId, password: decoded.slice(colon + 1) };
}
