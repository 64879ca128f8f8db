// A session server for `rnn-export verify --runtime onnxruntime-node|onnxruntime-web`: it
// runs a model's graphs in onnxruntime-node, or in onnxruntime-web (WASM, one thread)
// inside Debian's headless Chromium, and answers JSON lines on stdin/stdout:
//   {"op": "open", "model": base64}  -> {"inputs": [names], "outputs": [names], "contract": bool}
//   {"op": "run", "feeds": [{"name", "dtype", "shape", "data": base64}]}
//                                    -> {"outputs": [{"name", "dtype", "shape", "data"}]}
// or {"error": message}. A model with rnn-export's contract is opened through
// rnn-runtime first (the contract read and validated, the step model's sha256 checked).
// Usage: node bin/ort-server.mjs node|web

import { createInterface } from 'node:readline';

const platform = process.argv[2];
if (platform !== 'node' && platform !== 'web') {
  process.stderr.write('usage: node bin/ort-server.mjs node|web\n');
  process.exit(2);
}

const ARRAYS = { float32: Float32Array, int64: BigInt64Array, int32: Int32Array, float64: Float64Array };

function decode(feed) {
  const raw = Buffer.from(feed.data, 'base64');
  const Type = ARRAYS[feed.dtype];
  const copy = new Uint8Array(raw.length);
  copy.set(raw);
  return [feed.name, feed.dtype, new Type(copy.buffer), feed.shape];
}

function encode(name, tensor) {
  const data = Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength).toString('base64');
  return { name, dtype: tensor.type, shape: tensor.dims, data };
}

async function nodeHandler() {
  const ort = await import('onnxruntime-node');
  const { open } = await import('../src/node.js');
  let session = null;
  return async (request) => {
    if (request.op === 'open') {
      const bytes = new Uint8Array(Buffer.from(request.model, 'base64'));
      const contract = await hasContract(bytes, open);
      session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1 });
      return { inputs: session.inputNames, outputs: session.outputNames, contract };
    }
    const feeds = {};
    for (const [name, dtype, data, shape] of request.feeds.map(decode)) feeds[name] = new ort.Tensor(dtype, data, shape);
    const out = await session.run(feeds);
    return { outputs: Object.entries(out).map(([name, t]) => encode(name, t)) };
  };
}

/** Whether bytes carry rnn-export's contract; one that does is opened through rnn-runtime. */
async function hasContract(bytes, open) {
  const { readMetadataProps } = await import('../src/onnxfile.js');
  const props = readMetadataProps(bytes, 'the model');
  if (![...props.keys()].some((k) => k.startsWith('rnn_export.'))) return false;
  await open(bytes, { name: 'the model' });
  return true;
}

async function webHandler() {
  const { launch } = await import('../test/chromium.js');
  const { serveStatic } = await import('../test/serve.js');
  const server = await serveStatic();
  const [context, close] = await launch();
  const page = await context.newPage();
  await page.goto(`${server.url}/bin/ort-page.html`);
  await page.waitForFunction(() => window.handle !== undefined);
  process.on('exit', () => close());
  return (request) => page.evaluate((r) => window.handle(r), request);
}

const handle = platform === 'node' ? await nodeHandler() : await webHandler();
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  let reply;
  try {
    reply = await handle(JSON.parse(line));
  } catch (e) {
    reply = { error: `${e.name}: ${e.message}` };
  }
  process.stdout.write(JSON.stringify(reply) + '\n');
}
process.exit(0);
