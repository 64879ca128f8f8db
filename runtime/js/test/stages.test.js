// Schema 2's input kinds: a features model takes frames of F float32 values and gives
// its main graph's numbers; a frame of another size or with a non-finite value is a
// StreamError and changes nothing. Schema 1 files (token models) still open.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MetadataError, open, readMetadata, readMetadataProps } from '../src/node.js';
import { closeness, fixture, json } from './fixtures.js';

test('a features model streams frames as its main graph computes them', async () => {
  const model = await open(fixture('features.onnx'));
  assert.equal(model.metadata.schemaVersion, 2);
  assert.deepEqual(model.metadata.input.kind, 'features');
  assert.equal(model.metadata.input.size, 5);
  const { frames, log_probs: want } = json('features.json');
  const stream = model.stream();
  for (const [t, frame] of frames.entries()) {
    const p = await stream.step(frame);
    assert.ok(closeness(p.logProbs, want[t]) <= 1, `frame ${t}`);
  }
  const fed = await model.stream().feed(Float32Array.from(frames.flat()));
  assert.ok(closeness(fed.logProbs, want[frames.length - 1]) <= 1);
  const [last] = await model.predict([frames]);
  assert.ok(closeness(last.logProbs, want[frames.length - 1]) <= 1);
});

test('a frame of the wrong size or not finite is a StreamError, the stream unchanged', async () => {
  const model = await open(fixture('features.onnx'));
  const stream = model.stream();
  await stream.step([0, 0, 0, 0, 1]);
  const before = stream.save();
  await assert.rejects(stream.step([1, 2, 3]), { name: 'StreamError', message: /has 3 values; this model expects frames of 5/ });
  await assert.rejects(stream.step([1, 2, 3, 4, NaN]), { name: 'StreamError', message: /not a finite number/ });
  await assert.rejects(stream.step('a'), { name: 'StreamError', message: /array of 5 numbers/ });
  await assert.rejects(stream.feed([[1, 2, 3, 4, 5], [1]]), { name: 'StreamError', message: /frame 1 has 1 values/ });
  assert.deepEqual(stream.save(), before);
});

test('schema 2 metadata is validated as metadata.py does', async () => {
  const props = readMetadataProps(new Uint8Array(await (await import('node:fs/promises')).readFile(fixture('features.onnx'))), 'f');
  const model = JSON.parse(props.get('rnn_export.model'));
  const bad = (change) => {
    const copy = new Map(props);
    copy.set('rnn_export.model', JSON.stringify(change(structuredClone(model))));
    return copy;
  };
  assert.throws(() => readMetadata(bad((m) => ((m.input.kind = 'pixels'), m))), { name: 'MetadataError', message: /model\.input\.kind in/ });
  assert.throws(() => readMetadata(bad((m) => ((m.input.scale[0] = 0), m))), { name: 'MetadataError', message: /a non-zero scale/ });
  assert.throws(() => readMetadata(bad((m) => ((m.input.mean = [1]), m))), { name: 'MetadataError', message: /5 finite numbers/ });
  assert.throws(() => readMetadata(bad((m) => ((m.vocab_size = 3), m))), { name: 'MetadataError', message: /vocab_size 0/ });
  assert.throws(() => readMetadata(bad((m) => ((m.head.steps = 'every'), m))), MetadataError);
  const tabbed = new Map(props);
  tabbed.set('rnn_export.labels', JSON.stringify(['x', 'y\tz', 'w']));
  assert.throws(() => readMetadata(tabbed), { name: 'MetadataError', message: /without a control character/ });
  const future = new Map(props);
  future.set('rnn_export.schema', '3');
  assert.throws(() => readMetadata(future), { name: 'MetadataError', message: /versions 1, 2/ });
});
