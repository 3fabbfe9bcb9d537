/**
 * The standalone server serves the web app's build at `/`: static files with their types, the
 * app's page for other GET paths (client-side routes), never in place of an API route, nothing
 * outside the build directory. The app itself runs in Chromium in packages/client/test/web-app.test.ts.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/standalone/config.ts';
import { type RunningServer, startServer } from '../src/standalone/server.ts';

const INDEX =
  '<!doctype html><title>Hush</title><div id="root"></div><script src="/_expo/static/js/web/index-abc.js"></script>';

async function start(webDir: string): Promise<RunningServer> {
  const config = loadConfig({
    HUSH_PORT: '0',
    HUSH_DATA_DIR: mkdtempSync(join(tmpdir(), 'hush-web-data-')),
    HUSH_LOG_LEVEL: 'silent',
    HUSH_WEB_DIR: webDir,
  });
  return startServer(config, { devSmsOutput: new PassThrough() });
}

describe('the standalone server with a web build', () => {
  let server: RunningServer;
  let outside: string;

  beforeAll(async () => {
    const parent = mkdtempSync(join(tmpdir(), 'hush-web-'));
    const dir = join(parent, 'dist');
    mkdirSync(join(dir, '_expo/static/js/web'), { recursive: true });
    mkdirSync(join(dir, 'assets'), { recursive: true });
    writeFileSync(join(dir, 'index.html'), INDEX);
    writeFileSync(join(dir, '_expo/static/js/web/index-abc.js'), 'console.log("app")');
    writeFileSync(join(dir, 'favicon.ico'), new Uint8Array([0, 0, 1, 0]));
    writeFileSync(join(dir, 'assets/logo.png'), new Uint8Array([0x89, 0x50, 0x4e, 0x47]));
    writeFileSync(join(dir, 'metadata.json'), '{}');
    outside = 'secret outside the build';
    writeFileSync(join(parent, 'secret.txt'), outside);
    server = await start(dir);
  });

  afterAll(async () => {
    await server?.close();
  });

  const get = (path: string, init?: RequestInit) => fetch(`${server.url}${path}`, init);

  it('serves index.html at / without caching, with a strict content security policy', async () => {
    const res = await get('/');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain(`ws://${new URL(server.url).host}`);
    expect(csp).toContain("frame-ancestors 'none'");
    expect(await res.text()).toBe(INDEX);
    expect((await get('/index.html')).headers.get('cache-control')).toBe('no-store');
  });

  it('serves files with their content types; hashed bundles are cached for good', async () => {
    const js = await get('/_expo/static/js/web/index-abc.js');
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(js.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect(await js.text()).toBe('console.log("app")');
    const icon = await get('/favicon.ico');
    expect(icon.headers.get('content-type')).toBe('image/x-icon');
    expect(icon.headers.get('cache-control')).toBe('no-cache');
    expect((await get('/assets/logo.png')).headers.get('content-type')).toBe('image/png');
    expect((await get('/metadata.json')).headers.get('content-type')).toBe('application/json; charset=utf-8');
    const head = await get('/_expo/static/js/web/index-abc.js', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  it('answers other GET paths with the app (client-side routes), but a missing build file is a 404', async () => {
    for (const path of ['/chats', '/chats/some-id', '/me?tab=1']) {
      const res = await get(path);
      expect(res.status, path).toBe(200);
      expect(res.headers.get('cache-control'), path).toBe('no-store');
      expect(await res.text(), path).toBe(INDEX);
    }
    for (const path of ['/_expo/static/js/web/missing.js', '/assets/missing.png']) {
      expect((await get(path)).status, path).toBe(404);
    }
  });

  it('never answers an API path with the app: unknown API routes stay JSON 404s', async () => {
    for (const path of ['/v1/nothing', '/v2/keys/count', '/V1/keys/count', '/docs/x']) {
      const res = await get(path);
      expect(res.status, path).toBe(404);
      expect((await res.json()).error.code, path).toBe('not_found');
    }
    expect((await get('/healthz')).status).toBe(200);
    expect((await get('/openapi.json')).headers.get('content-type')).toContain('application/json');
    const post = await get('/chats', { method: 'POST' });
    expect(post.status).toBe(404);
  });

  it('serves nothing outside the build directory', async () => {
    for (const path of ['/../secret.txt', '/%2e%2e/secret.txt', '/..%2fsecret.txt', '/%2e%2e%2fsecret.txt', '/a/%00']) {
      const res = await get(path);
      const text = await res.text();
      expect(text, path).not.toContain(outside);
    }
  });
});

describe('the standalone server without a web build', () => {
  it('shows a note at / (a directory without index.html, or HUSH_WEB_DIR=none)', async () => {
    const server = await start(mkdtempSync(join(tmpdir(), 'hush-web-empty-')));
    try {
      expect(server.webDir).toBeUndefined();
      const res = await fetch(`${server.url}/`);
      expect(await res.text()).toContain('Hush server');
      expect((await fetch(`${server.url}/chats`)).status).toBe(404);
    } finally {
      await server.close();
    }
  });
});
