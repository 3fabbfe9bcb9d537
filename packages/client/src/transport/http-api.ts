import { fromBase64, toBase64 } from '../util/base64.ts';

/*
 * The server's HTTP API as typed calls (contract: the server's /openapi.json). Binary fields are
 * Uint8Array here and base64 on the wire.
 */

export interface Credentials {
  accountId: string;
  deviceId: number;
  password: string;
}

export interface WireECPreKey {
  keyId: number;
  publicKey: Uint8Array;
}
export interface WireSignedPreKey extends WireECPreKey {
  signature: Uint8Array;
}
export type WireKyberPreKey = WireSignedPreKey;

export interface KeyUpload {
  preKeys?: WireECPreKey[];
  pqPreKeys?: WireKyberPreKey[];
  signedPreKey?: WireSignedPreKey;
  pqLastResortPreKey?: WireKyberPreKey;
}

export interface DeviceBundle {
  deviceId: number;
  registrationId: number;
  signedPreKey: WireSignedPreKey;
  preKey?: WireECPreKey;
  pqPreKey: WireKyberPreKey;
}

export interface Envelope {
  guid: string;
  type: number;
  sourceAccountId: string;
  sourceDeviceId: number;
  destinationDeviceId: number;
  timestamp: number;
  serverTimestamp: number;
  content: Uint8Array;
}

export interface DeviceInfo {
  deviceId: number;
  registrationId: number;
  createdAt: number;
  /** The device's name, encrypted by the account's devices (the server cannot read it). */
  name?: Uint8Array;
}

export interface OutgoingMessage {
  deviceId: number;
  registrationId: number;
  type: number;
  content: Uint8Array;
}

/** A 4xx/5xx answer, with the server's error code and extra fields (missingDevices, ...). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The server could not be reached at all. */
export class ServerUnreachableError extends Error {
  constructor(
    readonly url: string,
    cause: unknown,
  ) {
    super(`cannot reach the Hush server at ${url}: ${(cause as Error)?.message ?? cause}`);
    this.name = 'ServerUnreachableError';
  }
}

function isStaleConnection(error: unknown): boolean {
  const code = ((error as { cause?: { code?: string } })?.cause?.code ?? '') as string;
  return code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EPIPE';
}

const keyJson = (k: WireECPreKey | WireSignedPreKey) => ({
  keyId: k.keyId,
  publicKey: toBase64(k.publicKey),
  ...('signature' in k ? { signature: toBase64(k.signature) } : {}),
});

function keyUploadJson(u: KeyUpload) {
  return {
    ...(u.preKeys ? { preKeys: u.preKeys.map(keyJson) } : {}),
    ...(u.pqPreKeys ? { pqPreKeys: u.pqPreKeys.map(keyJson) } : {}),
    ...(u.signedPreKey ? { signedPreKey: keyJson(u.signedPreKey) } : {}),
    ...(u.pqLastResortPreKey ? { pqLastResortPreKey: keyJson(u.pqLastResortPreKey) } : {}),
  };
}

// biome-ignore lint/suspicious/noExplicitAny: JSON from the server, shaped by the contract.
type Json = any;

const wireKey = (k: Json) => ({
  keyId: k.keyId as number,
  publicKey: fromBase64(k.publicKey),
  ...(k.signature ? { signature: fromBase64(k.signature) } : {}),
});

export function parseEnvelope(e: Json): Envelope {
  return { ...e, content: fromBase64(e.content) };
}

export class HttpApi {
  constructor(
    readonly baseUrl: string,
    private credentials?: Credentials,
  ) {}

  setCredentials(credentials: Credentials): void {
    this.credentials = credentials;
  }

  get authorization(): string | undefined {
    const c = this.credentials;
    if (!c) return undefined;
    const raw = new TextEncoder().encode(`${c.accountId}.${c.deviceId}:${c.password}`);
    return `Basic ${toBase64(raw)}`;
  }

