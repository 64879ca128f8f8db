// One stream through an exported RNN, one step at a time (rnn_runtime/stream.py's API).
//
// Every method that changes the state validates its input first, and a step whose result
// is not finite is refused: on an error the stream is exactly as it was. save() and
// restore() use rnn_runtime/snapshot.py's bytes, so a stream moves between Python,
// Node and the browser.

import { SnapshotError, StreamError } from './errors.js';
import { dumpSnapshot, loadSnapshot } from './snapshot.js';

/** The model's prediction after some step. */
export class Prediction {
  /**
   * @param {Float32Array} logProbs (C,) log-probabilities, index = class id
   * @param {string[]} labels class names, index = class id
   */
  constructor(logProbs, labels) {
    this.logProbs = logProbs;
    this.labels = labels;
  }

  /** Top class id (the first of equal ones, as numpy's argmax). */
  get labelId() {
    let best = 0;
    for (let i = 1; i < this.logProbs.length; i++) if (this.logProbs[i] > this.logProbs[best]) best = i;
    return best;
  }

  get label() {
    return this.labels[this.labelId];
  }

  /** Probability of the top label. */
  get probability() {
    return Math.exp(this.logProbs[this.labelId]);
  }

  /** @returns {Float32Array} (C,) probabilities */
  get probabilities() {
    return this.logProbs.map(Math.exp);
  }

  /** The k most probable [label, probability] pairs, most probable first. */
  topK(k = 3) {
    const order = [...this.logProbs.keys()].sort((a, b) => this.logProbs[b] - this.logProbs[a] || a - b);
    return order.slice(0, k).map((i) => [this.labels[i], Math.exp(this.logProbs[i])]);
  }

  toJSON() {
    return { label: this.label, probability: this.probability, top_k: this.topK(1) };
  }
}

function blownUp(what) {
  return new StreamError(
    `${what} gives a state or log-probabilities that are not finite (NaN or infinity: ` +
      'the state blew up); the stream is left as it was before it',
  );
}

/** The concrete shape of a state spec at batch B. */
export function concreteShape(spec, batch) {
  return spec.shape.map((d) => (d === 'B' ? batch : d));
}

/** A stream's layer views -> [name, values, shape] of each model state (B = 1). */
export function modelStates(meta, layers) {
  let j = 0;
  return meta.states.map((s) => {
    const count = s.shape.length === 3 ? s.shape[0] : 1;
    const parts = layers.slice(j, j + count);
    j += count;
    const values = new Float32Array(parts.reduce((n, x) => n + x.length, 0));
    let offset = 0;
    for (const x of parts) {
      values.set(x, offset);
      offset += x.length;
    }
    return [s.input, values, concreteShape(s, 1)];
  });
}

/**
 * A model state (B = 1) checked -> the stream's layer views.
 * @param {Map<string, {values: Float32Array, shape: number[]}>} state
 * @throws {StreamError} wrong names, shapes or non-finite values
 */
export function layerViews(meta, widths, state) {
  const want = meta.states.map((s) => s.input).sort();
  const got = [...state.keys()].sort();
  if (got.length !== want.length || got.some((n, i) => n !== want[i])) {
    throw new StreamError(`state names are ${JSON.stringify(got)}; this model expects ${JSON.stringify(want)}`);
  }
  const layers = [];
  for (const s of meta.states) {
    const { values, shape } = state.get(s.input);
    const expected = concreteShape(s, 1);
    if (!(values instanceof Float32Array)) {
      throw new StreamError(`state '${s.input}' must be a Float32Array; got ${values?.constructor?.name ?? typeof values}`);
    }
    if (shape.length !== expected.length || shape.some((d, i) => d !== expected[i]) || values.length !== expected.reduce((a, d) => a * d, 1)) {
      throw new StreamError(
        `state '${s.input}' has shape (${shape.join(', ')}); this model expects (${expected.join(', ')}) ` +
          `(its (${s.shape.join(', ')}) with B=1)`,
      );
    }
    const bad = values.reduce((n, x) => n + (Number.isFinite(x) ? 0 : 1), 0);
    if (bad > 0) throw new StreamError(`state '${s.input}' has ${bad} non-finite values; a state must be finite`);
    const count = s.shape.length === 3 ? s.shape[0] : 1;
    const width = values.length / count;
    for (let l = 0; l < count; l++) layers.push(values.slice(l * width, (l + 1) * width));
  }
  layers.forEach((x, j) => {
    if (x.length !== widths[j]) throw new StreamError(`state layer ${j} has ${x.length} values; expected ${widths[j]}`);
  });
  return layers;
}

