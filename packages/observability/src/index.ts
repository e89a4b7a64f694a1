export * from './logger.js';
export * from './http.js';
export { AggregatorRegistry, Registry, Counter, Histogram, Gauge } from 'prom-client';