  async request(method: string, path: string, body?: unknown, raw?: Uint8Array): Promise<Json> {
    const headers: Record<string, string> = {};
    if (this.authorization) headers.authorization = this.authorization;
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (raw) headers['content-type'] = 'application/octet-stream';
    const init: RequestInit = {
      method,
      headers,
      ...(body !== undefined ? { body: JSON.stringify(body) } : raw ? { body: raw as BodyInit } : {}),
    };
    let response: Response;
    try {
      response = await fetch(`${this.baseUrl}${path}`, init);
    } catch (error) {
      // A pooled keep-alive connection the server closed meanwhile (e.g. while key generation kept
      // the event loop busy) fails before the request is read: one retry on a fresh connection.
      if (!isStaleConnection(error)) throw new ServerUnreachableError(this.baseUrl, error);
      try {
        response = await fetch(`${this.baseUrl}${path}`, init);
      } catch (retryError) {
        throw new ServerUnreachableError(this.baseUrl, retryError);
      }
    }
    if (response.status === 204) return null;
    const contentType = response.headers.get('content-type') ?? '';
    if (response.ok && contentType.startsWith('application/octet-stream'))
      return new Uint8Array(await response.arrayBuffer());
    const text = await response.text();
    let json: Json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!response.ok) {
      const { code = 'http_error', message = `HTTP ${response.status}`, ...details } = json?.error ?? {};
      const retryAfter = response.headers.get('retry-after');
      throw new ApiError(response.status, code, message, details, retryAfter ? Number(retryAfter) : undefined);
    }
    return json;
  }

  startVerification(number: string): Promise<{ id: string; number: string; expiresAt: number }> {
    return this.request('POST', '/v1/verification/sessions', { number });
  }

  submitCode(sessionId: string, code: string): Promise<{ id: string; number: string; verified: boolean }> {
    return this.request('POST', `/v1/verification/sessions/${sessionId}/code`, { code });
  }

  register(r: {
    verificationSessionId: string;
    password: string;
    identityKey: Uint8Array;
    registrationId: number;
    keys: Required<Pick<KeyUpload, 'signedPreKey' | 'pqLastResortPreKey'>> & KeyUpload;
    name?: string;
  }): Promise<{ accountId: string; deviceId: number; number: string }> {
    return this.request('POST', '/v1/accounts', {
      verificationSessionId: r.verificationSessionId,
      password: r.password,
      identityKey: toBase64(r.identityKey),
      registrationId: r.registrationId,
      ...keyUploadJson(r.keys),
      ...(r.name ? { name: r.name } : {}),
    });
  }

  uploadKeys(upload: KeyUpload): Promise<void> {
    return this.request('PUT', '/v1/keys', keyUploadJson(upload));
  }

  keyCounts(): Promise<{ preKeys: number; pqPreKeys: number }> {
    return this.request('GET', '/v1/keys/count');
  }

  async bundles(
    accountId: string,
    deviceId: number | '*',
  ): Promise<{ identityKey: Uint8Array; devices: DeviceBundle[] }> {
    const json = await this.request('GET', `/v1/keys/${accountId}/${deviceId}`);
    return {
      identityKey: fromBase64(json.identityKey),
      devices: json.devices.map((d: Json) => ({
        deviceId: d.deviceId,
        registrationId: d.registrationId,
        signedPreKey: wireKey(d.signedPreKey),
        ...(d.preKey ? { preKey: wireKey(d.preKey) } : {}),
        pqPreKey: wireKey(d.pqPreKey),
      })),
    };
  }

  sendMessages(
    accountId: string,
    messages: OutgoingMessage[],
    timestamp: number,
    id?: string,
  ): Promise<{ duplicate: boolean }> {
    return this.request('PUT', `/v1/messages/${accountId}`, {
      messages: messages.map((m) => ({ ...m, content: toBase64(m.content) })),
      timestamp,
      ...(id ? { id } : {}),
    });
  }

  sendMulti(request: {
    type: number;
    content: Uint8Array;
    recipients: { accountId: string; devices: { deviceId: number; registrationId: number }[] }[];
    timestamp: number;
    id?: string;
  }): Promise<{ duplicate: boolean }> {
    return this.request('PUT', '/v1/messages/multi', { ...request, content: toBase64(request.content) });
  }

  async fetchMessages(): Promise<{ messages: Envelope[]; more: boolean }> {
    const json = await this.request('GET', '/v1/messages');
    return { messages: json.messages.map(parseEnvelope), more: json.more };
  }

  acknowledge(guid: string): Promise<void> {
    return this.request('DELETE', `/v1/messages/${guid}`);
  }

  socketToken(): Promise<{ token: string; expiresAt: number }> {
    return this.request('POST', '/v1/websocket/token');
  }

  uploadAttachment(ciphertext: Uint8Array): Promise<{ id: string; size: number; expiresAt: number }> {
    return this.request('POST', '/v1/attachments', undefined, ciphertext);
  }

  downloadAttachment(id: string): Promise<Uint8Array> {
    return this.request('GET', `/v1/attachments/${id}`);
  }

  async devices(): Promise<{ devices: DeviceInfo[] }> {
    const json = await this.request('GET', '/v1/devices');
    return {
      devices: json.devices.map((d: Json) => ({
        deviceId: d.deviceId,
        registrationId: d.registrationId,
        createdAt: d.createdAt,
        ...(d.name ? { name: fromBase64(d.name) } : {}),
      })),
    };
  }

  /** Primary device only: a single-use code that lets one new device join this account (10 minutes). */
  linkCode(): Promise<{ code: string; expiresAt: number }> {
    return this.request('POST', '/v1/devices/link-code');
  }

  /** Primary device only: leaves the sealed provisioning message for a new device at its address. */
  putProvisioningMessage(address: string, body: Uint8Array): Promise<void> {
    return this.request('PUT', `/v1/provisioning/${address}`, { body: toBase64(body) });
  }

  /** The new device's side (no credentials yet): the provisioning message, once, or null while none is there. */
  async takeProvisioningMessage(address: string): Promise<Uint8Array | null> {
    const json = await this.request('GET', `/v1/provisioning/${address}`);
    return json ? fromBase64(json.body) : null;
  }

  /** The new device joins the account with the link code; returns its device id. */
  linkDevice(r: {
    code: string;
    password: string;
    registrationId: number;
    name?: Uint8Array;
    keys: Required<Pick<KeyUpload, 'signedPreKey' | 'pqLastResortPreKey'>> & KeyUpload;
  }): Promise<{ accountId: string; number: string; deviceId: number }> {
    return this.request('PUT', '/v1/devices/link', {
      code: r.code,
      password: r.password,
      registrationId: r.registrationId,
      ...(r.name ? { name: toBase64(r.name) } : {}),
      ...keyUploadJson(r.keys),
    });
  }

  removeDevice(deviceId: number): Promise<void> {
    return this.request('DELETE', `/v1/devices/${deviceId}`);
  }
}
