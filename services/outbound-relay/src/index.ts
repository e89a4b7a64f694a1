export * from './config.js';
export * from './relay.js';
export * from './deps.js';
export * from '@mailyard/dsn';
export * from './mx.js';
export * from './mta-sts.js';
export * from './smtp-client.js';
