/**
 * Attachments: encrypted blobs go up as a raw octet-stream body and come back byte for byte; the
 * size cap answers 413 and leaves nothing behind; unknown ids are 404; both routes need a device.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_ATTACHMENT_BYTES } from '../src/http/app.ts';
import { TestDevice, type TestServer, api, marker, startTestServer } from './support/harness.ts';

/** As a client encrypts an attachment: AES-256-CBC, then HMAC-SHA256 over iv ‖ ciphertext. */
function encryptAttachment(plaintext: Uint8Array) {
  const keys = randomBytes(64);
  const iv = randomBytes(16);
  const cipher = createCipheriv('aes-256-cbc', keys.subarray(0, 32), iv);
  const body = Buffer.concat([iv, cipher.update(plaintext), cipher.final()]);
  const mac = createHmac('sha256', keys.subarray(32)).update(body).digest();
  const blob = Buffer.concat([body, mac]);
  return { keys, blob, digest: createHash('sha256').update(blob).digest() };
}

function decryptAttachment(keys: Uint8Array, blob: Uint8Array): Buffer {
  const data = Buffer.from(blob);
  const body = data.subarray(0, data.length - 32);
  const mac = createHmac('sha256', keys.subarray(32)).update(body).digest();
  if (!timingSafeEqual(mac, data.subarray(data.length - 32))) throw new Error('attachment MAC mismatch');
  const decipher = createDecipheriv('aes-256-cbc', keys.subarray(0, 32), body.subarray(0, 16));
  return Buffer.concat([decipher.update(body.subarray(16)), decipher.final()]);
}

async function download(server: { url: string }, id: string, auth?: TestDevice) {
  const response = await fetch(`${server.url}/v1/attachments/${id}`, {
    headers: auth ? { authorization: auth.authorization } : {},
  });
  return { status: response.status, headers: response.headers, bytes: Buffer.from(await response.arrayBuffer()) };
}

/**
 * A raw upload over node:http, so that the test controls Content-Length and chunking. `chunks`
 * are written one by one until the server answers (then writing stops), with backpressure.
 */
function rawUpload(
  server: { url: string },
  auth: TestDevice,
  options: { contentLength?: number; chunks: () => Iterable<Uint8Array> },
): Promise<{ status: number; body: any }> {
  const url = new URL('/v1/attachments', server.url);
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = request(
      url,
      {
        method: 'POST',
        headers: {
          authorization: auth.authorization,
          'content-type': 'application/octet-stream',
          ...(options.contentLength === undefined ? {} : { 'content-length': String(options.contentLength) }),
        },
      },
      (res) => {
        answered = true;
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => {
          const text = Buffer.concat(parts).toString('utf8');
          resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : null });
        });
        res.on('error', reject);
      },
    );
    // After the answer the server may close while we are still writing: that is expected.
    req.on('error', (error) => {
      if (!answered) reject(error);
    });
    (async () => {
      for (const chunk of options.chunks()) {
        if (answered || req.destroyed) return;
        if (!req.write(chunk)) {
          await new Promise<void>((r) => {
            const done = () => {
              req.off('drain', done);
              req.off('close', done);
              r();
            };
            req.on('drain', done);
            req.on('close', done);
          });
        }
      }
      if (!answered && !req.destroyed) req.end();
    })().catch(reject);
  });
}

/** `total` bytes in 1 MiB chunks of the same pseudo-random block (cheap to make, hashed as sent). */
function* sameBlock(total: number, block: Buffer, hash?: ReturnType<typeof createHash>) {
  for (let sent = 0; sent < total; sent += block.length) {
    const chunk = block.subarray(0, Math.min(block.length, total - sent));
    hash?.update(chunk);
    yield chunk;
  }
}

