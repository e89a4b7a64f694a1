export * from './logger.js';
export * from './http.js';
export { Registry, Counter, Histogram, Gauge } from 'prom-client';
