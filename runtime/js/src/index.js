// rnn-runtime: stream RNN classifiers exported by `rnn-export convert` in JavaScript.
// This entry takes the onnxruntime object as an argument (openModel(ort, bytes)); the
// platform entries (node.js, browser.js) pass onnxruntime-node or onnxruntime-web.

export { MetadataError, ModelFileError, SnapshotError, StreamError, UnknownCharError } from './errors.js';
export { FrameInput, TokenInput, inputEncoder } from './inputs.js';
export { SCHEMA_VERSION, SCHEMA_VERSIONS, readMetadata } from './metadata.js';
export { RnnModel, PREDICT_BATCH_SIZE } from './model.js';
export { readMetadataProps } from './onnxfile.js';
export { StreamPool } from './pool.js';
export { crc32, dumpSnapshot, loadSnapshot, pythonJson } from './snapshot.js';
export { Prediction, Stream } from './stream.js';

import { RnnModel } from './model.js';

/**
 * Open a model from its bytes with a given onnxruntime (onnxruntime-node or -web).
 * @param {object} ort
 * @param {Uint8Array|ArrayBuffer} data
 * @param {{name?: string, sessionOptions?: object}} [options]
 */
export function openModel(ort, data, options) {
  return RnnModel.open(ort, data, options);
}
