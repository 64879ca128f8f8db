// The demo page in a real headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core: nothing downloads a browser): open a model through the file picker,
// type a text key by key, and read the label and probabilities from the page; they must
// be the Python runtime's, as must the page's predictions on the names data (when present). Skips where Chromium is missing, unless
// RNN_RUNTIME_JS_BROWSER=required (the pytest wrapper, which skips itself instead).
// RNN_RUNTIME_JS_SCREENSHOT names where the page's screenshot goes.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { closeness, fixture, hasFixture, json } from './fixtures.js';
import { CHROMIUM, launch } from './chromium.js';
import { serveStatic } from './serve.js';

const required = process.env.RNN_RUNTIME_JS_BROWSER === 'required';
const skip = !existsSync(CHROMIUM) && !required && `no Chromium at ${CHROMIUM} (Debian's chromium package)`;

test('the demo page gives the Python runtime\'s label and probabilities', { skip, timeout: 120_000 }, async (t) => {
  const expected = json('demo.json');
  const server = await serveStatic();
  const [context, close] = await launch();
  try {
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${server.url}/demo/`);
    await page.waitForSelector('body[data-model="demo.onnx"]');
    await page.setInputFiles('#file', fixture('gru.onnx'));
    await page.waitForSelector('body[data-model="gru.onnx"]');
    await page.click('#text');
    await page.keyboard.type(expected.text, { delay: 15 });
    await page.waitForSelector(`body[data-consumed="${[...expected.text].length}"]`);
    const label = await page.textContent('#label');
    const rows = await page.$$eval('#probs .row', (els) => els.map((e) => [e.dataset.label, Number(e.dataset.p)]));
    const contract = await page.textContent('#contract');
    const shot = process.env.RNN_RUNTIME_JS_SCREENSHOT ?? join(tmpdir(), 'rnn-runtime-demo.png');
    await page.screenshot({ path: shot, fullPage: true });
    t.diagnostic(`label ${label}; probabilities ${rows.map(([l, p]) => `${l} ${p.toFixed(4)}`).join(', ')}; screenshot ${shot}`);
    assert.deepEqual(errors, []);
    assert.equal(label, expected.label);
    const want = expected.log_probs.map(Math.exp);
    assert.deepEqual(rows.map(([l]) => l), ['A', 'B', 'C', 'D']);
    assert.ok(closeness(rows.map(([, p]) => p), want) <= 1, `page ${rows}; Python ${want}`);
    assert.match(contract, /arch gru, hidden size 16/);
    if (hasFixture('names.json')) {
      // predict in the page (onnxruntime-web) on the names texts: Python's labels.
      const { texts, labels, log_probs: logProbs } = json('names.json');
      const model = readFileSync(fixture('gru.onnx')).toString('base64');
      const got = await page.evaluate(
        async ([bytes, batch]) => {
          const { open } = await import('../src/browser.js');
          const m = await open(Uint8Array.from(atob(bytes), (c) => c.charCodeAt(0)));
          return (await m.predict(batch)).map((p) => [p.label, [...p.logProbs]]);
        },
        [model, texts],
      );
      const same = got.filter(([label], i) => label === labels[i]).length;
      const worst = Math.max(...got.map(([, lp], i) => closeness(lp, logProbs[i])));
      t.diagnostic(`browser: labels equal on ${same} of ${texts.length} names; max closeness ratio ${worst.toPrecision(3)}`);
      assert.equal(same, texts.length);
      assert.ok(worst <= 1);
    }
  } finally {
    await close();
    await server.close();
  }
});
