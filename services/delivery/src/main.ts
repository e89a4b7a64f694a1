import { runMain } from '@mailyard/runtime';
import { deliverySchema } from './config.js';
import { buildDelivery } from './delivery.js';
import { defaultDeps } from './deps.js';

await runMain('delivery', deliverySchema, (config, rt) => buildDelivery(config, defaultDeps(config, rt)));
