// The contract inside every .onnx file that `rnn-export convert` writes, read and
// validated as rnn_runtime/metadata.py does (same keys, limits and checks; the Python
// module's docstring documents the keys). Schema 2 describes the model's stages: its
// input kind ("tokens", "onehot": token ids; "features": F float32 values per frame) and
// its head; schema 1 files are token models with a log-softmax head at the last step.

import { MetadataError } from './errors.js';

export const SCHEMA_VERSION = 2;
export const SCHEMA_VERSIONS = [1, 2]; // what this runtime reads
export const PREFIX = 'rnn_export.';
export const ARCHS = ['cell', 'stacked', 'gru', 'lstm'];
export const INPUT_KINDS = ['tokens', 'onehot', 'features'];
export const HEADS = ['log_softmax'];
export const HEAD_STEPS = ['last'];
const DTYPES = ['int64', 'float32'];
const INITIALS = ['zeros'];
export const MAX_VOCAB = 2 ** 20;
export const MAX_CLASSES = 2 ** 16;
export const MAX_HIDDEN = 2 ** 14;
export const MAX_LAYERS = 64;
export const MAX_STATES = 16;
export const MAX_RANK = 8;
export const MAX_DIM = 2 ** 20;
export const MAX_STATE_FLOATS = 2 ** 22;
export const MAX_OPSET = 1000;
// A label is one tab-separated field of a line in the text outputs: no C0 or C1 control,
// no line or paragraph separator (metadata.py's _LABEL_BREAKS).
const LABEL_BREAKS = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/;
const MAXIMA = {
  vocab_size: MAX_VOCAB,
  num_classes: MAX_CLASSES,
  hidden_size: MAX_HIDDEN,
  num_layers: MAX_LAYERS,
};

/**
 * @typedef {{name: string, shape: (number|string)[], dtype: string}} TensorSpec
 * @typedef {{input: string, output: string, shape: (number|string)[], dtype: string,
 *   initial: string, batchAxis: number}} StateSpec
 * @typedef {{token: string, logProbs: string, states: [string, string][], sha256: string,
 *   onnxBase64: string, inFile: boolean}} StepSpec
 * @typedef {{kind: 'tokens'|'onehot'|'features', size: number, mean?: number[],
 *   scale?: number[]}} InputSpec  size: layer 0's input width (E, V or F)
 * @typedef {{output: string, steps: string}} HeadSpec
 * @typedef {{schemaVersion: number, arch: string, vocabSize: number, numClasses: number,
 *   hiddenSize: number, numLayers: number, nonlinearity: string, vocab: string[],
 *   unkId: number|null, labels: string[], input: InputSpec, head: HeadSpec, tokens: TensorSpec,
 *   lengths: TensorSpec, logProbs: TensorSpec, states: StateSpec[], provenance: object,
 *   checkpointSha256: string, step: StepSpec|null, isStepFile: boolean}} ModelMetadata
 * `tokens` is the main graph's input whatever the kind: int64 (B, T) token ids, or float32
 * (B, T, F) frames for "features" (then vocab is empty); `step.token` likewise.
 */

