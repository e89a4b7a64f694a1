// Tests that need a tool this machine may not have (Dovecot, pebble).
/**
 * Why a test that needs a tool not installed here is skipped, or false to run it. Under
 * CI (`CI` set: .ci/run installs every tool) it is never skipped, so a missing tool fails
 * the run instead of leaving a suite green that did not run.
 */
export function skipWithout(installed: boolean, reason: string): string | false {
  return !installed && !process.env.CI ? reason : false;
}
