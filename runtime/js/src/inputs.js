// What a stream takes per step, by the model's input kind: the seam where input kinds
// plug in. An input encoder validates one step's input (or a sequence of them) before
// anything runs, and writes it into row `row` of the step model's input tensor. Token
// models ("tokens", "onehot") take characters or ids (TokenInput), "features" models
// frames of F numbers (FrameInput).

import { StreamError, UnknownCharError } from './errors.js';

/**
 * @typedef {object} InputEncoder
 * @property {string} kind
 * @property {(batch: number) => {type: string, data: BigInt64Array|Float32Array, dims: number[]}} buffer
 *   a new step-model input for `batch` rows
 * @property {(token: any, strict?: boolean) => number|Float32Array} one one validated step input
 * @property {(inputs: any, strict?: boolean) => Array<number|Float32Array>} many validated inputs of a sequence
 * @property {(data: BigInt64Array|Float32Array, row: number, value: number|Float32Array) => void} write
 */

function shownToken(token) {
  if (typeof token === 'string') return JSON.stringify(token.slice(0, 40));
  return String(token).slice(0, 40);
}

/** A model's character vocabulary: text -> token ids in [0, V), as rnn_runtime/tokens.py. */
export class TokenInput {
  /** @param {import('./metadata.js').ModelMetadata} meta */
  constructor(meta) {
    this.kind = meta.input.kind;
    /** @type {Map<string, number>} every token but the unknown one */
    this.charIds = new Map();
    meta.vocab.forEach((c, i) => {
      if (i !== meta.unkId) this.charIds.set(c, i);
    });
    this.unkId = meta.unkId;
    this.vocabSize = meta.vocabSize;
  }

  buffer(batch) {
    return { type: 'int64', data: new BigInt64Array(batch), dims: [batch] };
  }

  write(data, row, id) {
    data[row] = BigInt(id);
  }

  /**
   * Token ids of a text, one per character (code point).
   * @param {string} text
   * @param {boolean} [strict] refuse a character outside the vocabulary instead of
   *   mapping it to the unknown id
   * @returns {number[]}
   * @throws {UnknownCharError}
   */
  encode(text, strict = false) {
    if (typeof text !== 'string') throw new StreamError(`text must be a string; got ${typeof text}`);
    const ids = [];
    let pos = 0;
    for (const ch of text) {
      const id = this.charIds.get(ch);
      if (id !== undefined) ids.push(id);
      else if (strict || this.unkId === null) {
        const why = this.unkId === null ? 'this model has no unknown token' : 'strict mode refuses it';
        throw new UnknownCharError(
          `character ${JSON.stringify(ch)} at position ${pos} is not in the model's vocabulary ` +
            `(${this.charIds.size} characters); ${why}`,
        );
      } else ids.push(this.unkId);
      pos++;
    }
    return ids;
  }

  /** One validated token id from a single character or an integer id. */
  one(token, strict = false) {
    if (typeof token === 'string') {
      if ([...token].length !== 1) throw new StreamError(`a step takes one character; got ${shownToken(token)}`);
      return this.encode(token, strict)[0];
    }
    if (!Number.isInteger(token)) {
      throw new StreamError(`a step takes a character or an integer id; got ${shownToken(token)}`);
    }
    if (token < 0 || token >= this.vocabSize) {
      throw new StreamError(`token id ${token} is out of range; this model expects [0, ${this.vocabSize})`);
    }
    return token;
  }

  /** Validated ids from a text or from an iterable of integer ids in [0, V). */
  many(tokens, strict = false) {
    if (typeof tokens === 'string') return this.encode(tokens, strict);
    if (tokens === null || typeof tokens !== 'object' || !(Symbol.iterator in tokens)) {
      throw new StreamError(`tokens must be a string or an iterable of integer ids; got ${typeof tokens}`);
    }
    const ids = [...tokens].map(Number);
    ids.forEach((t, pos) => {
      if (!Number.isInteger(t) || t < 0 || t >= this.vocabSize) {
        throw new StreamError(
          `token id ${t} at position ${pos} is out of range; this model expects ids in [0, ${this.vocabSize})`,
        );
      }
    });
    return ids;
  }
}

/** Frames of F float32 values (input kind "features"); the graph normalizes them itself. */
export class FrameInput {
  /** @param {import('./metadata.js').ModelMetadata} meta */
  constructor(meta) {
    this.kind = 'features';
    this.size = meta.input.size;
  }

  buffer(batch) {
    return { type: 'float32', data: new Float32Array(batch * this.size), dims: [batch, this.size] };
  }

  write(data, row, frame) {
    data.set(frame, row * this.size);
  }

  /**
   * One validated frame: F finite numbers (an array or a typed array).
   * @returns {Float32Array}
   * @throws {StreamError} another size, or a value that is not a finite number
   */
  one(frame, _strict = false, where = 'a frame') {
    if (typeof frame === 'string' || frame === null || typeof frame !== 'object' || typeof frame.length !== 'number') {
      throw new StreamError(`${where} is an array of ${this.size} numbers; got ${typeof frame === 'string' ? 'a string' : typeof frame}`);
    }
    if (frame.length !== this.size) {
      throw new StreamError(`${where} has ${frame.length} values; this model expects frames of ${this.size}`);
    }
    const out = Float32Array.from(frame);
    const bad = out.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0 || Array.from(frame).some((x) => typeof x !== 'number')) {
      throw new StreamError(`${where} has a value that is not a finite number at ${Math.max(bad, 0)}; frames must be finite`);
    }
    return out;
  }

  /** Validated frames of a sequence: an array of frames, or one flat array of T * F values. */
  many(frames) {
    if (frames instanceof Float32Array || frames instanceof Float64Array) {
      if (frames.length % this.size !== 0) {
        throw new StreamError(`${frames.length} values are not whole frames of ${this.size}`);
      }
      const out = [];
      for (let t = 0; t < frames.length; t += this.size) out.push(this.one(frames.subarray(t, t + this.size), false, `frame ${t / this.size}`));
      return out;
    }
    if (!Array.isArray(frames)) throw new StreamError(`frames must be an array of frames; got ${typeof frames}`);
    return frames.map((f, t) => this.one(f, false, `frame ${t}`));
  }
}

/**
 * The input encoder of a model's input kind.
 * @param {import('./metadata.js').ModelMetadata} meta
 * @returns {InputEncoder}
 */
export function inputEncoder(meta) {
  switch (meta.input.kind) {
    case 'tokens':
    case 'onehot': // token ids too: the graph holds the one-hot table
      return new TokenInput(meta);
    case 'features':
      return new FrameInput(meta);
    default:
      throw new StreamError(`input kind ${JSON.stringify(meta.input.kind)} is not served by this runtime`);
  }
}