function get(obj, key) {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

function isObject(x) {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function isInt(x, minimum = 0) {
  return Number.isSafeInteger(x) && x >= minimum;
}

function shown(x) {
  let text;
  try {
    text = JSON.stringify(x);
  } catch {
    text = String(x);
  }
  return text === undefined ? String(x) : text.slice(0, 200);
}

function expect(cond, what, got) {
  if (!cond) throw new MetadataError(`metadata: expected ${what}; got ${shown(got)}`);
}

function wellFormed(value) {
  if (typeof value === 'string') return value.isWellFormed();
  if (Array.isArray(value)) return value.every(wellFormed);
  if (isObject(value)) return Object.entries(value).every(([k, v]) => k.isWellFormed() && wellFormed(v));
  return true;
}

function load(props, key) {
  const full = PREFIX + key;
  if (!props.has(full)) throw new MetadataError(`metadata key '${full}' is missing`);
  let value;
  try {
    value = JSON.parse(props.get(full));
  } catch (e) {
    throw new MetadataError(`metadata key '${full}' is not valid JSON text: ${e.message.slice(0, 200)}`);
  }
  // Lone surrogates ("\ud800") parse, then fail wherever the text is printed.
  if (!wellFormed(value)) {
    throw new MetadataError(`metadata key '${full}' is not valid JSON text: a lone surrogate`);
  }
  return value;
}

function repeated(items) {
  const seen = new Set();
  const twice = new Set();
  for (const x of items) (seen.has(x) ? twice : seen).add(x);
  return [...twice];
}

function shape(raw, where) {
  expect(Array.isArray(raw) && raw.length <= MAX_RANK, `${where}.shape of rank <= 8`, raw);
  for (const d of raw) {
    expect(
      d === 'B' || d === 'T' || (isInt(d, 1) && d <= MAX_DIM),
      `${where}.shape of ints in [1, ${MAX_DIM}], 'B' or 'T'`,
      raw,
    );
  }
  return [...raw];
}

function tensor(raw, where, dtype) {
  expect(isObject(raw), `${where} to be an object`, raw);
  const name = get(raw, 'name');
  expect(typeof name === 'string' && name !== '', `${where}.name`, name);
  expect(get(raw, 'dtype') === dtype, `${where}.dtype '${dtype}'`, get(raw, 'dtype'));
  return { name, shape: shape(get(raw, 'shape'), where), dtype };
}

function state(raw, i) {
  const where = `io.states[${i}]`;
  expect(isObject(raw), `${where} to be an object`, raw);
  for (const key of ['input', 'output']) {
    const v = get(raw, key);
    expect(typeof v === 'string' && v !== '', `${where}.${key}`, v);
  }
  const dims = shape(get(raw, 'shape'), where);
  expect(
    dims.filter((d) => d === 'B').length === 1 && !dims.includes('T'),
    `${where}.shape with one 'B'`,
    dims,
  );
  const floats = dims.reduce((n, d) => n * (d === 'B' ? 1 : d), 1);
  expect(floats <= MAX_STATE_FLOATS, `${where}.shape of at most ${MAX_STATE_FLOATS} values`, dims);
  expect(DTYPES.includes(get(raw, 'dtype')), `${where}.dtype in ${shown(DTYPES)}`, get(raw, 'dtype'));
  expect(INITIALS.includes(get(raw, 'initial')), `${where}.initial in ${shown(INITIALS)}`, get(raw, 'initial'));
  return {
    input: raw.input,
    output: raw.output,
    shape: dims,
    dtype: raw.dtype,
    initial: raw.initial,
    batchAxis: dims.indexOf('B'),
  };
}

function step(raw, numLayers, states, version) {
  expect(isObject(raw), 'step to be an object', raw);
  const inFile = get(raw, 'in_file') ?? false;
  expect(typeof inFile === 'boolean', 'step.in_file true or false', inFile);
  const first = version >= 2 ? 'input' : 'token';
  const keys = inFile ? [first, 'log_probs'] : [first, 'log_probs', 'sha256', 'onnx_base64'];
  for (const key of keys) {
    const v = get(raw, key);
    expect(typeof v === 'string' && v !== '', `step.${key}`, v);
  }
  const layers = get(raw, 'states');
  expect(
    Array.isArray(layers) &&
      layers.every(
        (x) =>
          isObject(x) &&
          ['input', 'output'].every((k) => typeof get(x, k) === 'string' && x[k] !== ''),
      ),
    'step.states to be a list of {input, output} names',
    layers,
  );
  // The step model's states are each model state's per-layer views, in metadata order.
  const want = numLayers * states.length;
  expect(layers.length === want, `${want} step states (one per layer and state)`, layers.length);
  for (const s of states) {
    expect(
      (s.shape.length === 3 && s.batchAxis === 1) ||
        (s.shape.length === 2 && numLayers === 1 && s.batchAxis === 0),
      '(L, B, H) or, with one layer, (B, H) states for a step model',
      s.shape,
    );
  }
  const pairs = layers.map((x) => [x.input, x.output]);
  const names = [raw[first], raw.log_probs, ...pairs.flat()];
  expect(new Set(names).size === names.length, 'distinct step input and output names', names);
  if (inFile) {
    return { token: raw[first], logProbs: raw.log_probs, states: pairs, sha256: '', onnxBase64: '', inFile: true };
  }
  expect(/^[0-9a-f]{64}$/.test(raw.sha256), 'step.sha256', raw.sha256);
  return {
    token: raw[first],
    logProbs: raw.log_probs,
    states: pairs,
    sha256: raw.sha256,
    onnxBase64: raw.onnx_base64,
    inFile: false,
  };
}

/** The input and head stages of model (schema 1: tokens, E = H, log-softmax at the last step). */
function stages(model, version) {
  if (version === 1) {
    return { input: { kind: 'tokens', size: get(model, 'hidden_size') }, head: { output: HEADS[0], steps: HEAD_STEPS[0] } };
  }
  const raw = get(model, 'input');
  const head = get(model, 'head');
  expect(isObject(raw), 'model.input to be an object', raw);
  const kind = get(raw, 'kind');
  const size = get(raw, 'size');
  expect(INPUT_KINDS.includes(kind), `model.input.kind in ${shown(INPUT_KINDS)}`, kind);
  expect(isInt(size, 1) && size <= MAX_DIM, `model.input.size in [1, ${MAX_DIM}]`, size);
  expect(isObject(head), 'model.head to be an object', head);
  expect(HEADS.includes(get(head, 'output')), `model.head.output in ${shown(HEADS)}`, get(head, 'output'));
  expect(HEAD_STEPS.includes(get(head, 'steps')), `model.head.steps in ${shown(HEAD_STEPS)}`, get(head, 'steps'));
  const input = { kind, size };
  if (kind === 'features') {
    for (const k of ['mean', 'scale']) {
      const values = get(raw, k);
      expect(
        Array.isArray(values) && values.length === size && values.every((x) => typeof x === 'number' && Number.isFinite(x)),
        `model.input.${k}: ${size} finite numbers`,
        values,
      );
      input[k] = values;
    }
    expect(input.scale.every((x) => x !== 0), 'a non-zero scale', input.scale);
  }
  return { input, head: { output: head.output, steps: head.steps } };
}

/** The vocabulary's tokens and unknown id, checked against model.vocab_size. */
function vocabulary(vocab, vocabSize) {
  expect(isObject(vocab), 'vocab to be an object', vocab);
  const tokens = get(vocab, 'tokens');
  expect(
    Array.isArray(tokens) && tokens.every((t) => typeof t === 'string'),
    'vocab.tokens to be a list of strings',
    tokens,
  );
  expect(tokens.length === vocabSize, `${vocabSize} vocab tokens`, tokens.length);
  expect(new Set(tokens).size === tokens.length, 'unique vocab tokens', repeated(tokens));
  const unk = get(vocab, 'unk_id') ?? null;
  expect(
    unk === null || (isInt(unk) && unk < tokens.length),
    `vocab.unk_id in [0, ${tokens.length}) or null (no unknown token)`,
    unk,
  );
  return [tokens, unk];
}

/**
 * Read and validate rnn-export's metadata from a model's metadata_props.
 * @param {Map<string, string>} props key -> value
 * @returns {ModelMetadata}
 * @throws {MetadataError} no rnn-export metadata, an unknown schema version, or values
 *   of the wrong type or inconsistent with each other
 */
export function readMetadata(props) {
  if (![...props.keys()].some((k) => k.startsWith(PREFIX))) {
    throw new MetadataError(
      'this file has no rnn-export metadata (was it made by `rnn-export convert`?)',
    );
  }
  const version = load(props, 'schema');
  if (!SCHEMA_VERSIONS.includes(version)) {
    throw new MetadataError(
      `unknown metadata schema version ${shown(version)}; this runtime reads versions ${SCHEMA_VERSIONS.join(', ')}`,
    );
  }
  const model = load(props, 'model');
  expect(isObject(model), 'model to be an object', model);
  const { input, head } = stages(model, version);
  const frames = input.kind === 'features';
  for (const [key, most] of Object.entries(MAXIMA)) {
    const value = get(model, key);
    const low = key === 'vocab_size' && frames ? 0 : 1;
    expect(isInt(value, low) && value <= most, `model.${key} in [${low}, ${most}]`, value);
  }
  expect(!frames || model.vocab_size === 0, 'model.vocab_size 0 (features)', model);
  expect(ARCHS.includes(get(model, 'arch')), `model.arch in ${shown(ARCHS)}`, get(model, 'arch'));
  expect(typeof get(model, 'nonlinearity') === 'string', 'model.nonlinearity', get(model, 'nonlinearity'));
  if (input.kind === 'onehot') expect(input.size === model.vocab_size, 'model.input.size V for onehot', input.size);

  let tokens = [];
  let unk = null;
  if (frames) expect(!props.has(PREFIX + 'vocab'), 'no vocab for a features model', 'a vocab');
  else [tokens, unk] = vocabulary(load(props, 'vocab'), model.vocab_size);

  const labels = load(props, 'labels');
  expect(
    Array.isArray(labels) && labels.every((x) => typeof x === 'string'),
    'labels to be a list of strings',
    labels,
  );
  expect(labels.length === model.num_classes, `${model.num_classes} labels`, labels.length);
  expect(new Set(labels).size === labels.length, 'distinct labels', repeated(labels));
  expect(
    !labels.some((x) => LABEL_BREAKS.test(x)),
    'labels without a control character or line break',
    labels.filter((x) => LABEL_BREAKS.test(x)).slice(0, 3),
  );

  const io = load(props, 'io');
  expect(isObject(io), 'io to be an object', io);
  const rawStates = get(io, 'states');
  expect(
    Array.isArray(rawStates) && rawStates.length > 0 && rawStates.length <= MAX_STATES,
    `io.states to be a list of 1 to ${MAX_STATES} states`,
    rawStates,
  );
  const states = rawStates.map(state);
  const key = version >= 2 ? 'input' : 'tokens';
  const mainIn = tensor(get(io, key), `io.${key}`, frames ? 'float32' : 'int64');
  const wantShape = frames ? ['B', 'T', input.size] : ['B', 'T'];
  expect(shown(mainIn.shape) === shown(wantShape), `io.${key}.shape ${shown(wantShape)}`, mainIn.shape);
  const tensors = {
    tokens: mainIn,
    lengths: tensor(get(io, 'lengths'), 'io.lengths', 'int64'),
    logProbs: tensor(get(io, 'log_probs'), 'io.log_probs', 'float32'),
  };
  const names = [...Object.values(tensors).map((t) => t.name), ...states.flatMap((s) => [s.input, s.output])];
  expect(new Set(names).size === names.length, 'distinct input and output names', names);

  const provenance = load(props, 'provenance');
  expect(isObject(provenance), 'provenance to be an object', provenance);
  const opset = get(provenance, 'opset');
  expect(isInt(opset, 1) && opset <= MAX_OPSET, `provenance.opset in [1, ${MAX_OPSET}]`, opset);
  const sha = get(provenance, 'checkpoint_sha256');
  expect(typeof sha === 'string' && sha.length === 64, 'provenance.checkpoint_sha256', sha);
  const toolVersion = get(provenance, 'tool_version');
  expect(typeof toolVersion === 'string', 'provenance.tool_version to be a str', toolVersion);
  const libraries = get(provenance, 'libraries');
  expect(
    isObject(libraries) && Object.values(libraries).every((v) => typeof v === 'string'),
    'provenance.libraries to be an object of version strings',
    libraries,
  );
  const stepSpec = props.has(PREFIX + 'step') ? step(load(props, 'step'), model.num_layers, states, version) : null;
  return {
    schemaVersion: version,
    arch: model.arch,
    vocabSize: model.vocab_size,
    numClasses: model.num_classes,
    hiddenSize: model.hidden_size,
    numLayers: model.num_layers,
    nonlinearity: model.nonlinearity,
    vocab: tokens,
    unkId: unk,
    labels,
    input,
    head,
    ...tensors,
    states,
    provenance,
    checkpointSha256: sha,
    step: stepSpec,
    isStepFile: stepSpec !== null && stepSpec.inFile,
  };
}