/** One stream: a state that input advances one step (or one sequence) at a time. */
export class Stream {
  /**
   * @param {import('./model.js').RnnModel} model
   * @param {{strict?: boolean}} [options] strict: refuse characters outside the vocabulary
   *   instead of mapping them to the unknown id
   */
  constructor(model, options = {}) {
    this.model = model;
    this.strict = options.strict ?? false;
    this.pool = null;
    this.batch = model.stepBatch(1);
  }

  checkFree() {
    if (this.pool !== null) throw new StreamError('this stream is in a pool: advance it through the pool, or leave it');
  }

  /** @returns {Prediction|null} the prediction after the last step, or null since reset */
  get prediction() {
    if (this.pool !== null) return this.pool.predictionOf(this);
    return this.batch.hasPrediction ? new Prediction(this.batch.logProbsRow(0), this.model.labels) : null;
  }

  /**
   * Advance by one character or token id (a frame of F numbers for a features model).
   * @param {string|number|ArrayLike<number>} token
   * @returns {Promise<Prediction>}
   * @throws {StreamError} a bad token, or a result that is not finite (the state is kept)
   */
  async step(token) {
    this.checkFree();
    this.model.input.write(this.batch.input, 0, this.model.input.one(token, this.strict));
    if ((await this.batch.advance()).length > 0) throw blownUp(`the step on ${String(JSON.stringify(token)).slice(0, 40)}`);
    return new Prediction(this.batch.logProbsRow(0), this.model.labels);
  }

  /**
   * Advance by a text or a sequence of token ids (of frames for a features model), step by step.
   * @param {string|Iterable<number>|ArrayLike<number>[]|Float32Array} tokens
   * @returns {Promise<Prediction|null>} after the last token (for empty input, the current one)
   * @throws {StreamError} bad tokens, or a result that is not finite: the stream is then as
   *   it was before the call
   */
  async feed(tokens) {
    this.checkFree();
    const ids = this.model.input.many(tokens, this.strict);
    const before = this.saveState();
    for (let t = 0; t < ids.length; t++) {
      this.model.input.write(this.batch.input, 0, ids[t]);
      if ((await this.batch.advance()).length > 0) {
        this.loadState(before);
        throw blownUp(`token ${t} of a sequence of ${ids.length}`);
      }
    }
    return this.prediction;
  }

  /** Return to the initial state (zeros) and forget the prediction. */
  reset() {
    this.checkFree();
    this.batch.writeRow(0, null);
    this.batch.hasPrediction = false;
  }

  saveState() {
    return { layers: this.batch.readRow(0), last: this.batch.hasPrediction ? this.batch.logProbsRow(0) : null };
  }

  loadState({ layers, last }) {
    this.batch.writeRow(0, layers);
    this.batch.hasPrediction = last !== null;
    if (last !== null) this.batch.setLogProbsRow(0, last);
  }

  /** A copy of the state: Map {state input name: {values, shape}} with B = 1. */
  getState() {
    this.checkFree();
    return new Map(modelStates(this.model.metadata, this.batch.readRow(0)).map(([n, values, shape]) => [n, { values, shape }]));
  }

  /** Replace the state (validated: names, shapes with B = 1, finite); forgets the prediction. */
  setState(state) {
    this.checkFree();
    this.loadState({ layers: layerViews(this.model.metadata, this.model.widths, state), last: null });
  }

  /**
   * The state (and last prediction) as rnn_runtime.snapshot's bytes.
   * @returns {Uint8Array}
   */
  save() {
    this.checkFree();
    const meta = this.model.metadata;
    const tensors = modelStates(meta, this.batch.readRow(0));
    if (this.batch.hasPrediction) tensors.push(['log_probs', this.batch.logProbsRow(0), [meta.numClasses]]);
    return dumpSnapshot(meta, tensors);
  }

  /**
   * Restore a state saved by save() here or in Python.
   * @param {Uint8Array} data
   * @throws {SnapshotError} not a saved stream, corrupt, or from another model; StreamError:
   *   a state that does not fit this model. The stream is unchanged on error.
   */
  restore(data) {
    this.checkFree();
    const meta = this.model.metadata;
    const tensors = loadSnapshot(meta, data);
    const last = tensors.get('log_probs') ?? null;
    tensors.delete('log_probs');
    const C = meta.numClasses;
    if (last !== null && (last.shape.length !== 1 || last.shape[0] !== C)) {
      throw new SnapshotError(`saved log_probs has shape (${last.shape.join(', ')}); this model expects (${C},)`);
    }
    if (last !== null && !last.values.every(Number.isFinite)) {
      throw new SnapshotError('saved log_probs has non-finite values; expected finite log-probabilities');
    }
    const layers = layerViews(meta, this.model.widths, tensors);
    this.loadState({ layers, last: last === null ? null : last.values });
  }
}
