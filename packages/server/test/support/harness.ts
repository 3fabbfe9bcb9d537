/**
 * Test harness: a real standalone server (SQLite file, dev SMS file, WebSocket) on a loopback port
 * in a temporary data directory, and test devices that register with real keys made by
 * @hush/protocol and talk to it over real HTTP and WebSocket.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import {
  CiphertextMessageType,
  IdentityKeyPair,
  KEMPublicKey,
  KyberPreKeyRecord,
  PreKeyRecord,
  ProtocolAddress,
  PublicKey,
  SignedPreKeyRecord,
  generateRegistrationId,
  inMemoryStores,
  processPreKeyBundle,
  signalDecrypt,
  signalDecryptPreKey,
  signalEncrypt,
} from '@hush/protocol';
import { nodeCrypto as crypto } from '@hush/protocol/node';
import WebSocket from 'ws';
import { readLatestDevCode } from '../../src/sms/dev-sms-sender.ts';
import { loadConfig } from '../../src/standalone/config.ts';
import { type RunningServer, startServer } from '../../src/standalone/server.ts';

export const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64');

export interface TestServer extends RunningServer {
  dataDir: string;
  /** Everything the server logged so far (JSON lines). */
  logs(): string;
}

export async function startTestServer(env: Record<string, string> = {}, dataDir?: string): Promise<TestServer> {
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'hush-server-'));
  const config = loadConfig({
    HUSH_PORT: '0',
    HUSH_DATA_DIR: dir,
    HUSH_LOG_LEVEL: 'info',
    HUSH_VERIFY_RESEND_COOLDOWN_SECONDS: '0',
    HUSH_VERIFY_PER_NUMBER_PER_HOUR: '1000',
    HUSH_VERIFY_PER_CLIENT_PER_HOUR: '100000',
    ...env,
  });
  const logStream = new PassThrough();
  const chunks: Buffer[] = [];
  logStream.on('data', (chunk: Buffer) => chunks.push(chunk));
  const server = await startServer(config, { logDestination: logStream, devSmsOutput: new PassThrough() });
  return Object.assign(server, { dataDir: dir, logs: () => Buffer.concat(chunks).toString('utf8') });
}

/** What TestDevice needs of a deployment: its base URL, and the data directory of its dev SMS log. */
export interface TestTarget {
  url: string;
  dataDir: string;
}

export function devSmsFile(server: { dataDir: string }): string {
  return join(server.dataDir, 'dev-sms.log');
}

export async function api(
  server: { url: string },
  method: string,
  path: string,
  options: { body?: unknown; auth?: TestDevice | string; rawBody?: BodyInit; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: any; headers: Headers }> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  if (options.auth)
    headers.authorization = typeof options.auth === 'string' ? options.auth : options.auth.authorization;
  const response = await fetch(`${server.url}${path}`, {
    method,
    headers,
    body: options.rawBody ?? (options.body === undefined ? undefined : JSON.stringify(options.body)),
    ...(options.rawBody ? { duplex: 'half' } : {}),
  } as RequestInit);
  const text = await response.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, body, headers: response.headers };
}

let numberCounter = 0;
/** A fresh valid US number per call (555-01xx numbers are reserved for fiction but not valid E.164 here). */
export function freshNumber(): string {
  numberCounter++;
  return `+1415${String(2_000_000 + ((process.pid * 1000 + numberCounter) % 7_999_999)).padStart(7, '0')}`;
}

export class TestDevice {
  accountId = '';
  deviceId = 1;
  password = b64(crypto.randomBytes(24));
  registrationId = generateRegistrationId(crypto);
  /** The device's own protocol state: private keys never leave it, as in a real client. */
  readonly stores: ReturnType<typeof inMemoryStores>;
  constructor(
    readonly identity: IdentityKeyPair,
    readonly number: string,
  ) {
    this.stores = inMemoryStores(identity, this.registrationId);
  }

  get authorization(): string {
    return `Basic ${Buffer.from(`${this.accountId}.${this.deviceId}:${this.password}`).toString('base64')}`;
  }

