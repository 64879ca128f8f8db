// The models and Python results the tests compare against: from the folder named by
// RNN_RUNTIME_JS_FIXTURES (the pytest wrapper makes it), else made once into
// test/.fixtures by the repository's tests/js_fixtures.py with the Python of $PYTHON (default "python"; it
// needs rnn_export importable). Run the test files one at a time (npm test does) so that
// only one of them makes it.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ARCHS = ['cell', 'stacked', 'gru', 'lstm'];
// The project's plain tolerance between two float32 runs of one model (crosscheck.py).
export const RTOL = 1e-4;
export const ATOL = 1e-5;

const here = dirname(fileURLToPath(import.meta.url));

function makeFixtures() {
  const out = join(here, '.fixtures');
  if (existsSync(out)) return out;
  const building = mkdtempSync(join(here, '.fixtures-'));
  const python = process.env.PYTHON ?? 'python';
  // The maker trains and exports with torch, so it lives with the Python tests, not in
  // the runtime's folder, which holds no torch.
  const maker = join(here, '..', '..', '..', 'tests', 'js_fixtures.py');
  const done = spawnSync(python, [maker, building], { stdio: 'inherit' });
  if (done.status !== 0) throw new Error(`${python} ${maker} failed (exit ${done.status})`);
  renameSync(building, out);
  return out;
}

export const FIXTURES = process.env.RNN_RUNTIME_JS_FIXTURES ?? makeFixtures();

export function fixture(name) {
  return join(FIXTURES, name);
}

export function hasFixture(name) {
  return existsSync(fixture(name));
}

export function json(name) {
  return JSON.parse(readFileSync(fixture(name), 'utf8'));
}

export function float32s(name) {
  const raw = readFileSync(fixture(name));
  return new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
}

export function float64s(name) {
  const raw = readFileSync(fixture(name));
  return new Float64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
}

export function bytes(name) {
  return new Uint8Array(readFileSync(fixture(name)));
}

/** The largest |a - b| / (atol + rtol |b|) over elements: <= 1 passes. */
export function closeness(a, b, rtol = RTOL, atol = ATOL) {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / (atol + rtol * Math.abs(b[i])));
  return worst;
}