describe('attachments', () => {
  let server: TestServer;
  let alice: TestDevice;
  let bob: TestDevice;
  const files = () => ({
    blobs: readdirSync(server.config.attachmentsDir).filter((n) => n !== '.tmp'),
    partial: readdirSync(join(server.config.attachmentsDir, '.tmp')),
    rows: (server.storage.db.prepare('SELECT count(*) AS n FROM attachments').get() as { n: number }).n,
  });

  beforeAll(async () => {
    server = await startTestServer();
    alice = await TestDevice.register(server);
    bob = await TestDevice.register(server);
  });
  afterAll(async () => {
    await server.close();
    // It holds a 100 MiB blob.
    rmSync(server.dataDir, { recursive: true, force: true });
  });

  it('an encrypted blob uploaded by one device downloads byte for byte on another', async () => {
    const plaintext = Buffer.concat([Buffer.from(marker('attachment')), randomBytes(300_000)]);
    const { keys, blob, digest } = encryptAttachment(plaintext);
    const uploaded = await api(server, 'POST', '/v1/attachments', {
      auth: alice,
      rawBody: blob,
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(uploaded.status).toBe(200);
    expect(uploaded.body).toMatchObject({ size: blob.length });
    expect(uploaded.body.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(uploaded.body.expiresAt).toBeGreaterThan(Date.now());

    const got = await download(server, uploaded.body.id, bob);
    expect(got.status).toBe(200);
    expect(got.headers.get('content-type')).toBe('application/octet-stream');
    expect(got.headers.get('content-length')).toBe(String(blob.length));
    expect(got.bytes.equals(blob)).toBe(true);
    expect(createHash('sha256').update(got.bytes).digest().equals(digest)).toBe(true);
    expect(decryptAttachment(keys, got.bytes).equals(plaintext)).toBe(true);
    // The uploader can read it back too, as often as needed.
    expect((await download(server, uploaded.body.id, alice)).bytes.equals(blob)).toBe(true);
  });

  it('a streamed (chunked, no Content-Length) upload of random bytes round-trips', async () => {
    const parts = [randomBytes(1), randomBytes(65_536), randomBytes(200_003), randomBytes(7)];
    const uploaded = await rawUpload(server, alice, { chunks: () => parts });
    expect(uploaded.status).toBe(200);
    const all = Buffer.concat(parts);
    expect(uploaded.body.size).toBe(all.length);
    expect((await download(server, uploaded.body.id, bob)).bytes.equals(all)).toBe(true);
  });

  it('an empty body is refused and stores nothing', async () => {
    const before = files();
    const res = await api(server, 'POST', '/v1/attachments', {
      auth: alice,
      rawBody: new Uint8Array(0),
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(res.status).toBe(400);
    expect(files().partial).toEqual([]);
    expect(files().rows).toBe(before.rows);
  });

  it('over the size cap: 413 and nothing stored, whether declared or streamed', async () => {
    const before = files();
    const block = randomBytes(1024 * 1024);

    // Declared too large: refused before the body is read.
    const declared = await rawUpload(server, alice, {
      contentLength: MAX_ATTACHMENT_BYTES + 1,
      chunks: () => [block.subarray(0, 4096)],
    });
    expect(declared.status).toBe(413);
    expect(declared.body.error.code).toBe('payload_too_large');
    expect(files()).toEqual(before);

    // Streamed without a length: the server counts and stops one byte past the cap.
    const streamed = await rawUpload(server, alice, { chunks: () => sameBlock(MAX_ATTACHMENT_BYTES + 1, block) });
    expect(streamed.status).toBe(413);
    expect(streamed.body.error.code).toBe('payload_too_large');
    expect(files()).toEqual(before);

    // Exactly the cap is fine and comes back intact.
    const hash = createHash('sha256');
    const atCap = await rawUpload(server, alice, { chunks: () => sameBlock(MAX_ATTACHMENT_BYTES, block, hash) });
    expect(atCap.status).toBe(200);
    expect(atCap.body.size).toBe(MAX_ATTACHMENT_BYTES);
    const sentDigest = hash.digest('hex');
    const response = await fetch(`${server.url}/v1/attachments/${atCap.body.id}`, {
      headers: { authorization: bob.authorization },
    });
    expect(response.status).toBe(200);
    const received = createHash('sha256');
    let size = 0;
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      size += chunk.length;
      received.update(chunk);
    }
    expect(size).toBe(MAX_ATTACHMENT_BYTES);
    expect(received.digest('hex')).toBe(sentDigest);
    expect(files().blobs).toHaveLength(before.blobs.length + 1);
    expect(files().partial).toEqual([]);
  });

  it('an unknown id is 404, a malformed id is 400', async () => {
    const unknown = await download(server, crypto.randomUUID(), bob);
    expect(unknown.status).toBe(404);
    expect(JSON.parse(unknown.bytes.toString()).error.code).toBe('attachment_not_found');
    expect((await download(server, 'not-an-id', bob)).status).toBe(400);
    expect((await download(server, '..%2Fhush.sqlite', bob)).status).toBe(400);
  });

  it('both routes need a device: 401 without or with wrong credentials, and nothing is stored', async () => {
    const before = files();
    const blob = randomBytes(1000);
    const anonymous = await api(server, 'POST', '/v1/attachments', {
      rawBody: blob,
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(anonymous.status).toBe(401);
    const wrong = `Basic ${Buffer.from(`${alice.accountId}.1:${'x'.repeat(32)}`).toString('base64')}`;
    const forged = await api(server, 'POST', '/v1/attachments', {
      auth: wrong,
      rawBody: blob,
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(forged.status).toBe(401);
    expect(files()).toEqual(before);

    const uploaded = await api(server, 'POST', '/v1/attachments', {
      auth: alice,
      rawBody: blob,
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(uploaded.status).toBe(200);
    expect((await download(server, uploaded.body.id)).status).toBe(401);
    expect((await api(server, 'GET', `/v1/attachments/${uploaded.body.id}`, { auth: wrong })).status).toBe(401);
  });
});
