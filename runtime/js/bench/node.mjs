// Streaming step in Node: rnn-runtime's stream against a hand-written session.run loop
// on the same file, interleaved; and a pool of 64 streams per stream. Usage: node bench/node.mjs MODEL.onnx [STEPS]
import { open, ort } from '../src/node.js';
import { handWritten, timeInterleaved } from './loops.js';

const [path, steps = '2000'] = process.argv.slice(2);
const model = await open(path);
const bytes = Buffer.from(model.metadata.step.onnxBase64, 'base64');
const options = { graphOptimizationLevel: 'all', intraOpNumThreads: 1, interOpNumThreads: 1 };
const loop = await handWritten(ort, model, new Uint8Array(bytes), options);
const stream = model.stream();
const tokens = Array.from({ length: Number(steps) }, (_, i) => (i * 7919) % model.metadata.vocabSize);
const [runtime, hand] = await timeInterleaved([(t) => stream.step(t), loop], tokens);
// A pool of POOL streams, one call a step for all: µs per stream and step.
const POOL = 64;
const pool = model.pool();
for (let i = 0; i < POOL; i++) pool.join();
const rows = (t) => Array.from({ length: POOL }, (_, i) => (t + i) % model.metadata.vocabSize);
const [poolCall] = await timeInterleaved([(t) => pool.step(rows(t))], tokens.slice(0, 200));
console.log(
  JSON.stringify({
    runtime: 'node',
    arch: model.metadata.arch,
    stream_us: runtime,
    session_run_us: hand,
    pool64_per_stream_us: poolCall / POOL,
  }),
);
