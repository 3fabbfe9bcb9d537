/**
 * A small local fake of the Amazon SNS Query API, for tests of code that publishes SMS through
 * `@aws-sdk/client-sns` (no SNS emulator exists on npm). It listens on 127.0.0.1, answers
 * `Action=Publish` the way SNS does (form-encoded request, `PublishResponse` XML), records what was
 * published, and can be told to fail the next requests with an SNS error.
 *
 * What the SDK (3.x, awsQuery protocol) sends: `POST /` with
 * `content-type: application/x-www-form-urlencoded`, a SigV4 `authorization` header for service
 * `sns`, and a body like `Action=Publish&Version=2010-03-31&Message=...&PhoneNumber=%2B1...&
 * MessageAttributes.entry.1.Name=AWS.SNS.SMS.SMSType&MessageAttributes.entry.1.Value.DataType=String&
 * MessageAttributes.entry.1.Value.StringValue=Transactional`.
 *
 * Signatures are not verified (the fake does not know the secret); a request without a SigV4
 * header for `sns` is refused as SNS would refuse it.
 */
import { randomUUID } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const XMLNS = 'http://sns.amazonaws.com/doc/2010-03-31/';

export interface SnsMessageAttribute {
  dataType: string;
  stringValue?: string;
  binaryValue?: string;
}

/** One accepted `Publish`. */
export interface SnsPublished {
  messageId: string;
  phoneNumber?: string;
  topicArn?: string;
  targetArn?: string;
  message: string;
  subject?: string;
  messageAttributes: Record<string, SnsMessageAttribute>;
  /** The request's SigV4 `authorization` header. */
  authorization: string;
}

/** Every request that reached the fake, accepted or not. */
export interface SnsRequest {
  action: string | undefined;
  params: Record<string, string>;
  status: number;
}

/** An SNS error answer (see the SNS API reference, "Common Errors" and the Publish errors). */
export interface SnsFailure {
  status: number;
  code: string;
  message: string;
  /** `Sender` for the caller's fault, `Receiver` for SNS's. */
  type: 'Sender' | 'Receiver';
}

export const SNS_INVALID_PARAMETER: SnsFailure = {
  status: 400,
  code: 'InvalidParameter',
  message: 'Invalid parameter: PhoneNumber Reason: the number is not valid',
  type: 'Sender',
};
export const SNS_THROTTLED: SnsFailure = {
  status: 429,
  code: 'Throttled',
  message: 'Rate exceeded',
  type: 'Sender',
};
export const SNS_INTERNAL_ERROR: SnsFailure = {
  status: 500,
  code: 'InternalError',
  message: 'An internal service error occurred',
  type: 'Receiver',
};

export class SnsFake {
  readonly published: SnsPublished[] = [];
  readonly requests: SnsRequest[] = [];
  private failures: SnsFailure[] = [];

  private constructor(
    private readonly server: Server,
    /** `http://127.0.0.1:PORT`, for `new SNSClient({ endpoint })`. */
    readonly endpoint: string,
  ) {}

