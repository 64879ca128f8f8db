// Open a model file made by `rnn-export convert`: its contract read from the file's own
// bytes and validated, its embedded step model checked against its sha256 and opened
// with onnxruntime (onnxruntime-node or onnxruntime-web: the `ort` object is passed in,
// both share one API). Streams, pools and predict all step through the step model.

import { MetadataError, ModelFileError, StreamError } from './errors.js';
import { inputEncoder } from './inputs.js';
import { readMetadata } from './metadata.js';
import { readMetadataProps } from './onnxfile.js';
import { StreamPool } from './pool.js';
import { StepBatch } from './steps.js';
import { Prediction, Stream } from './stream.js';

export const PREDICT_BATCH_SIZE = 256;

function base64Bytes(text) {
  if (typeof Buffer !== 'undefined') return new Uint8Array(Buffer.from(text, 'base64'));
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

async function sha256Hex(data) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    throw new MetadataError(
      'WebCrypto (crypto.subtle) is not available: the page must be served from https or localhost',
    );
  }
  const digest = new Uint8Array(await subtle.digest('SHA-256', data));
  return [...digest].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** The embedded step model's bytes, checked against the sha256 the metadata promises. */
async function stepBytes(step) {
  if (step.onnxBase64.length % 4 !== 0 || !B64.test(step.onnxBase64)) {
    throw new MetadataError('metadata step.onnx_base64 is not valid base64');
  }
  const data = base64Bytes(step.onnxBase64);
  const digest = await sha256Hex(data);
  if (digest !== step.sha256) {
    throw new MetadataError(
      `the embedded step model has sha256 ${digest.slice(0, 12)}...; the metadata promises ` +
        `${step.sha256.slice(0, 12)}... (the file is damaged)`,
    );
  }
  return data;
}

function checkNames(kind, got, want) {
  const a = [...got].sort();
  const b = [...want].sort();
  if (a.length !== b.length || a.some((x, i) => x !== b[i])) {
    throw new MetadataError(
      `the step model's ${kind}s are ${JSON.stringify(a)}; the metadata promises ${JSON.stringify(b)}`,
    );
  }
}

/** Width of one layer's (B, W) view of each state, in step-model order. */
function layerWidths(meta) {
  const widths = [];
  for (const s of meta.states) {
    const dims = s.shape.filter((_, i) => i !== s.batchAxis);
    const layers = s.shape.length === 3 ? dims[0] : 1;
    const width = s.shape.length === 3 ? dims[1] : dims[0];
    for (let l = 0; l < layers; l++) widths.push(width);
  }
  return widths;
}

export class RnnModel {
  /**
   * Open a model file's bytes.
   * @param {typeof import('onnxruntime-common')} ort onnxruntime-node or onnxruntime-web
   * @param {Uint8Array|ArrayBuffer} data the .onnx file's bytes
   * @param {{name?: string, sessionOptions?: object, preallocate?: boolean}} [options] name:
   *   how messages name the file; sessionOptions: onnxruntime session options (default one
   *   intra-op thread); preallocate: pass the output buffers to session.run (onnxruntime-node
   *   writes into them; onnxruntime-web's WASM backend does not, so browser.js turns it off)
   * @returns {Promise<RnnModel>}
   * @throws {ModelFileError} empty, truncated or not an ONNX file
   * @throws {MetadataError} no rnn-export contract, or one that is invalid or lies
   */
  static async open(ort, data, options = {}) {
    const where = options.name ?? 'the model';
    if (data instanceof ArrayBuffer) data = new Uint8Array(data);
    const props = readMetadataProps(data, where);
    let meta;
    let bytes;
    try {
      meta = readMetadata(props);
      if (meta.step === null) {
        throw new MetadataError(
          'this file embeds no step model (metadata key rnn_export.step); the JavaScript ' +
            'runtime steps through it: make the file with `rnn-export convert`',
        );
      }
      if (meta.states.some((s) => s.dtype !== 'float32')) {
        throw new MetadataError(`this runtime streams float32 states; got ${JSON.stringify(meta.states.map((s) => s.dtype))}`);
      }
      bytes = meta.step.inFile ? data : await stepBytes(meta.step);
      readMetadataProps(bytes, 'the embedded step model');
    } catch (e) {
      if (e instanceof MetadataError || e instanceof ModelFileError) e.message = `${where}: ${e.message}`;
      throw e;
    }
    const sessionOptions = { graphOptimizationLevel: 'all', intraOpNumThreads: 1, interOpNumThreads: 1, ...options.sessionOptions };
    let session;
    try {
      session = await ort.InferenceSession.create(bytes, sessionOptions);
    } catch (e) {
      throw new ModelFileError(`${where}: onnxruntime cannot load its step model: ${e.message}`);
    }
    try {
      checkNames('input', session.inputNames, [meta.step.token, ...meta.step.states.map(([i]) => i)]);
      checkNames('output', session.outputNames, [meta.step.logProbs, ...meta.step.states.map(([, o]) => o)]);
    } catch (e) {
      e.message = `${where}: ${e.message}`;
      throw e;
    }
    return new RnnModel(ort, meta, session, where, options.preallocate ?? true);
  }

