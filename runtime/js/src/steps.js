// One-token steps of B rows through the file's step model, on prebuilt tensors.
//
// The per-step path allocates nothing: the input goes into a buffer the feed tensor
// already wraps, and the state ping-pongs between two sets of buffers, each wrapped once
// as feed tensors and once as pre-allocated output tensors (fetches). A result that is
// not finite lands in the other set and is refused before it becomes current, so a
// failed step leaves the state as it was. State buffers hold each model state's
// per-layer views (the step model's states), row r of a (B, W) view at [r*W, (r+1)*W).

/**
 * @typedef {import('./model.js').RnnModel} RnnModel
 */

export class StepBatch {
  /**
   * @param {RnnModel} model
   * @param {number} batch rows (B >= 1)
   */
  constructor(model, batch) {
    const { ort, metadata: meta, widths } = model;
    const step = meta.step;
    const C = meta.numClasses;
    this.model = model;
    this.batch = batch;
    const input = model.input.buffer(batch);
    this.input = input.data;
    const inputTensor = new ort.Tensor(input.type, input.data, input.dims);
    /** @type {Float32Array[][]} [set][pair] */
    this.states = [0, 1].map(() => widths.map((w) => new Float32Array(batch * w)));
    /** @type {Float32Array[]} [set] (B, C) */
    this.logProbs = [0, 1].map(() => new Float32Array(batch * C));
    const stateTensors = this.states.map((set) => set.map((x, j) => new ort.Tensor('float32', x, [batch, widths[j]])));
    const lpTensors = this.logProbs.map((x) => new ort.Tensor('float32', x, [batch, C]));
    this.feeds = [0, 1].map((k) => {
      const feeds = { [step.token]: inputTensor };
      step.states.forEach(([name], j) => (feeds[name] = stateTensors[k][j]));
      return feeds;
    });
    this.fetches = [0, 1].map((k) => {
      const fetches = { [step.logProbs]: lpTensors[k ^ 1] };
      step.states.forEach(([, name], j) => (fetches[name] = stateTensors[k ^ 1][j]));
      return fetches;
    });
    this.outputs = [step.logProbs, ...step.states.map(([, o]) => o)];
    this.current = 0;
    this.hasPrediction = false;
  }

  /**
   * Run one step of every row on `this.input` (set by the caller).
   * @returns {Promise<number[]>} the rows whose result is not finite (then nothing changed)
   */
  async advance() {
    const k = this.current;
    const next = k ^ 1;
    const out = await this.model.run(this.feeds[k], this.model.preallocate ? this.fetches[k] : undefined);
    // Without pre-allocated outputs (onnxruntime-web: its WASM heap) the outputs are copied.
    const targets = [this.logProbs[next], ...this.states[next]];
    this.outputs.forEach((name, i) => {
      const data = out[name].data;
      if (data !== targets[i]) targets[i].set(data);
    });
    const bad = nonfiniteRows(targets, this.batch);
    if (bad.length === 0) {
      this.current = next;
      this.hasPrediction = true;
    }
    return bad;
  }

  /** Copy of row r's state: one Float32Array per step-model state. */
  readRow(r) {
    return this.states[this.current].map((x) => {
      const w = x.length / this.batch;
      return x.slice(r * w, (r + 1) * w);
    });
  }

  /** Set row r's state from one Float32Array per step-model state (null: zeros). */
  writeRow(r, layers) {
    this.states[this.current].forEach((x, j) => {
      const w = x.length / this.batch;
      if (layers === null) x.fill(0, r * w, (r + 1) * w);
      else x.set(layers[j], r * w);
    });
  }

  /** Row r's log-probabilities after the last step (a copy). */
  logProbsRow(r) {
    const x = this.logProbs[this.current];
    const C = x.length / this.batch;
    return x.slice(r * C, (r + 1) * C);
  }

  setLogProbsRow(r, values) {
    const x = this.logProbs[this.current];
    x.set(values, r * (x.length / this.batch));
  }
}

/** The rows r of (B, W) arrays that hold a NaN or an infinity anywhere. */
export function nonfiniteRows(arrays, batch) {
  const bad = new Set();
  for (const x of arrays) {
    // x * 0 is 0 for every finite x and NaN otherwise: one pass, no branch per value.
    let sum = 0;
    for (let i = 0; i < x.length; i++) sum += x[i] * 0;
    if (sum === 0) continue;
    const w = x.length / batch;
    for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) bad.add(Math.floor(i / w));
  }
  return [...bad].sort((a, b) => a - b);
}
