import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { InvalidMessageError } from './errors.ts';

export { BinaryWriter };

/** One field of a protobuf being read; its accessors check the wire type before reading. */
export class ProtoField {
  // One instance is reused for every field of a message (records are parsed on every use).
  no = 0;
  wireType: WireType = WireType.Varint;

  constructor(
    private readonly reader: BinaryReader,
    private readonly what: string,
  ) {}

  private expect(wireType: WireType): void {
    if (this.wireType !== wireType)
      throw new InvalidMessageError(`${this.what}: field ${this.no} has the wrong wire type`);
  }

  /** A copy of a length-delimited field, so callers may keep it. */
  bytes(): Uint8Array {
    this.expect(WireType.LengthDelimited);
    return this.reader.bytes().slice();
  }

  uint32(): number {
    this.expect(WireType.Varint);
    return this.reader.uint32();
  }

  uint64(): bigint {
    this.expect(WireType.Varint);
    return BigInt(this.reader.uint64());
  }

  fixed64(): bigint {
    this.expect(WireType.Bit64);
    return BigInt(this.reader.fixed64());
  }

  bool(): boolean {
    this.expect(WireType.Varint);
    return this.reader.bool();
  }

  string(): string {
    this.expect(WireType.LengthDelimited);
    return this.reader.string();
  }
}

/**
 * Walks a protobuf message and hands each known field to `visit`; fields `visit` leaves unread are
 * skipped, as protobuf requires. Any malformation (truncation, bad varint, wrong wire type)
 * becomes an InvalidMessageError naming `what`.
 */
export function readProto(bytes: Uint8Array, what: string, visit: (field: ProtoField) => void): void {
  const reader = new BinaryReader(bytes);
  const field = new ProtoField(reader, what);
  try {
    while (reader.pos < reader.len) {
      const [no, wireType] = reader.tag();
      const start = reader.pos;
      field.no = no;
      field.wireType = wireType;
      visit(field);
      if (reader.pos === start) reader.skip(wireType, no);
    }
    if (reader.pos !== reader.len) throw new Error('trailing bytes');
  } catch (error) {
    if (error instanceof InvalidMessageError) throw error;
    throw new InvalidMessageError(`${what}: malformed protobuf (${(error as Error).message})`);
  }
}

export function requireField<T>(value: T | undefined, what: string, name: string): T {
  if (value === undefined) throw new InvalidMessageError(`${what}: missing required field ${name}`);
  return value;
}