  /** Generates keys, keeps the private parts in this device's stores, returns the public upload. */
  async generateKeys(count = 5, firstId = 1) {
    const identity = this.identity;
    const signed = await SignedPreKeyRecord.generate(crypto, identity, firstId);
    const lastResort = await KyberPreKeyRecord.generate(crypto, identity, firstId + 10_000);
    const preKeys = await Promise.all(
      Array.from({ length: count }, (_, i) => PreKeyRecord.generate(crypto, firstId + i)),
    );
    const pqPreKeys = await Promise.all(
      Array.from({ length: count }, (_, i) => KyberPreKeyRecord.generate(crypto, identity, firstId + 100 + i)),
    );
    await this.stores.signedPreKeys.saveSignedPreKey(signed.id, signed);
    await this.stores.kyberPreKeys.saveKyberPreKey(lastResort.id, lastResort, true);
    for (const k of preKeys) await this.stores.preKeys.savePreKey(k.id, k);
    for (const k of pqPreKeys) await this.stores.kyberPreKeys.saveKyberPreKey(k.id, k);
    return {
      signedPreKey: {
        keyId: signed.id,
        publicKey: b64(signed.keyPair.publicKey.serialize()),
        signature: b64(signed.signature),
      },
      pqLastResortPreKey: {
        keyId: lastResort.id,
        publicKey: b64(lastResort.keyPair.publicKey.serialize()),
        signature: b64(lastResort.signature),
      },
      preKeys: preKeys.map((k) => ({ keyId: k.id, publicKey: b64(k.keyPair.publicKey.serialize()) })),
      pqPreKeys: pqPreKeys.map((k) => ({
        keyId: k.id,
        publicKey: b64(k.keyPair.publicKey.serialize()),
        signature: b64(k.signature),
      })),
    };
  }

  /** Verifies a number with the dev SMS code and registers device 1 with real keys. */
  static async register(server: TestTarget, options: { number?: string; keys?: number } = {}): Promise<TestDevice> {
    const number = options.number ?? freshNumber();
    const started = await api(server, 'POST', '/v1/verification/sessions', { body: { number } });
    if (started.status !== 200)
      throw new Error(`verification start: ${started.status} ${JSON.stringify(started.body)}`);
    const code = await readLatestDevCode(devSmsFile(server), started.body.number);
    const verified = await api(server, 'POST', `/v1/verification/sessions/${started.body.id}/code`, { body: { code } });
    if (verified.status !== 200)
      throw new Error(`verification code: ${verified.status} ${JSON.stringify(verified.body)}`);
    const identity = await IdentityKeyPair.generate(crypto);
    const device = new TestDevice(identity, started.body.number);
    const registered = await api(server, 'POST', '/v1/accounts', {
      body: {
        verificationSessionId: started.body.id,
        password: device.password,
        identityKey: b64(identity.publicKey.serialize()),
        registrationId: device.registrationId,
        ...(await device.generateKeys(options.keys ?? 5)),
      },
    });
    if (registered.status !== 200) throw new Error(`register: ${registered.status} ${JSON.stringify(registered.body)}`);
    device.accountId = registered.body.accountId;
    return device;
  }

  /**
   * Links a new device to `primary`'s account as a real one would: a random provisioning address,
   * a link code from the primary device, the provisioning message relayed through the server (here
   * not encrypted: the server treats it as opaque bytes either way), then PUT /v1/devices/link
   * with keys signed by the account's identity key. The device shares the identity key pair and
   * has its own password, registration id and prekeys.
   */
  static async link(
    server: TestTarget,
    primary: TestDevice,
    options: { name?: Uint8Array; keys?: number } = {},
  ): Promise<TestDevice> {
    const address = Buffer.from(crypto.randomBytes(16)).toString('base64url');
    const code = await api(server, 'POST', '/v1/devices/link-code', { auth: primary });
    if (code.status !== 200) throw new Error(`link code: ${code.status} ${JSON.stringify(code.body)}`);
    const message = Buffer.from(JSON.stringify({ accountId: primary.accountId, code: code.body.code }));
    const put = await api(server, 'PUT', `/v1/provisioning/${address}`, {
      auth: primary,
      body: { body: b64(message) },
    });
    if (put.status !== 204) throw new Error(`provisioning: ${put.status} ${JSON.stringify(put.body)}`);
    const got = await api(server, 'GET', `/v1/provisioning/${address}`);
    if (got.status !== 200) throw new Error(`provisioning fetch: ${got.status} ${JSON.stringify(got.body)}`);
    const provisioned = JSON.parse(Buffer.from(got.body.body, 'base64').toString('utf8'));
    const device = new TestDevice(primary.identity, primary.number);
    const linked = await api(server, 'PUT', '/v1/devices/link', {
      body: {
        code: provisioned.code,
        password: device.password,
        registrationId: device.registrationId,
        ...(options.name ? { name: b64(options.name) } : {}),
        ...(await device.generateKeys(options.keys ?? 5)),
      },
    });
    if (linked.status !== 200) throw new Error(`link: ${linked.status} ${JSON.stringify(linked.body)}`);
    device.accountId = linked.body.accountId;
    device.deviceId = linked.body.deviceId;
    return device;
  }

