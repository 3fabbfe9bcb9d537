/**
 * Errors the core raises for bad requests. Each carries the HTTP status and the JSON error code
 * the edges answer with (`{error: {code, message}}`); none is ever a 5xx.
 */
export class ApiError extends Error {
  constructor(
    readonly status: 400 | 401 | 403 | 404 | 409 | 410 | 413 | 422 | 429,
    readonly code: string,
    message: string,
    /** Extra JSON fields for the body (e.g. missingDevices) or headers (Retry-After). */
    readonly details: Record<string, unknown> = {},
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export class PayloadTooLargeError extends ApiError {
  constructor(limitBytes: number) {
    super(413, 'payload_too_large', `the body exceeds the limit of ${limitBytes} bytes`);
  }
}

export class RateLimitedError extends ApiError {
  constructor(what: string, retryAfterSeconds: number) {
    super(429, 'rate_limited', `too many ${what}; retry after ${retryAfterSeconds} s`, {}, retryAfterSeconds);
  }
}

export const badRequest = (code: string, message: string) => new ApiError(400, code, message);
export const notFound = (code: string, message: string) => new ApiError(404, code, message);
export const unauthorized = () => new ApiError(401, 'unauthorized', 'missing or invalid credentials');
