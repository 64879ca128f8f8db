// Streaming step in Node: rnn-runtime's stream against a hand-written session.run loop
// on the same file, interleaved. Usage: node bench/node.mjs MODEL.onnx [STEPS]
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
console.log(JSON.stringify({ runtime: 'node', arch: model.metadata.arch, stream_us: runtime, session_run_us: hand }));
