import { createRuntime, type Runtime } from '@mailyard/runtime';
import { buildPolicy, defaultDeps, type PolicyService } from '../src/index.js';

/** A policy service built as its main.ts builds it, started once its broker is connected. */
export async function startPolicyService(
  cfg: Parameters<typeof buildPolicy>[0],
): Promise<{ rt: Runtime; policy: PolicyService }> {
  const rt = await createRuntime('policy', cfg);
  const policy = buildPolicy(cfg, defaultDeps(cfg, rt));
  await rt.bus.waitConnected();
  await policy.start();
  return { rt, policy };
}
