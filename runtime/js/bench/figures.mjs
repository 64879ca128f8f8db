// The step figures of docs/javascript.md, from one run: per default arch, µs per
// streaming step of the Python runtime, of rnn-runtime in Node and in Chromium (WASM, one
// thread), and of a hand-written session.run loop in each, on the same file.
// Usage: PYTHON=python node bench/figures.mjs DIR_WITH_ARCH.onnx [STEPS]

import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { launch } from '../test/chromium.js';
import { serveStatic } from '../test/serve.js';

// The Python runtime's stream step, median of 7 blocks.
const PYTHON_STEP = `
import sys, time, statistics
import rnn_runtime
model = rnn_runtime.open_model(sys.argv[1]); stream = model.stream()
n = int(sys.argv[2]); V = model.metadata.vocab_size
tokens = [(i * 7919) % V for i in range(n)]
times = []
for _ in range(7):
    t = time.perf_counter()
    for x in tokens: stream.step(x)
    times.append((time.perf_counter() - t) / n * 1e6)
print(statistics.median(times))
`;

const [dir, steps = '2000'] = process.argv.slice(2);
const python = process.env.PYTHON ?? 'python';
const here = new URL('.', import.meta.url).pathname;
const cpu = execFileSync('lscpu', { encoding: 'utf8' }).match(/Model name:\s*(.*)/)[1];
const rows = [];
const server = await serveStatic();
const [context, close] = await launch();
mkdirSync(join(here, '.models'), { recursive: true });
for (const arch of ['cell', 'stacked', 'gru', 'lstm']) {
  const file = join(dir, `${arch}.onnx`);
  const node = JSON.parse(execFileSync('node', [join(here, 'node.mjs'), file, steps], { encoding: 'utf8' }));
  const py = Number(
    execFileSync(python, ['-c', PYTHON_STEP, file, steps], { encoding: 'utf8' }).trim(),
  );
  copyFileSync(file, join(here, '.models', `${arch}.onnx`));
  const page = await context.newPage();
  await page.goto(`${server.url}/bench/bench.html?model=.models/${arch}.onnx&steps=${steps}`);
  const web = await page.waitForFunction(() => window.result, null, { timeout: 600_000 }).then((h) => h.jsonValue());
  await page.close();
  rows.push({ arch, python_us: py, node, web });
}
await close();
await server.close();
console.log(JSON.stringify({ cpu, steps: Number(steps), rows }, null, 1));
