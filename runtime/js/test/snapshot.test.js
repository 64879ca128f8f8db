// Saved streams across languages: Python's bytes restore here, save back to the same
// bytes, continue from where Python stopped, and restore in Python (the pytest wrapper
// restores what this test writes to $RNN_RUNTIME_JS_OUT).

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadSnapshot, open } from '../src/node.js';
import { ARCHS, bytes, closeness, fixture, float64s, json } from './fixtures.js';

for (const arch of ARCHS) {
  test(`${arch}: a Python save restores, saves to the same bytes and continues`, async (t) => {
    const model = await open(fixture(`${arch}.onnx`));
    const { tokens, saved_steps: saved, continue_steps: more } = json(`${arch}.json`);
    const fromPython = bytes(`${arch}.saved.bin`);
    const stream = model.stream();
    stream.restore(fromPython);
    assert.deepEqual(stream.save(), fromPython);
    for (const token of tokens.slice(saved, saved + more)) await stream.step(token);
    const mine = stream.save();
    const pythonOnly = bytes(`${arch}.continued.bin`);
    const a = loadSnapshot(model.metadata, mine);
    const b = loadSnapshot(model.metadata, pythonOnly);
    assert.deepEqual([...a.keys()], [...b.keys()]);
    // The log-probabilities after step saved + more - 1 against the float64 reference.
    const C = model.metadata.numClasses;
    const ref = float64s(`${arch}.ref.f64`);
    const radius = float64s(`${arch}.radius.f64`);
    const last = a.get('log_probs').values;
    const step = saved + more - 1;
    for (let c = 0; c < C; c++) {
      assert.ok(Math.abs(last[c] - ref[step * C + c]) <= radius[step * C + c]);
    }
    for (const [name, { values }] of a) assert.ok(closeness(values, b.get(name).values) <= 1, name);
    const identical = mine.length === pythonOnly.length && mine.every((x, i) => x === pythonOnly[i]);
    t.diagnostic(`${arch}: JS-continued bytes ${identical ? 'equal' : 'differ from'} the Python-only run's`);
    if (process.env.RNN_RUNTIME_JS_OUT) writeFileSync(join(process.env.RNN_RUNTIME_JS_OUT, `${arch}.js.bin`), mine);
  });
}
