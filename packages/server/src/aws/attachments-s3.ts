import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  type GetObjectCommandOutput,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { PayloadTooLargeError, badRequest } from '../core/errors.ts';
import type { AttachmentMeta, AttachmentStore, Clock } from '../core/ports.ts';

/** Attachment ids become object keys: only URL-safe characters. */
const ID = /^[A-Za-z0-9_-]{1,128}$/;
const PREFIX = 'attachments/';
/** Bodies up to this size are one PutObject; larger ones a multipart upload in parts of this size. */
const PART_BYTES = 8 * 1024 * 1024;

/**
 * Encrypted attachment blobs in S3 (the AWS deployment's AttachmentStore). Each blob is one object
 * `attachments/<id>` whose user metadata holds `expires-at` and `created-at` (ms): no database row.
 *
 * The HTTP contract streams blobs through the server (POST/GET /v1/attachments), so on Lambda they
 * pass through the function: API Gateway and Lambda cap a request and a response at 6 MB (the body
 * arrives base64 in the event, so ~4.5 MB of binary). Larger blobs need presigned S3 URLs, which the
 * client does not speak yet; the store itself takes up to `maxBytes` (100 MiB) in 8 MiB parts.
 *
 * Expiry: `get` refuses an object past its `expires-at`; the bucket's lifecycle rule (CDK: expire
 * after 31 days, abort incomplete multipart uploads after a day) deletes objects without any
 * sweep; `deleteExpired` is a backstop for emulators and buckets without the rule.
 */
export class S3AttachmentStore implements AttachmentStore {
  constructor(
    private readonly s3: S3Client,
    readonly bucket: string,
    private readonly clock: Clock = { now: () => Date.now() },
  ) {}

  async put(
    id: string,
    body: ReadableStream<Uint8Array>,
    maxBytes: number,
    expiresAt: number,
  ): Promise<AttachmentMeta> {
    if (!ID.test(id)) throw badRequest('invalid_attachment_id', 'the attachment id is not valid');
    const Key = PREFIX + id;
    const createdAt = this.clock.now();
    const Metadata = { 'expires-at': String(expiresAt), 'created-at': String(createdAt) };
    const reader = body.getReader();
    let size = 0;
    let buffered: Uint8Array[] = [];
    let bufferedBytes = 0;
    let uploadId: string | undefined;
    const parts: { ETag: string; PartNumber: number }[] = [];
    const flushPart = async () => {
      const PartNumber = parts.length + 1;
      const out = await this.s3.send(
        new UploadPartCommand({
          Bucket: this.bucket,
          Key,
          UploadId: uploadId,
          PartNumber,
          Body: concat(buffered, bufferedBytes),
          ContentLength: bufferedBytes,
        }),
      );
      parts.push({ ETag: out.ETag ?? '', PartNumber });
      buffered = [];
      bufferedBytes = 0;
    };
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.byteLength;
        if (size > maxBytes) {
          await reader.cancel().catch(() => {});
          throw new PayloadTooLargeError(maxBytes);
        }
        buffered.push(value);
        bufferedBytes += value.byteLength;
        if (bufferedBytes >= PART_BYTES) {
          uploadId ??= (
            await this.s3.send(
              new CreateMultipartUploadCommand({
                Bucket: this.bucket,
                Key,
                Metadata,
                ContentType: 'application/octet-stream',
              }),
            )
          ).UploadId;
          await flushPart();
        }
      }
      if (uploadId === undefined) {
        await this.s3.send(
          new PutObjectCommand({
            Bucket: this.bucket,
            Key,
            Body: concat(buffered, bufferedBytes),
            ContentLength: bufferedBytes,
            ContentType: 'application/octet-stream',
            Metadata,
          }),
        );
      } else {
        if (bufferedBytes > 0) await flushPart();
        await this.s3.send(
          new CompleteMultipartUploadCommand({
            Bucket: this.bucket,
            Key,
            UploadId: uploadId,
            MultipartUpload: { Parts: parts },
          }),
        );
      }
    } catch (error) {
      reader.releaseLock();
      if (uploadId !== undefined) {
        await this.s3
          .send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId: uploadId }))
          .catch(() => {});
      }
      throw error;
    }
    return { id, size, createdAt, expiresAt };
  }

  async get(id: string, now: number): Promise<{ meta: AttachmentMeta; body: ReadableStream<Uint8Array> } | null> {
    if (!ID.test(id)) return null;
    let out: GetObjectCommandOutput;
    try {
      out = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: PREFIX + id }));
    } catch (error) {
      if (isNotFound(error)) return null;
      throw error;
    }
    const meta = metaOf(id, out.Metadata, out.ContentLength);
    const stream = out.Body as (typeof out.Body & { destroy?: () => void }) | undefined;
    if (!stream || !meta || meta.expiresAt <= now) {
      stream?.destroy?.();
      return null;
    }
    return { meta, body: stream.transformToWebStream() as ReadableStream<Uint8Array> };
  }

  /** Deletes expired blobs (a backstop for the bucket's lifecycle rule); returns how many went. */
  async deleteExpired(now: number): Promise<number> {
    let deleted = 0;
    let token: string | undefined;
    do {
      const page = await this.s3.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: PREFIX,
          ...(token ? { ContinuationToken: token } : {}),
        }),
      );
      for (const object of page.Contents ?? []) {
        if (!object.Key) continue;
        try {
          const head = await this.s3.send(new HeadObjectCommand({ Bucket: this.bucket, Key: object.Key }));
          const expiresAt = Number(head.Metadata?.['expires-at']);
          if (Number.isFinite(expiresAt) && expiresAt > now) continue;
        } catch (error) {
          if (isNotFound(error)) continue;
          throw error;
        }
        await this.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: object.Key }));
        deleted++;
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return deleted;
  }
}

function metaOf(id: string, metadata: Record<string, string> | undefined, size: number | undefined) {
  const expiresAt = Number(metadata?.['expires-at']);
  const createdAt = Number(metadata?.['created-at']);
  if (!Number.isFinite(expiresAt) || size === undefined) return null;
  return { id, size, createdAt: Number.isFinite(createdAt) ? createdAt : 0, expiresAt } satisfies AttachmentMeta;
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  if (chunks.length === 1) return chunks[0] as Uint8Array;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

function isNotFound(error: unknown): boolean {
  const e = error as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
}
