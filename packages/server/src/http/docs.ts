/**
 * A self-contained API reference page: it renders /openapi.json in the browser with no external
 * scripts or fonts, so it works offline and under a strict Content-Security-Policy.
 */
export function docsPage(): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Hush API</title>
<style>
  body { font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #1b1b1b; }
  h1 { margin-bottom: 0; } .lead { color: #555; margin-top: .25rem; }
  .op { border: 1px solid #ddd; border-radius: 6px; margin: .75rem 0; padding: .5rem .75rem; }
  .method { display: inline-block; min-width: 4.5rem; font-weight: 700; font-family: ui-monospace, monospace; }
  .path { font-family: ui-monospace, monospace; } .lock { color: #a15c00; font-size: .85em; margin-left: .5rem; }
  details pre { background: #f6f6f6; padding: .5rem; overflow: auto; font-size: 12px; }
</style>
</head>
<body>
<h1>Hush API</h1>
<p class="lead">Machine-readable contract: <a href="/openapi.json">/openapi.json</a>. Authenticated routes use HTTP Basic
<code>accountId.deviceId : password</code>. Errors are <code>{"error": {"code", "message"}}</code>.</p>
<div id="ops">Loading…</div>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const root = document.getElementById('ops');
  root.textContent = '';
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const box = document.createElement('div'); box.className = 'op';
      const head = document.createElement('div');
      const m = document.createElement('span'); m.className = 'method'; m.textContent = method.toUpperCase();
      const p = document.createElement('span'); p.className = 'path'; p.textContent = path;
      head.append(m, p);
      if (op.security) { const l = document.createElement('span'); l.className = 'lock'; l.textContent = 'auth'; head.append(l); }
      const summary = document.createElement('div'); summary.textContent = op.summary || '';
      const details = document.createElement('details');
      const s = document.createElement('summary'); s.textContent = 'request and responses';
      const pre = document.createElement('pre'); pre.textContent = JSON.stringify({ request: op.requestBody, parameters: op.parameters, responses: op.responses }, null, 2);
      details.append(s, pre);
      box.append(head, summary, details);
      root.append(box);
    }
  }
});
</script>
</body>
</html>`;
}
