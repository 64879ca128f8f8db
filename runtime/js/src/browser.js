// rnn-runtime in the browser: onnxruntime-web's WASM backend, one thread.

import * as ort from 'onnxruntime-web';
import { RnnModel } from './model.js';

export * from './index.js';
export { ort };

/**
 * Open a model from its bytes (a fetched file, a File from a picker) on onnxruntime-web.
 * @param {Uint8Array|ArrayBuffer|Blob} source
 * @param {{name?: string, sessionOptions?: object}} [options]
 */
export async function open(source, options = {}) {
  if (typeof Blob !== 'undefined' && source instanceof Blob) source = new Uint8Array(await source.arrayBuffer());
  return RnnModel.open(ort, source, { sessionOptions: { executionProviders: ['wasm'] }, preallocate: false, ...options });
}
