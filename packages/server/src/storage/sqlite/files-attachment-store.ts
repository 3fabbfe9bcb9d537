import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { type FileHandle, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { PayloadTooLargeError, badRequest } from '../../core/errors.ts';
import type { AttachmentMeta, AttachmentStore, Clock } from '../../core/ports.ts';
import type { SqliteStorage } from './sqlite-storage.ts';

/** Attachment ids become file names: only URL-safe characters, nothing that can walk a path. */
const ID = /^[A-Za-z0-9_-]{1,128}$/;

/** Partial uploads and blobs without metadata older than this are swept by `deleteExpired`. */
const ORPHAN_AGE_MS = 60 * 60 * 1000;

const TMP_DIR = '.tmp';

/**
 * Encrypted attachment blobs as files under `dir`, their metadata in the SQLite `attachments`
 * table. An upload streams into `dir/.tmp/`, is fsynced and renamed into place (atomic), and only
 * then gets its metadata row, so a crash at any point leaves either no attachment or a complete
 * one; leftovers (a partial file, a blob whose metadata was never written or was already deleted)
 * are swept by `deleteExpired` once they are an hour old.
 */
export class FileAttachmentStore implements AttachmentStore {
  private readonly tmpDir: string;

  constructor(
    readonly dir: string,
    private readonly meta: SqliteStorage,
    private readonly clock: Clock = { now: () => Date.now() },
  ) {
    this.tmpDir = join(dir, TMP_DIR);
    mkdirSync(this.tmpDir, { recursive: true });
  }

  async put(
    id: string,
    body: ReadableStream<Uint8Array>,
    maxBytes: number,
    expiresAt: number,
  ): Promise<AttachmentMeta> {
    if (!ID.test(id)) throw badRequest('invalid_attachment_id', 'the attachment id is not valid');
    const tmp = join(this.tmpDir, `${id}.${randomBytes(6).toString('hex')}.part`);
    const reader = body.getReader();
    let file: FileHandle | undefined;
    let size = 0;
    try {
      file = await open(tmp, 'wx', 0o600);
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        size += value.byteLength;
        if (size > maxBytes) {
          await reader.cancel().catch(() => {});
          throw new PayloadTooLargeError(maxBytes);
        }
        let written = 0;
        while (written < value.byteLength) {
          const { bytesWritten } = await file.write(value, written, value.byteLength - written);
          written += bytesWritten;
        }
      }
      await file.sync();
      await file.close();
      file = undefined;
      await rename(tmp, this.path(id));
      await this.syncDir();
    } catch (error) {
      reader.releaseLock();
      await file?.close().catch(() => {});
      await rm(tmp, { force: true });
      throw error;
    }
    const meta: AttachmentMeta = { id, size, createdAt: this.clock.now(), expiresAt };
    this.meta.putAttachmentMeta(meta);
    return meta;
  }

  async get(id: string, now: number): Promise<{ meta: AttachmentMeta; body: ReadableStream<Uint8Array> } | null> {
    if (!ID.test(id)) return null;
    const meta = this.meta.getAttachmentMeta(id);
    if (!meta || meta.expiresAt <= now) return null;
    let file: FileHandle;
    try {
      file = await open(this.path(id), 'r');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw error;
    }
    // The open handle keeps the blob readable even if deleteExpired unlinks it meanwhile.
    const body = Readable.toWeb(file.createReadStream()) as unknown as ReadableStream<Uint8Array>;
    return { meta, body };
  }

  /** Deletes expired attachments (and sweeps old orphans); returns how many attachments went. */
  async deleteExpired(now: number): Promise<number> {
    const ids = this.meta.deleteExpiredAttachmentMeta(now);
    for (const id of ids) await rm(this.path(id), { force: true });
    await this.sweepOrphans();
    return ids.length;
  }

  private path(id: string): string {
    return join(this.dir, id);
  }

  private async syncDir(): Promise<void> {
    const dir = await open(this.dir, 'r');
    try {
      await dir.sync();
    } catch {
      // Some platforms cannot fsync a directory; the rename is still atomic there.
    } finally {
      await dir.close();
    }
  }

  private async sweepOrphans(): Promise<void> {
    const cutoff = Date.now() - ORPHAN_AGE_MS;
    const old = async (path: string) => {
      try {
        return (await stat(path)).mtimeMs < cutoff;
      } catch {
        return false;
      }
    };
    for (const name of await readdir(this.tmpDir)) {
      const path = join(this.tmpDir, name);
      if (await old(path)) await unlink(path).catch(() => {});
    }
    for (const name of await readdir(this.dir)) {
      if (name === TMP_DIR || !ID.test(name)) continue;
      const path = this.path(name);
      if (!this.meta.getAttachmentMeta(name) && (await old(path))) await unlink(path).catch(() => {});
    }
  }
}
