import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import { BlockPublicAccess, Bucket, BucketEncryption, HttpMethods, ObjectOwnership } from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { ATTACHMENT_TTL_MS } from './server.ts';

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * Days after which S3 deletes an attachment: the server's attachment lifetime in whole days, plus one
 * day of margin (31 for 30), so that S3 never deletes a blob before its `expires-at`; the server
 * refuses to serve it after that anyway.
 */
export const ATTACHMENT_EXPIRY_DAYS = Math.ceil(ATTACHMENT_TTL_MS / DAY_MS) + 1;

export interface AttachmentsProps {
  /** Delete the bucket (and its objects) with the stack instead of keeping it. */
  retainData: boolean;
  /**
   * Browser origins allowed to PUT/GET objects directly with presigned URLs. Empty (the default):
   * no CORS rule, which is right while attachments go through the HTTP API.
   */
  corsOrigins?: string[];
}

/**
 * The bucket of encrypted attachment blobs: private (every public-access block on, bucket-owner
 * objects, no ACLs), TLS only, SSE-S3 at rest, objects expire with the server's attachment lifetime.
 */
export class Attachments extends Construct {
  readonly bucket: Bucket;

  constructor(scope: Construct, id: string, props: AttachmentsProps) {
    super(scope, id);
    const origins = props.corsOrigins ?? [];
    this.bucket = new Bucket(this, 'Bucket', {
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      objectOwnership: ObjectOwnership.BUCKET_OWNER_ENFORCED,
      encryption: BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      versioned: false,
      lifecycleRules: [
        {
          id: 'expire-attachments',
          enabled: true,
          expiration: Duration.days(ATTACHMENT_EXPIRY_DAYS),
          abortIncompleteMultipartUploadAfter: Duration.days(1),
        },
      ],
      ...(origins.length > 0
        ? {
            cors: [
              {
                allowedOrigins: origins,
                allowedMethods: [HttpMethods.PUT, HttpMethods.GET],
                allowedHeaders: ['content-type', 'content-length'],
                maxAge: 3600,
              },
            ],
          }
        : {}),
      removalPolicy: props.retainData ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY,
      autoDeleteObjects: !props.retainData,
    });
  }
}
