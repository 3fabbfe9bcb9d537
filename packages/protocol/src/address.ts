import { InvalidArgumentError } from './errors.ts';

/** Who a session or sender key belongs to: an account name (a ServiceId or any string) and a device. */
export class ProtocolAddress {
  constructor(
    readonly name: string,
    readonly deviceId: number,
  ) {
    if (!Number.isInteger(deviceId) || deviceId < 1 || deviceId > 127) {
      throw new InvalidArgumentError(`device id must be an integer from 1 to 127, got ${deviceId}`);
    }
  }

  toString(): string {
    return `${this.name}.${this.deviceId}`;
  }

  equals(other: ProtocolAddress): boolean {
    return this.name === other.name && this.deviceId === other.deviceId;
  }
}
