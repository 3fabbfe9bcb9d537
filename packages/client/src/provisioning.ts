import { type MessageInitShape, create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { type CryptoProvider, IdentityKeyPair, PrivateKey, PublicKey } from '@hush/protocol';
import { openBlob, sealBlob } from './content/attachment-crypto.ts';
import { type ProvisionMessage, ProvisionMessageSchema } from './content/content.ts';
import { fromBase64Url, toBase64Url } from './util/base64.ts';

/*
 * Linking a new device by QR code, as Signal does it. The new device shows
 *   hush://link?address=<provisioning address>&key=<base64url of its ephemeral public key>
 * The primary device encrypts a ProvisionMessage (identity key pair, account, link code) to that
 * key and leaves it at the address on the server, which relays the opaque bytes once.
 *
 *   sealed = 0x01 ‖ ephemeral public key (33) ‖ sealBlob(HKDF(X25519(eph, device key), 64), message)
 *
 * A fresh ephemeral key on both sides means the server (or anyone who photographs the QR code
 * without the primary's cooperation) learns nothing; the QR code itself is the authentication: the
 * user scans the screen of the device in their hand.
 */

const SEALED_VERSION = 1;
const INFO = new TextEncoder().encode('Hush Provisioning Message v1');
const LINK_SCHEME = 'hush:';

/** The link URI could not be read (not a Hush link, or damaged). */
export class LinkUriError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LinkUriError';
  }
}

/** The provisioning message could not be opened (wrong key, damaged, not for this device). */
export class ProvisioningError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ProvisioningError';
  }
}

export interface LinkRequest {
  /** Where the server holds the provisioning message for this device. */
  address: string;
  /** The new device's ephemeral Curve25519 public key. */
  publicKey: PublicKey;
}

/** A new device's side: a random address and an ephemeral key pair for one linking attempt. */
export async function newLinkRequest(
  crypto: CryptoProvider,
): Promise<{ request: LinkRequest; privateKey: PrivateKey }> {
  const privateKey = PrivateKey.generate(crypto);
  return {
    request: { address: toBase64Url(crypto.randomBytes(16)), publicKey: await privateKey.getPublicKey(crypto) },
    privateKey,
  };
}

export function linkUri(request: LinkRequest): string {
  return `hush://link?address=${request.address}&key=${toBase64Url(request.publicKey.serialize())}`;
}

export function parseLinkUri(uri: string): LinkRequest {
  let url: URL;
  try {
    url = new URL(uri.trim());
  } catch {
    throw new LinkUriError('not a link: expected hush://link?address=…&key=…');
  }
  if (url.protocol !== LINK_SCHEME || url.host !== 'link')
    throw new LinkUriError('not a Hush device link (expected hush://link?…)');
  const address = url.searchParams.get('address') ?? '';
  const key = url.searchParams.get('key') ?? '';
  if (!/^[A-Za-z0-9_-]{22,64}$/.test(address)) throw new LinkUriError('the link has no valid address');
  try {
    return { address, publicKey: PublicKey.deserialize(fromBase64Url(key)) };
  } catch (cause) {
    throw new LinkUriError(`the link has no valid key (${(cause as Error).message})`);
  }
}

async function provisioningKey(crypto: CryptoProvider, secret: Uint8Array): Promise<Uint8Array> {
  return crypto.hkdfSha256(secret, new Uint8Array(0), INFO, 64);
}

/** The primary's side: encrypts `message` to the new device's ephemeral key. */
export async function sealProvisioning(
  crypto: CryptoProvider,
  recipient: PublicKey,
  message: Uint8Array,
): Promise<Uint8Array> {
  const ephemeral = PrivateKey.generate(crypto);
  const key = await provisioningKey(crypto, await ephemeral.agree(crypto, recipient));
  const sealed = await sealBlob(crypto, key, message);
  const ephemeralPublic = (await ephemeral.getPublicKey(crypto)).serialize();
  const out = new Uint8Array(1 + ephemeralPublic.length + sealed.length);
  out[0] = SEALED_VERSION;
  out.set(ephemeralPublic, 1);
  out.set(sealed, 1 + ephemeralPublic.length);
  return out;
}

/** The new device's side: opens what the primary sealed to its ephemeral key. */
export async function openProvisioning(
  crypto: CryptoProvider,
  privateKey: PrivateKey,
  sealed: Uint8Array,
): Promise<Uint8Array> {
  if (sealed[0] !== SEALED_VERSION) throw new ProvisioningError(`unknown provisioning version ${sealed[0]}`);
  try {
    const ephemeral = PublicKey.deserialize(sealed.subarray(1, 34));
    const key = await provisioningKey(crypto, await privateKey.agree(crypto, ephemeral));
    return await openBlob(crypto, key, sealed.subarray(34));
  } catch (cause) {
    throw new ProvisioningError('the provisioning message does not open with this device’s key', { cause });
  }
}

export function encodeProvisionMessage(init: MessageInitShape<typeof ProvisionMessageSchema>): Uint8Array {
  return toBinary(ProvisionMessageSchema, create(ProvisionMessageSchema, init));
}

/** Reads an opened provisioning message; everything a device needs to join must be there. */
export function decodeProvisionMessage(bytes: Uint8Array): ProvisionMessage & { identity: IdentityKeyPair } {
  let message: ProvisionMessage;
  let identity: IdentityKeyPair;
  try {
    message = fromBinary(ProvisionMessageSchema, bytes);
    identity = IdentityKeyPair.deserialize(message.identityKeyPair);
  } catch (cause) {
    throw new ProvisioningError('the provisioning message is malformed', { cause });
  }
  if (!message.accountId || !message.number || !message.linkCode)
    throw new ProvisioningError('the provisioning message lacks the account or the link code');
  return Object.assign(message, { identity });
}
