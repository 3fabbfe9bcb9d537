/*
 * What the CDK app takes from packages/server, in one place: the table definitions (the CDK tables are
 * built from them, so the adapter and the deployment cannot drift apart), the attachment lifetime,
 * and where the Lambda entry points live.
 */
import { fileURLToPath } from 'node:url';

export { ATTACHMENT_TTL_MS } from '../../packages/server/src/http/app.ts';
export {
  type TableDefinition,
  type TableName,
  tableDefinitions,
  tableNames,
} from '../../packages/server/src/storage/dynamodb/tables.ts';

/** The monorepo's root: esbuild's project root, with the package-lock.json that pins what is bundled. */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The Lambda entry points (each exports `handler`). */
export const HANDLER_ENTRIES = {
  http: fileURLToPath(new URL('../../packages/server/src/aws/http-handler.ts', import.meta.url)),
  ws: fileURLToPath(new URL('../../packages/server/src/aws/ws-handler.ts', import.meta.url)),
  sweep: fileURLToPath(new URL('../../packages/server/src/aws/sweep-handler.ts', import.meta.url)),
} as const;

export type HandlerName = keyof typeof HANDLER_ENTRIES;
