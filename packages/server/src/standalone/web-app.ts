import { existsSync, statSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { extname, join, resolve, sep } from 'node:path';
import type { Context, Env, Hono } from 'hono';

/*
 * The web build of the Hush app (`npx expo export --platform web` in apps/mobile writes it to
 * apps/mobile/dist), served at `/` by the standalone server: static files with their content types,
 * and index.html for any other GET path that is not an API route (the app routes on the client).
 * Hashed bundles under /_expo/static are cached for a year; index.html and everything else is
 * revalidated or not cached, so a new build shows on the next load.
 */

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.webmanifest': 'application/manifest+json',
  '.txt': 'text/plain; charset=utf-8',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.ttf': 'font/ttf',
  '.otf': 'font/otf',
  '.wasm': 'application/wasm',
};

/** Paths the API owns (every version, present or future): never answered with the app. */
const API = /^\/(v\d+(\/|$)|openapi\.json$|docs(\/|$)|healthz$|metrics$)/i;
/** Build output that must exist: a missing file there is a 404, not the app's page. */
const ASSETS = /^\/(_expo|assets)\//;

/** Whether `dir` holds a web build (an index.html). */
export function hasWebBuild(dir: string | undefined): dir is string {
  if (!dir) return false;
  const index = join(dir, 'index.html');
  return existsSync(index) && statSync(index).isFile();
}

function securityHeaders<E extends Env>(c: Context<E>): void {
  c.header('X-Content-Type-Options', 'nosniff');
  c.header('Referrer-Policy', 'no-referrer');
}

/**
 * The page may load scripts only from this origin and talk only to this server (HTTP and its
 * WebSocket): an injected script could use the storage key while it runs, so none may run.
 * react-native-web writes its styles into a style element, hence 'unsafe-inline' for styles only.
 */
function contentSecurityPolicy<E extends Env>(c: Context<E>): string {
  const host = c.req.header('host') ?? '';
  const sockets = /^[a-z0-9.[\]:-]+$/i.test(host) ? ` ws://${host} wss://${host}` : '';
  return [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self' data:",
    `connect-src 'self'${sockets}`,
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

/**
 * Serves the web build in `dir` on `app` for every GET (and HEAD) the API routes did not answer.
 * Call after the API routes are registered.
 */
export function serveWebApp<E extends Env>(app: Hono<E>, dir: string): void {
  const root = resolve(dir);
  const sendIndex = async (c: Context<E>) => {
    const html = await readFile(join(root, 'index.html'));
    securityHeaders(c);
    c.header('Content-Security-Policy', contentSecurityPolicy(c));
    c.header('Cache-Control', 'no-store');
    c.header('Content-Type', TYPES['.html']);
    return c.body(html, 200);
  };

  app.get('*', async (c) => {
    const path = c.req.path;
    if (API.test(path)) return c.notFound();
    let decoded: string;
    try {
      decoded = decodeURIComponent(path);
    } catch {
      return c.notFound();
    }
    if (decoded.includes('\0')) return c.notFound();
    const file = resolve(root, `.${decoded}`);
    // Nothing outside the build directory, whatever the path says (.., encoded slashes).
    if (file !== root && !file.startsWith(root + sep)) return c.notFound();
    if (file === root || file === join(root, 'index.html')) return sendIndex(c);
    const info = await stat(file).catch(() => undefined);
    if (info?.isFile()) {
      const body = await readFile(file);
      securityHeaders(c);
      c.header('Content-Type', TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream');
      c.header(
        'Cache-Control',
        decoded.startsWith('/_expo/static/') ? 'public, max-age=31536000, immutable' : 'no-cache',
      );
      return c.body(body, 200);
    }
    if (ASSETS.test(decoded)) return c.notFound();
    return sendIndex(c);
  });
}
