// The demo page: open a model, then after every keystroke step the stream by the new
// characters (or, when the text was edited elsewhere than at its end, reset and feed it
// again) and show the label and the class probabilities. The state lives in the page.

import { open, ort } from '../src/browser.js';

ort.env.wasm.wasmPaths = new URL('../node_modules/onnxruntime-web/dist/', import.meta.url).href;
ort.env.wasm.numThreads = 1;

const $ = (id) => document.getElementById(id);
let model = null;
let stream = null;
let shown = ''; // the text the stream's state has consumed
let busy = Promise.resolve();

function showContract(m) {
  const meta = m.metadata;
  $('contract').textContent = [
    `arch ${meta.arch}, hidden size ${meta.hiddenSize}, layers ${meta.numLayers}, ${meta.nonlinearity}`,
    `vocabulary: ${meta.vocabSize} tokens (unknown id ${meta.unkId})`,
    `labels: ${meta.labels.join(', ')}`,
    `states: ${meta.states.map((s) => `${s.input} (${s.shape.join(', ')})`).join(', ')}`,
    `schema ${meta.schemaVersion}, opset ${meta.provenance.opset}, checkpoint ${meta.checkpointSha256.slice(0, 12)}...`,
  ].join('\n');
}

function showPrediction(p) {
  $('label').textContent = p === null ? '-' : p.label;
  $('steps').textContent = `(${[...shown].length} characters)`;
  const probs = p === null ? model.labels.map(() => 0) : [...p.probabilities];
  const top = p === null ? -1 : p.labelId;
  $('probs').replaceChildren(
    ...model.labels.map((label, i) => {
      const row = document.createElement('div');
      row.className = i === top ? 'row top' : 'row';
      row.dataset.label = label;
      row.dataset.p = String(probs[i]);
      row.innerHTML = `<span></span><div class="bar"><div></div></div><span class="p"></span>`;
      row.children[0].textContent = label;
      row.children[1].firstChild.style.width = `${(100 * probs[i]).toFixed(1)}%`;
      row.children[2].textContent = probs[i].toFixed(3);
      return row;
    }),
  );
}

async function update() {
  const text = $('text').value;
  try {
    if (text.startsWith(shown)) {
      for (const ch of text.slice(shown.length)) {
        await stream.step(ch);
        shown += ch;
      }
    } else {
      stream.reset();
      shown = '';
      await stream.feed(text);
      shown = text;
    }
    $('error').textContent = '';
  } catch (e) {
    $('error').textContent = `${e.name}: ${e.message}`;
  }
  showPrediction(stream.prediction);
  $('status').textContent = `ready: ${model.name}`;
  document.body.dataset.consumed = String([...shown].length);
}

async function load(source, name) {
  $('status').textContent = `opening ${name} ...`;
  try {
    model = await open(source, { name });
  } catch (e) {
    $('error').textContent = `${e.name}: ${e.message}`;
    $('status').textContent = 'no model';
    return;
  }
  stream = model.stream();
  shown = '';
  $('error').textContent = '';
  showContract(model);
  await update();
  document.body.dataset.model = name;
}

$('text').addEventListener('input', () => (busy = busy.then(update)));
$('file').addEventListener('change', () => {
  const file = $('file').files[0];
  if (file) busy = busy.then(() => load(file, file.name));
});
async function bundled() {
  const response = await fetch(new URL('demo.onnx', import.meta.url));
  await load(new Uint8Array(await response.arrayBuffer()), 'demo.onnx');
}
$('bundled').addEventListener('click', () => (busy = busy.then(bundled)));
busy = busy.then(bundled);
