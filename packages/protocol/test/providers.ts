import { jsCrypto } from '../src/crypto/js.ts';
import { nodeCrypto } from '../src/crypto/node.ts';
import type { CryptoProvider } from '../src/crypto/provider.ts';
import { webCrypto } from '../src/crypto/web.ts';

/** Every crypto provider; protocol suites run once per entry (`describe.each(providers)`). */
export const providers: CryptoProvider[] = [nodeCrypto, webCrypto, jsCrypto];
