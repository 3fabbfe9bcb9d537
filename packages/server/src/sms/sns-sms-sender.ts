import { type MessageAttributeValue, PublishCommand, type SNSClient } from '@aws-sdk/client-sns';
import type { SmsSender } from '../core/ports.ts';

export interface SnsSmsSenderOptions {
  /**
   * Alphanumeric sender ID shown as the sender where the destination country supports it
   * (`AWS.SNS.SMS.SenderID`): 1 to 11 letters and digits, at least one letter.
   */
  senderId?: string;
}

/**
 * An SMS that SNS did not accept. The message names neither the number nor the code; `code` is
 * SNS's error code (e.g. `InvalidParameter`, `Throttled`) and `cause` the SDK's error.
 */
export class SmsDeliveryError extends Error {
  constructor(
    readonly code: string,
    /** True when trying again later may work (throttling, a fault on SNS's side). */
    readonly retryable: boolean,
    readonly httpStatus: number | undefined,
    options: { cause: unknown },
  ) {
    super(`SNS did not accept the SMS: ${code}${httpStatus ? ` (HTTP ${httpStatus})` : ''}`, options);
    this.name = 'SmsDeliveryError';
  }
}

const SENDER_ID = /^(?=.*[A-Za-z])[A-Za-z0-9]{1,11}$/;

/** Sends verification codes as transactional SMS through Amazon SNS (`Publish` to a phone number). */
export class SnsSmsSender implements SmsSender {
  private readonly senderId: string | undefined;

  /** `client` is configured by the caller (region, credentials, `endpoint` for a local fake). */
  constructor(
    private readonly client: SNSClient,
    options: SnsSmsSenderOptions = {},
  ) {
    if (options.senderId !== undefined && !SENDER_ID.test(options.senderId)) {
      throw new Error('an SNS sender ID is 1 to 11 letters and digits with at least one letter');
    }
    this.senderId = options.senderId;
  }

  async sendVerificationCode(number: string, code: string): Promise<void> {
    const attributes: Record<string, MessageAttributeValue> = {
      'AWS.SNS.SMS.SMSType': { DataType: 'String', StringValue: 'Transactional' },
    };
    if (this.senderId) attributes['AWS.SNS.SMS.SenderID'] = { DataType: 'String', StringValue: this.senderId };
    try {
      await this.client.send(
        new PublishCommand({ PhoneNumber: number, Message: `Your Hush code: ${code}`, MessageAttributes: attributes }),
      );
    } catch (error) {
      throw toDeliveryError(error);
    }
  }
}

function toDeliveryError(error: unknown): SmsDeliveryError {
  const e = (typeof error === 'object' && error !== null ? error : {}) as {
    name?: unknown;
    Code?: unknown;
    code?: unknown;
    $fault?: unknown;
    $retryable?: unknown;
    $metadata?: { httpStatusCode?: number };
  };
  const status = e.$metadata?.httpStatusCode;
  // No HTTP answer at all, e.g. ECONNREFUSED or ETIMEDOUT: SNS was not reached.
  const transport = status === undefined && typeof e.code === 'string' && /^E[A-Z]+$/.test(e.code) ? e.code : undefined;
  const code =
    typeof e.Code === 'string' ? e.Code : (transport ?? (typeof e.name === 'string' ? e.name : 'UnknownError'));
  const retryable =
    Boolean(e.$retryable) || e.$fault === 'server' || status === 429 || (status ?? 0) >= 500 || transport !== undefined;
  return new SmsDeliveryError(code, retryable, status, { cause: error });
}
