/** Where `hush` looks for the server when neither --server, $HUSH_SERVER nor a registration says. */
export const DEFAULT_SERVER = 'http://127.0.0.1:8080';
