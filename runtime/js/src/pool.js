// Many streams of one model advanced together: one onnxruntime call per step for all
// (rnn_runtime/pool.py's API). A member's state lives in the pool's batch (row i =
// streams[i]) until it leaves; joining and leaving rebuild the batch (once per
// membership change, not per step). A call whose result is not finite for some member
// changes nothing and names the members.

import { StreamError } from './errors.js';
import { Prediction, Stream } from './stream.js';

export class StreamPool {
  /** @param {import('./model.js').RnnModel} model */
  constructor(model) {
    this.model = model;
    /** @type {Stream[]} the members, in row order */
    this.streams = [];
    this.batch = null;
    this.predicted = [];
  }

  get size() {
    return this.streams.length;
  }

  rebuild(rows) {
    // rows: [{layers, last}] of the new members, in order
    const batch = rows.length ? this.model.stepBatch(rows.length) : null;
    rows.forEach(({ layers, last }, r) => {
      batch.writeRow(r, layers);
      if (last !== null) batch.setLogProbsRow(r, last);
    });
    if (batch) batch.hasPrediction = true;
    this.batch = batch;
    this.predicted = rows.map(({ last }) => last !== null);
  }

  rowsNow() {
    return this.streams.map((s, r) => ({
      layers: this.batch.readRow(r),
      last: this.predicted[r] ? this.batch.logProbsRow(r) : null,
    }));
  }

  /**
   * Add a stream (a new one at the initial state if none); it keeps its state and
   * prediction and advances only through the pool until it leaves.
   * @param {Stream} [stream]
   * @returns {Stream}
   */
  join(stream) {
    stream ??= this.model.stream();
    if (!(stream instanceof Stream)) throw new StreamError(`a pool takes Stream objects; got ${stream?.constructor?.name ?? typeof stream}`);
    if (stream.model !== this.model) throw new StreamError(`this pool runs ${this.model.name}; the stream runs another model object`);
    stream.checkFree();
    this.rebuild([...this.rowsNow(), stream.saveState()]);
    this.streams.push(stream);
    stream.pool = this;
    return stream;
  }

  /** Remove a member; it takes its state and prediction with it. */
  leave(stream) {
    const i = this.index(stream);
    const rows = this.rowsNow();
    const [own] = rows.splice(i, 1);
    this.streams.splice(i, 1);
    this.rebuild(rows);
    stream.pool = null;
    stream.loadState(own);
    return stream;
  }

  index(stream) {
    const i = this.streams.indexOf(stream);
    if (i < 0) throw new StreamError('that stream is not a member of this pool');
    return i;
  }

  /** A member's prediction after its last step (null if none yet). */
  predictionOf(stream) {
    const i = this.index(stream);
    return this.predicted[i] ? new Prediction(this.batch.logProbsRow(i), this.model.labels) : null;
  }

  /**
   * Advance every member by one token, in one onnxruntime call.
   * @param {Array<string|number>} tokens one character or token id per member, in `streams` order
   * @returns {Promise<Prediction[]>} each member's prediction, in `streams` order
   * @throws {StreamError} a bad token or a wrong count (nothing ran), or a result that is not
   *   finite for some member (nothing changed)
   */
  async step(tokens) {
    const n = this.streams.length;
    if (!Array.isArray(tokens) && !ArrayBuffer.isView(tokens)) throw new StreamError(`pool step takes an array of tokens; got ${typeof tokens}`);
    if (tokens.length !== n) throw new StreamError(`pool step got ${tokens.length} tokens; the pool has ${n} members`);
    if (n === 0) return [];
    const ids = Array.from(tokens, (t, r) => this.model.input.one(t, this.streams[r].strict));
    ids.forEach((id, r) => this.model.input.write(this.batch.input, r, id));
    const bad = await this.batch.advance();
    if (bad.length > 0) {
      throw new StreamError(
        `pool step: the result of ${bad.length} member(s) (rows ${bad.slice(0, 8).join(', ')}) is not finite ` +
          '(NaN or infinity: their state blew up); nothing changed: every member keeps its state',
      );
    }
    this.predicted.fill(true);
    return this.streams.map((_, r) => new Prediction(this.batch.logProbsRow(r), this.model.labels));
  }
}