  constructor(ort, metadata, session, name, preallocate = true) {
    /** whether steps pass their output buffers to session.run */
    this.preallocate = preallocate;
    this.ort = ort;
    /** @type {import('./metadata.js').ModelMetadata} */
    this.metadata = metadata;
    this.session = session;
    this.name = name;
    /** the input kind's encoder (characters -> token ids for schema 1 files) */
    this.input = inputEncoder(metadata);
    /** width of each step-model state's (B, W) view */
    this.widths = layerWidths(metadata);
  }

  /** @returns {string[]} class names, index = class id */
  get labels() {
    return this.metadata.labels;
  }

  /** One onnxruntime call of the step model (feeds and pre-allocated fetches). */
  async run(feeds, fetches) {
    try {
      return await this.session.run(feeds, fetches);
    } catch (e) {
      throw new StreamError(`onnxruntime failed to run the step model: ${e.message}`);
    }
  }

  /** A new stream at the initial state. @param {{strict?: boolean}} [options] */
  stream(options = {}) {
    return new Stream(this, options);
  }

  /** A new, empty pool. */
  pool() {
    return new StreamPool(this);
  }

  /** A new StepBatch of `batch` rows at zeros (streams and pools run on these). */
  stepBatch(batch) {
    return new StepBatch(this, batch);
  }

  /**
   * The prediction after the last character of each text, from the initial state.
   *
   * Texts of similar length run together, B rows per onnxruntime call of the step model;
   * a row that has ended keeps its result. An empty text has no prediction (null).
   * @param {string[]} texts
   * @param {{strict?: boolean, batchSize?: number}} [options]
   * @returns {Promise<(import('./stream.js').Prediction|null)[]>}
   */
  async predict(texts, options = {}) {
    const { strict = false, batchSize = PREDICT_BATCH_SIZE } = options;
    if (!Array.isArray(texts)) throw new StreamError(`texts must be an array of strings; got ${typeof texts}`);
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new StreamError(`batchSize must be an integer >= 1; got ${batchSize}`);
    const encoded = texts.map((text, i) => {
      try {
        return this.input.many(text, strict);
      } catch (e) {
        e.message = `texts[${i}]: ${e.message}`;
        throw e;
      }
    });
    const results = new Array(texts.length).fill(null);
    const order = encoded.map((ids, i) => i).filter((i) => encoded[i].length > 0);
    order.sort((a, b) => encoded[a].length - encoded[b].length);
    for (let start = 0; start < order.length; start += batchSize) {
      const rows = order.slice(start, start + batchSize);
      const lengths = rows.map((i) => encoded[i].length);
      const batch = this.stepBatch(rows.length);
      for (let t = 0; t < lengths[lengths.length - 1]; t++) {
        // A row past its end repeats its last token; its result was taken when it ended.
        rows.forEach((i, r) => this.input.write(batch.input, r, encoded[i][Math.min(t, lengths[r] - 1)]));
        const bad = await batch.advance();
        const live = bad.filter((r) => lengths[r] > t);
        if (live.length > 0) {
          throw new StreamError(
            `texts[${rows[live[0]]}]: the log-probabilities are not finite (NaN or infinity: the state blew up)`,
          );
        }
        if (bad.length > 0) batch.current ^= 1; // only rows past their end: their results are taken
        rows.forEach((i, r) => {
          if (lengths[r] === t + 1) results[i] = new Prediction(batch.logProbsRow(r), this.labels);
        });
      }
    }
    return results;
  }
}
