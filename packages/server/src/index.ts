export * from './core/index.ts';
export { type AppDeps, createApp } from './http/app.ts';
