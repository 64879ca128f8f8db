// Pools, predict and the names data against streams and the Python runtime.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { open } from '../src/node.js';
import { closeness, fixture, hasFixture, json } from './fixtures.js';

test('a pool steps each member as it would step alone, in one call', async () => {
  const model = await open(fixture('stacked.onnx'));
  const texts = ['ABCDA', 'DDCBA', 'xyzAB'];
  const pool = model.pool();
  const members = texts.map(() => pool.join());
  const alone = texts.map(() => model.stream());
  let calls = 0;
  const run = model.session.run.bind(model.session);
  model.session.run = (...args) => (calls++, run(...args));
  for (let t = 0; t < 5; t++) {
    const got = await pool.step(texts.map((x) => x[t]));
    calls -= 1;
    for (let i = 0; i < texts.length; i++) {
      const want = await alone[i].step(texts[i][t]);
      assert.ok(closeness(got[i].logProbs, want.logProbs) <= 1);
    }
    calls -= texts.length;
    assert.equal(calls, 0);
  }
  await assert.rejects(members[0].step('A'), { name: 'StreamError', message: /in a pool/ });
  await assert.rejects(pool.step(['A']), { name: 'StreamError', message: /got 1 tokens; the pool has 3/ });
  pool.leave(members[1]);
  assert.equal(pool.size, 2);
  const next = await members[1].step('A');
  const want = await alone[1].step('A');
  assert.ok(closeness(next.logProbs, want.logProbs) <= 1);
});

test('predict gives what a stream fed the same text gives', async () => {
  const model = await open(fixture('cell.onnx'));
  const texts = ['ABCD', '', 'A', 'DCBADCBAAB', 'BB'];
  const got = await model.predict(texts, { batchSize: 2 });
  assert.equal(got[1], null);
  for (const [i, text] of texts.entries()) {
    if (!text) continue;
    const want = await model.stream().feed(text);
    assert.ok(closeness(got[i].logProbs, want.logProbs) <= 1, text);
  }
});

test('predict on 2,000 names gives the Python runtime\'s labels', { skip: !hasFixture('names.json') && 'the names data (../shared/data/names) is absent' }, async (t) => {
  const model = await open(fixture('gru.onnx'));
  const { texts, labels, log_probs: logProbs } = json('names.json');
  const got = await model.predict(texts);
  let same = 0;
  let worst = 0;
  got.forEach((p, i) => {
    if (p.label === labels[i]) same++;
    worst = Math.max(worst, closeness(p.logProbs, logProbs[i]));
  });
  t.diagnostic(`labels equal on ${same} of ${texts.length} names; max closeness ratio ${worst.toPrecision(3)}`);
  assert.ok(worst <= 1, `log_probs differ from Python's: ratio ${worst}`);
  assert.equal(same, texts.length);
});