  static async start(): Promise<SnsFake> {
    let fake: SnsFake | undefined;
    const server = createServer((req, res) => {
      fake?.handle(req, res).catch(() => {
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const { port } = server.address() as AddressInfo;
    fake = new SnsFake(server, `http://127.0.0.1:${port}`);
    return fake;
  }

  /** The next `times` requests are answered with `failure` instead of being handled. */
  failNext(failure: SnsFailure, times = 1): void {
    for (let i = 0; i < times; i++) this.failures.push(failure);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    const params = Object.fromEntries(new URLSearchParams(body));
    const action = params.Action;
    const answer = (status: number, xml: string) => {
      this.requests.push({ action, params, status });
      res.writeHead(status, { 'content-type': 'text/xml', 'x-amzn-requestid': randomUUID() });
      res.end(xml);
    };
    const fail = (f: SnsFailure) => answer(f.status, errorXml(f));

    if (req.method !== 'POST' || !req.headers['content-type']?.startsWith('application/x-www-form-urlencoded')) {
      return fail({ status: 400, code: 'InvalidAction', message: 'expected a form-encoded POST', type: 'Sender' });
    }
    const authorization = req.headers.authorization ?? '';
    if (!/^AWS4-HMAC-SHA256 Credential=[^/]+\/\d{8}\/[a-z0-9-]+\/sns\/aws4_request,/.test(authorization)) {
      return fail({
        status: 403,
        code: 'MissingAuthenticationToken',
        message: 'Request is missing Authentication Token',
        type: 'Sender',
      });
    }
    const failure = this.failures.shift();
    if (failure) return fail(failure);
    if (action !== 'Publish') {
      return fail({
        status: 400,
        code: 'InvalidAction',
        message: `The action ${action ?? ''} is not valid for this endpoint.`,
        type: 'Sender',
      });
    }
    if (params.Version !== '2010-03-31') {
      return fail({ status: 400, code: 'InvalidParameter', message: 'Invalid API version', type: 'Sender' });
    }

    const { Message: message, PhoneNumber: phoneNumber, TopicArn: topicArn, TargetArn: targetArn } = params;
    if (!message) {
      return fail({ ...SNS_INVALID_PARAMETER, message: 'Invalid parameter: Empty message' });
    }
    const targets = [phoneNumber, topicArn, targetArn].filter((t) => t !== undefined);
    if (targets.length !== 1) {
      return fail({
        ...SNS_INVALID_PARAMETER,
        message: 'Invalid parameter: exactly one of TopicArn, TargetArn or PhoneNumber must be given',
      });
    }
    if (phoneNumber !== undefined && !/^\+[1-9]\d{1,14}$/.test(phoneNumber)) {
      return fail({ ...SNS_INVALID_PARAMETER, message: 'Invalid parameter: PhoneNumber Reason: not in E.164 format' });
    }
    const messageAttributes = parseMessageAttributes(params);
    if (!messageAttributes) {
      return fail({
        status: 400,
        code: 'ParameterValueInvalid',
        message: 'The message attribute has an invalid value',
        type: 'Sender',
      });
    }

    const messageId = randomUUID();
    this.published.push({
      messageId,
      ...(phoneNumber !== undefined && { phoneNumber }),
      ...(topicArn !== undefined && { topicArn }),
      ...(targetArn !== undefined && { targetArn }),
      message,
      ...(params.Subject !== undefined && { subject: params.Subject }),
      messageAttributes,
      authorization,
    });
    answer(
      200,
      `<PublishResponse xmlns="${XMLNS}"><PublishResult><MessageId>${messageId}</MessageId></PublishResult>` +
        `<ResponseMetadata><RequestId>${randomUUID()}</RequestId></ResponseMetadata></PublishResponse>`,
    );
  }
}

/** `MessageAttributes.entry.N.{Name,Value.DataType,Value.StringValue,Value.BinaryValue}`; null if malformed. */
function parseMessageAttributes(params: Record<string, string>): Record<string, SnsMessageAttribute> | null {
  const attributes: Record<string, SnsMessageAttribute> = {};
  for (let n = 1; params[`MessageAttributes.entry.${n}.Name`] !== undefined; n++) {
    const prefix = `MessageAttributes.entry.${n}`;
    const name = params[`${prefix}.Name`] as string;
    const dataType = params[`${prefix}.Value.DataType`];
    const stringValue = params[`${prefix}.Value.StringValue`];
    const binaryValue = params[`${prefix}.Value.BinaryValue`];
    if (!dataType || !/^(String|Number|Binary|String\.Array)(\..+)?$/.test(dataType)) return null;
    if (dataType.startsWith('Binary') ? binaryValue === undefined : stringValue === undefined) return null;
    attributes[name] = {
      dataType,
      ...(stringValue !== undefined && { stringValue }),
      ...(binaryValue !== undefined && { binaryValue }),
    };
  }
  return attributes;
}

function errorXml(f: SnsFailure): string {
  return (
    `<ErrorResponse xmlns="${XMLNS}"><Error><Type>${f.type}</Type><Code>${f.code}</Code>` +
    `<Message>${escapeXml(f.message)}</Message></Error><RequestId>${randomUUID()}</RequestId></ErrorResponse>`
  );
}

function escapeXml(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}
