/**
 * One connection per request. Registration blocks the event loop for seconds while it generates
 * keys; Node's fetch (undici) would then reuse a keep-alive connection that the server closed in
 * the meantime, and a POST on it fails with ECONNRESET (seen as "cannot reach the server"). The CLI
 * makes a handful of requests per run, so a fresh connection each time costs next to nothing.
 */
export function useFreshConnections(): void {
  const original = globalThis.fetch;
  globalThis.fetch = (input: Parameters<typeof fetch>[0], init?: RequestInit) => {
    const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
    headers.set('connection', 'close');
    return original(input, { ...init, headers });
  };
}