  /** Encrypts `plaintext` for a device of `to` (device 1 unless told), fetching a bundle first if there is no session. */
  async encryptFor(server: { url: string }, to: TestDevice, plaintext: Uint8Array, deviceId = 1) {
    const address = new ProtocolAddress(to.accountId, deviceId);
    if (!(await this.stores.sessions.getSession(address))) {
      const bundle = await api(server, 'GET', `/v1/keys/${to.accountId}/${deviceId}`, { auth: this });
      if (bundle.status !== 200) throw new Error(`bundle: ${bundle.status} ${JSON.stringify(bundle.body)}`);
      const d = bundle.body.devices[0];
      const raw = (x: string) => new Uint8Array(Buffer.from(x, 'base64'));
      await processPreKeyBundle(
        crypto,
        {
          registrationId: d.registrationId,
          deviceId: d.deviceId,
          identityKey: PublicKey.deserialize(raw(bundle.body.identityKey)),
          signedPreKeyId: d.signedPreKey.keyId,
          signedPreKey: PublicKey.deserialize(raw(d.signedPreKey.publicKey)),
          signedPreKeySignature: raw(d.signedPreKey.signature),
          kyberPreKeyId: d.pqPreKey.keyId,
          kyberPreKey: KEMPublicKey.deserialize(raw(d.pqPreKey.publicKey)),
          kyberPreKeySignature: raw(d.pqPreKey.signature),
          ...(d.preKey ? { preKeyId: d.preKey.keyId, preKey: PublicKey.deserialize(raw(d.preKey.publicKey)) } : {}),
        },
        address,
        this.stores,
      );
    }
    return signalEncrypt(crypto, plaintext, address, this.stores);
  }

  /** Encrypts and sends; returns the HTTP answer. */
  async sendText(server: { url: string }, to: TestDevice, plaintext: Uint8Array, extra: { id?: string } = {}) {
    const message = await this.encryptFor(server, to, plaintext);
    return this.send(server, to, message.serialized, { ...extra, type: message.type });
  }

  /** Decrypts an envelope as it arrived (JSON from HTTP or a socket frame). */
  decrypt(envelope: {
    type: number;
    sourceAccountId: string;
    sourceDeviceId: number;
    content: string;
  }): Promise<Uint8Array> {
    const address = new ProtocolAddress(envelope.sourceAccountId, envelope.sourceDeviceId);
    const body = new Uint8Array(Buffer.from(envelope.content, 'base64'));
    return envelope.type === CiphertextMessageType.PreKey
      ? signalDecryptPreKey(crypto, body, address, this.stores)
      : signalDecrypt(crypto, body, address, this.stores);
  }

  /** Sends one opaque payload to every device of `to` (here: device 1). */
  send(server: { url: string }, to: TestDevice, content: Uint8Array, extra: { id?: string; type?: number } = {}) {
    return api(server, 'PUT', `/v1/messages/${to.accountId}`, {
      auth: this,
      body: {
        messages: [{ deviceId: 1, registrationId: to.registrationId, type: extra.type ?? 3, content: b64(content) }],
        timestamp: Date.now(),
        ...(extra.id ? { id: extra.id } : {}),
      },
    });
  }

  /** Opens an authenticated socket and collects frames. */
  async connect(server: { url: string }): Promise<SocketClient> {
    const ws = new WebSocket(`${server.url.replace('http', 'ws')}/v1/websocket`, {
      headers: { authorization: this.authorization },
    });
    const client = new SocketClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    });
    return client;
  }
}

export class SocketClient {
  readonly frames: any[] = [];
  private waiters: { predicate: (f: any) => boolean; resolve: (f: any) => void }[] = [];

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      this.frames.push(frame);
      this.waiters = this.waiters.filter((w) => {
        if (!w.predicate(frame)) return true;
        w.resolve(frame);
        return false;
      });
    });
  }

  /** The first frame (already received or future) that matches. */
  next(predicate: (frame: any) => boolean, timeoutMs = 10_000): Promise<any> {
    const found = this.frames.find(predicate);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out waiting for a frame')), timeoutMs);
      this.waiters.push({
        predicate,
        resolve: (f) => {
          clearTimeout(timer);
          resolve(f);
        },
      });
    });
  }

  envelopes(): any[] {
    return this.frames.filter((f) => f.type === 'envelope').map((f) => f.envelope);
  }

  ack(guid: string): void {
    this.ws.send(JSON.stringify({ type: 'ack', guid }));
  }

  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      this.ws.once('close', () => resolve());
      this.ws.close();
    });
  }
}

/** Bytes a test used as plaintext markers; scanned for in the database and logs afterwards. */
export function marker(label: string): Uint8Array {
  return new TextEncoder().encode(`PLAINTEXT-MARKER-${label}-${Buffer.from(crypto.randomBytes(4)).toString('hex')}`);
}

export function fileContains(path: string, needle: Uint8Array): boolean {
  return readFileSync(path).includes(Buffer.from(needle));
}
