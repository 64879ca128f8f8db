// Every error type the runtime throws, mirroring rnn_runtime.errors: the message says
// what was expected and what was got.

/** A file that is not a model this runtime can open (empty, truncated, not ONNX). */
export class ModelFileError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ModelFileError';
  }
}

/** A file without rnn-export's metadata, with an unknown schema, or whose metadata lies. */
export class MetadataError extends Error {
  constructor(message) {
    super(message);
    this.name = 'MetadataError';
  }
}

/** Bad input to a stream or pool, or a step whose result is not finite; the stream is unchanged. */
export class StreamError extends Error {
  constructor(message) {
    super(message);
    this.name = 'StreamError';
  }
}

/** A character outside the model's vocabulary (strict mode, or a model without an unknown token). */
export class UnknownCharError extends StreamError {
  constructor(message) {
    super(message);
    this.name = 'UnknownCharError';
  }
}

/** Bytes that are not a saved stream of this model. */
export class SnapshotError extends StreamError {
  constructor(message) {
    super(message);
    this.name = 'SnapshotError';
  }
}
