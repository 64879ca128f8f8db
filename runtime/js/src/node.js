// rnn-runtime in Node: onnxruntime-node, and models opened by path.

import { readFile } from 'node:fs/promises';
import * as ort from 'onnxruntime-node';
import { ModelFileError } from './errors.js';
import { RnnModel } from './model.js';

export * from './index.js';
export { ort };

/**
 * Open a model file (a path) or its bytes on onnxruntime-node's CPU provider.
 * @param {string|Uint8Array} source
 * @param {{name?: string, sessionOptions?: object}} [options]
 * @returns {Promise<RnnModel>}
 */
export async function open(source, options = {}) {
  if (typeof source === 'string') {
    let data;
    try {
      data = await readFile(source);
    } catch (e) {
      throw new ModelFileError(`${source}: cannot read it (${e.code ?? e.message})`);
    }
    return RnnModel.open(ort, new Uint8Array(data.buffer, data.byteOffset, data.length), { name: source, ...options });
  }
  return RnnModel.open(ort, source, options);
}
