/**
 * The web build of the app (apps/mobile/dist), which the standalone server serves at `/`.
 *
 *   tsx apps/mobile/scripts/web-build.mts           builds it when it is missing or older than its sources
 *   tsx apps/mobile/scripts/web-build.mts --force   builds it again
 *
 * `npm start` runs the first form before starting the server (about 30 s the first time).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const MOBILE_DIR = fileURLToPath(new URL('..', import.meta.url));
export const WEB_DIST = join(MOBILE_DIR, 'dist');
const REPO = resolve(MOBILE_DIR, '..', '..');

/** What goes into the bundle: the app and the packages it imports from source. */
const SOURCES = [
  join(MOBILE_DIR, 'index.ts'),
  join(MOBILE_DIR, 'app.json'),
  join(MOBILE_DIR, 'package.json'),
  join(MOBILE_DIR, 'src'),
  join(REPO, 'packages', 'client', 'src'),
  join(REPO, 'packages', 'client', 'package.json'),
  join(REPO, 'packages', 'protocol', 'src'),
  join(REPO, 'packages', 'protocol', 'package.json'),
];

function newest(path: string): number {
  if (!existsSync(path)) return 0;
  const info = statSync(path);
  if (!info.isDirectory()) return info.mtimeMs;
  let latest = info.mtimeMs;
  for (const entry of readdirSync(path)) latest = Math.max(latest, newest(join(path, entry)));
  return latest;
}

export function webBuildState(): 'missing' | 'stale' | 'fresh' {
  const index = join(WEB_DIST, 'index.html');
  if (!existsSync(index)) return 'missing';
  const built = statSync(index).mtimeMs;
  return SOURCES.some((source) => newest(source) > built) ? 'stale' : 'fresh';
}

/** Runs `expo export --platform web` in apps/mobile (offline; ~30 s cold, a few seconds warm). */
export function exportWebBuild(): void {
  const result = spawnSync('npx', ['expo', 'export', '--platform', 'web', '--output-dir', 'dist'], {
    cwd: MOBILE_DIR,
    stdio: 'inherit',
    env: { ...process.env, CI: '1', EXPO_NO_TELEMETRY: '1' },
  });
  if (result.status !== 0)
    throw new Error(`expo export --platform web failed (exit ${result.status ?? result.signal})`);
}

/** Builds the web app unless an up-to-date build exists. Returns what it found. */
export function ensureWebBuild(force = false): 'missing' | 'stale' | 'fresh' {
  const state = webBuildState();
  if (force || state !== 'fresh') {
    process.stdout.write(
      `hush: ${state === 'fresh' ? 'rebuilding' : state === 'missing' ? 'building' : 'updating'} the web app (apps/mobile/dist)…\n`,
    );
    exportWebBuild();
  }
  return state;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    ensureWebBuild(process.argv.includes('--force'));
  } catch (error) {
    process.stderr.write(`hush: ${(error as Error).message}\n`);
    process.exit(1);
  }
}
