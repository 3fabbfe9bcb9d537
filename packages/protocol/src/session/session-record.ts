import { constantTimeEqual } from '../bytes.ts';
import { InvalidMessageError } from '../errors.ts';
import { BinaryWriter, readProto } from '../proto.ts';
import { type SessionState, readSessionState, writeSessionState } from './state.ts';

/** Archived sessions kept per record (libsignal ARCHIVED_STATES_MAX_LENGTH). */
export const MAX_ARCHIVED_STATES = 40;
/**
 * Format of the serialized record; bump when the layout changes incompatibly. 2: sessions carry the
 * full SPQR state. Format 1 records (SPQR-lite: the epoch-0 chain only) are still read and upgraded.
 */
const RECORD_FORMAT_VERSION = 2;
const READABLE_FORMATS = [1, 2];

/**
 * All sessions with one remote device: the current one and up to 40 archived ones, newest first.
 * Both sides may set up sessions at once ("Sesame"); a message for an archived session still
 * decrypts and promotes it back to current.
 */
export class SessionRecord {
  constructor(
    private current: SessionState | undefined = undefined,
    private readonly previous: SessionState[] = [],
  ) {}

  static newFresh(): SessionRecord {
    return new SessionRecord();
  }

  currentState(): SessionState | undefined {
    return this.current;
  }

  previousStates(): readonly SessionState[] {
    return this.previous;
  }

  /** Whether there is a current session able to send (libsignal's hasCurrentState). */
  hasCurrentState(): boolean {
    return this.current !== undefined;
  }

  /** Makes `state` current, archiving the old current session. */
  promoteState(state: SessionState): void {
    this.archiveCurrentState();
    this.current = state;
  }

  archiveCurrentState(): void {
    if (!this.current) return;
    this.previous.unshift(this.current);
    this.current = undefined;
    if (this.previous.length > MAX_ARCHIVED_STATES) this.previous.length = MAX_ARCHIVED_STATES;
  }

  /** Replaces the current state in place (after a successful encrypt or decrypt). */
  setCurrentState(state: SessionState): void {
    this.current = state;
  }

  /** Moves archived state `index` to current, replacing it with its updated form. */
  promotePreviousState(index: number, updated: SessionState): void {
    this.previous.splice(index, 1);
    this.promoteState(updated);
  }

  /**
   * Finds a session with this version and initiator base key (a repeated PreKey message) and makes
   * it current. Returns false when none matches.
   */
  promoteMatchingSession(version: number, aliceBaseKey: Uint8Array): boolean {
    const matches = (s: SessionState) => s.version === version && constantTimeEqual(s.aliceBaseKey, aliceBaseKey);
    if (this.current && matches(this.current)) return true;
    const index = this.previous.findIndex(matches);
    if (index < 0) return false;
    this.promotePreviousState(index, this.previous[index] as SessionState);
    return true;
  }

  serialize(): Uint8Array {
    const writer = new BinaryWriter().tag(1, 0).uint32(RECORD_FORMAT_VERSION);
    if (this.current) {
      writer.tag(2, 2).fork();
      writeSessionState(writer, this.current);
      writer.join();
    }
    for (const state of this.previous) {
      writer.tag(3, 2).fork();
      writeSessionState(writer, state);
      writer.join();
    }
    return writer.finish();
  }

  static deserialize(serialized: Uint8Array): SessionRecord {
    let format: number | undefined;
    let current: SessionState | undefined;
    const previous: SessionState[] = [];
    readProto(serialized, 'SessionRecord', (f) => {
      if (f.no === 1) format = f.uint32();
      else if (f.no === 2) current = readSessionState(f.bytes());
      else if (f.no === 3) previous.push(readSessionState(f.bytes()));
    });
    if (format === undefined || !READABLE_FORMATS.includes(format))
      throw new InvalidMessageError(`SessionRecord: unknown format ${format}`);
    return new SessionRecord(current, previous);
  }
}
