// Bad input: one typed error each, and the stream (or nothing at all) unchanged.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import {
  MetadataError,
  ModelFileError,
  SCHEMA_VERSIONS,
  SnapshotError,
  StreamError,
  UnknownCharError,
  open,
  readMetadataProps,
} from '../src/node.js';
import { bytes, fixture } from './fixtures.js';

const file = () => new Uint8Array(readFileSync(fixture('gru.onnx')));

test('a file without the contract is a MetadataError', async () => {
  // A ModelProto with only ir_version (field 1 = 8): valid protobuf, no metadata.
  await assert.rejects(open(new Uint8Array([0x08, 0x08]), { name: 'bare.onnx' }), {
    name: 'MetadataError',
    message: /bare\.onnx: this file has no rnn-export metadata/,
  });
});

test('a truncated file is a ModelFileError', async () => {
  const data = file();
  await assert.rejects(open(data.subarray(0, Math.floor(data.length / 2)), { name: 'half.onnx' }), (e) => {
    assert.ok(e instanceof ModelFileError);
    assert.match(e.message, /half\.onnx: cannot load it as a model: .*claims \d+ bytes/);
    return true;
  });
  await assert.rejects(open(new Uint8Array(0)), ModelFileError);
  await assert.rejects(open('/nonexistent/model.onnx'), ModelFileError);
});

test('a damaged embedded step model is refused by its sha256', async () => {
  const data = file();
  const text = new TextDecoder('latin1').decode(data);
  const at = text.indexOf('"onnx_base64": "') + '"onnx_base64": "'.length + 100;
  data[at] = data[at] === 0x41 ? 0x42 : 0x41; // one base64 character changed, length kept
  await assert.rejects(open(data), { name: 'MetadataError', message: /sha256 .*the file is damaged/ });
});

test('metadata that lies is a MetadataError naming the field', async () => {
  const data = file();
  const text = new TextDecoder('latin1').decode(data);
  const at = text.indexOf('"arch": "gru"') + '"arch": "'.length;
  data.set(new TextEncoder().encode('grx'), at);
  await assert.rejects(open(data), { name: 'MetadataError', message: /model\.arch in/ });
  const props = readMetadataProps(file(), 'gru.onnx');
  assert.ok(SCHEMA_VERSIONS.includes(Number(props.get('rnn_export.schema'))));
});

test('an unknown character (strict) or token id is refused, the stream unchanged', async () => {
  const model = await open(fixture('gru.onnx'));
  const stream = model.stream({ strict: true });
  await stream.feed('AB');
  const before = stream.save();
  await assert.rejects(stream.step('\u00e9'), UnknownCharError);
  await assert.rejects(stream.feed('AB\u00e9'), { name: 'UnknownCharError', message: /position 2/ });
  await assert.rejects(stream.step(model.metadata.vocabSize), { name: 'StreamError', message: /out of range/ });
  await assert.rejects(stream.step('AB'), StreamError);
  assert.deepEqual(stream.save(), before);
  const lenient = model.stream();
  assert.equal((await lenient.feed('\u00e9')).labels.length, model.labels.length);
});

test('a state saved from another model, or damaged, is a SnapshotError, the stream unchanged', async () => {
  const model = await open(fixture('gru.onnx'));
  const stream = model.stream();
  await stream.feed('ABC');
  const before = stream.save();
  assert.throws(() => stream.restore(bytes('lstm.saved.bin')), { name: 'SnapshotError', message: /another|checkpoint sha256/ });
  const damaged = before.slice();
  damaged[damaged.length - 1] ^= 1;
  assert.throws(() => stream.restore(damaged), { name: 'SnapshotError', message: /corrupt: crc32/ });
  assert.throws(() => stream.restore(before.subarray(0, 20)), SnapshotError);
  assert.throws(() => stream.restore('not bytes'), SnapshotError);
  assert.deepEqual(stream.save(), before);
});

test('a state of the wrong size or not finite is a StreamError, the stream unchanged', async () => {
  const model = await open(fixture('lstm.onnx'));
  const stream = model.stream();
  await stream.feed('AB');
  const before = stream.save();
  const state = stream.getState();
  const [name] = state.keys();
  const wrong = new Map(state);
  wrong.set(name, { values: new Float32Array(3), shape: [1, 1, 3] });
  assert.throws(() => stream.setState(wrong), { name: 'StreamError', message: /has shape \(1, 1, 3\); this model expects/ });
  const nan = new Map(state);
  const values = state.get(name).values.slice();
  values[0] = NaN;
  nan.set(name, { values, shape: state.get(name).shape });
  assert.throws(() => stream.setState(nan), { name: 'StreamError', message: /1 non-finite values/ });
  assert.throws(() => stream.setState(new Map()), { name: 'StreamError', message: /state names are/ });
  assert.deepEqual(stream.save(), before);
  stream.setState(state);
  assert.equal(stream.prediction, null);
  assert.ok(MetadataError.prototype instanceof Error);
});
