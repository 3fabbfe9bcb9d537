export { readLatestDevCode } from '../sms/dev-sms-sender.ts';
export { ConfigError, type ServerConfig, loadConfig } from './config.ts';
export { type RunningServer, type StartOptions, startServer } from './server.ts';
