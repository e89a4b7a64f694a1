// CONTEXT=SORT's positions (RFC 5267 §4.3): a client that applies the REMOVEFROM runs and
// then the ADDTO runs, each to the list as the ones before it left it, ends with the new
// result, whatever entered or left it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { listChanges } from '../src/imap/commands/search-context.js';

/** What a client does with the pairs: splice each run in turn. */
function apply(was: number[], changes: ReturnType<typeof listChanges>): number[] {
  const list = [...was];
  for (const r of changes.removed) {
    assert.deepEqual(list.slice(r.pos - 1, r.pos - 1 + r.uids.length), r.uids, 'removed where it was');
    list.splice(r.pos - 1, r.uids.length);
  }
  for (const r of changes.added) list.splice(r.pos - 1, 0, ...r.uids);
  return list;
}

test('removals then additions, applied in turn, give the new sorted result', { timeout: 30_000 }, () => {
  // a fixed order of every message (the sort), and two subsets of it: before and after
  const arb = fc
    .uniqueArray(fc.integer({ min: 1, max: 60 }), { maxLength: 40 })
    .chain((order) =>
      fc.tuple(
        fc.constant(order),
        fc.array(fc.boolean(), { minLength: order.length, maxLength: order.length }),
        fc.array(fc.boolean(), { minLength: order.length, maxLength: order.length }),
      ),
    );
  fc.assert(
    fc.property(arb, ([order, inWas, inNow]) => {
      const was = order.filter((_, i) => inWas[i]);
      const now = order.filter((_, i) => inNow[i]);
      const changes = listChanges(was, now);
      assert.deepEqual(apply(was, changes), now);
      // runs are maximal: two runs never touch
      for (const rs of [changes.removed, changes.added])
        for (let i = 1; i < rs.length; i++) assert.ok(rs[i]!.pos > rs[i - 1]!.pos);
    }),
    { numRuns: 500 },
  );
});

test('the example of a message entering between two others', { timeout: 5_000 }, () => {
  assert.deepEqual(listChanges([2, 1, 4], [6, 2, 5, 1, 7, 4]), {
    removed: [],
    added: [
      { pos: 1, uids: [6] },
      { pos: 3, uids: [5] },
      { pos: 5, uids: [7] },
    ],
  });
  assert.deepEqual(listChanges([2, 3, 1, 4], [3, 4]), {
    removed: [
      { pos: 1, uids: [2] },
      { pos: 2, uids: [1] },
    ],
    added: [],
  });
});
