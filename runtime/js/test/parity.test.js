// The JavaScript runtime against the Python runtime and the float64 reference on the
// same files: a 10,000-step stream per default arch, within verify's float32 allowance
// at every step, with the Python runtime's label wherever the decision is clear.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { open } from '../src/node.js';
import { ARCHS, fixture, float32s, float64s, json } from './fixtures.js';

for (const arch of ARCHS) {
  test(`${arch}: 10,000 steps within the allowance, labels of the Python runtime`, async (t) => {
    const model = await open(fixture(`${arch}.onnx`));
    const { tokens, labels } = json(`${arch}.json`);
    const ref = float64s(`${arch}.ref.f64`);
    const radius = float64s(`${arch}.radius.f64`);
    const python = float32s(`${arch}.py.f32`);
    const C = model.metadata.numClasses;
    const stream = model.stream();
    let worst = 0;
    let same = 0;
    let clearDifferent = 0;
    for (let s = 0; s < tokens.length; s++) {
      const p = await stream.step(tokens[s]);
      for (let c = 0; c < C; c++) {
        const i = s * C + c;
        worst = Math.max(worst, Math.abs(p.logProbs[c] - ref[i]) / radius[i]);
      }
      if (p.label === labels[s]) same++;
      else {
        // A different label counts only where the reference's margin between the two
        // labels exceeds both allowances (a tie within rounding may go either way).
        const a = s * C + p.labelId;
        const b = s * C + model.labels.indexOf(labels[s]);
        if (Math.abs(ref[a] - ref[b]) > radius[a] + radius[b]) clearDifferent++;
      }
    }
    let pythonWorst = 0;
    for (let i = 0; i < ref.length; i++) pythonWorst = Math.max(pythonWorst, Math.abs(python[i] - ref[i]) / radius[i]);
    t.diagnostic(
      `${arch}: max |JS - float64| / allowance ${worst.toPrecision(3)} (Python runtime: ` +
        `${pythonWorst.toPrecision(3)}); labels equal at ${same} of ${tokens.length} steps`,
    );
    assert.ok(worst <= 1, `JS log_probs past the allowance: ratio ${worst}`);
    assert.equal(clearDifferent, 0);
    assert.ok(same >= tokens.length - 10, `labels equal at only ${same} of ${tokens.length} steps`);
  });
}
