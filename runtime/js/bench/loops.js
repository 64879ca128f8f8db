// The two loops the step figures compare, shared by Node and the browser: a stream of
// rnn-runtime, and a hand-written session.run loop on the same file's step model as a
// JavaScript user writes it without the runtime (a new token tensor per step, the
// returned state tensors fed back, the metadata's names typed in by hand).

/** A hand-written runner: open the step model's bytes, step with session.run. */
export async function handWritten(ort, model, stepBytes, sessionOptions) {
  const step = model.metadata.step;
  const session = await ort.InferenceSession.create(stepBytes, sessionOptions);
  const H = model.widths;
  let states = step.states.map(([, ], j) => new ort.Tensor('float32', new Float32Array(H[j]), [1, H[j]]));
  return async (id) => {
    const feeds = { [step.token]: new ort.Tensor('int64', BigInt64Array.of(BigInt(id)), [1]) };
    step.states.forEach(([input], j) => (feeds[input] = states[j]));
    const out = await session.run(feeds);
    states = step.states.map(([, output]) => out[output]);
    return out[step.logProbs].data;
  };
}

/** Median µs per step of `fn` over `blocks` blocks of `steps` steps, interleaved with `other`. */
export async function timeInterleaved(runners, tokens, blocks = 7) {
  const times = runners.map(() => []);
  for (let b = 0; b < blocks; b++) {
    for (const [r, fn] of runners.entries()) {
      const start = performance.now();
      for (const t of tokens) await fn(t);
      times[r].push(((performance.now() - start) * 1000) / tokens.length);
    }
  }
  return times.map((xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]);
}
