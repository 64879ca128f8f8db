// A saved stream in exactly the bytes of rnn_runtime/snapshot.py (its docstring is the
// format's specification): magic "RNNSTATE", uint32 version 1, uint32 header length, a
// UTF-8 JSON header written as Python's json.dumps(sort_keys=True) writes it, then the
// tensors as little-endian float32. A stream saved in Python restores here and back.

import { SnapshotError } from './errors.js';

const MAGIC = 'RNNSTATE';
const VERSION = 1;
const PREFIX_BYTES = 16;
export const MAX_HEADER = 2 ** 20;
export const MAX_TENSORS = 64;
export const MAX_RANK = 8;
export const MAX_DIM = 2 ** 31;

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** zlib.crc32 of bytes. */
export function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pyString(s) {
  let out = '"';
  for (const ch of s) {
    const code = ch.codePointAt(0);
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\b') out += '\\b';
    else if (ch === '\f') out += '\\f';
    else if (code >= 0x20 && code < 0x7f) out += ch;
    else {
      // ensure_ascii: every other character as \uXXXX (a surrogate pair above U+FFFF)
      for (let i = 0; i < ch.length; i++) out += '\\u' + ch.charCodeAt(i).toString(16).padStart(4, '0');
    }
  }
  return out + '"';
}

/** JSON text as Python's json.dumps(value, sort_keys=True) writes it (ints, strings, lists, objects). */
export function pythonJson(value) {
  if (typeof value === 'string') return pyString(value);
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new TypeError(`pythonJson writes integers only; got ${value}`);
    return String(value);
  }
  if (Array.isArray(value)) return '[' + value.map(pythonJson).join(', ') + ']';
  const keys = Object.keys(value).sort();
  return '{' + keys.map((k) => `${pyString(k)}: ${pythonJson(value[k])}`).join(', ') + '}';
}

/**
 * Serialise named float32 tensors of one stream of the model `meta`.
 * @param {import('./metadata.js').ModelMetadata} meta
 * @param {[string, Float32Array, number[]][]} tensors (name, values, shape), in order
 * @returns {Uint8Array}
 */
export function dumpSnapshot(meta, tensors) {
  const count = tensors.reduce((n, [, values]) => n + values.length, 0);
  const body = new Uint8Array(4 * count);
  const view = new DataView(body.buffer);
  let offset = 0;
  for (const [, values] of tensors) {
    for (let i = 0; i < values.length; i++, offset += 4) view.setFloat32(offset, values[i], true);
  }
  const header = new TextEncoder().encode(
    pythonJson({
      checkpoint_sha256: meta.checkpointSha256,
      arch: meta.arch,
      hidden_size: meta.hiddenSize,
      num_layers: meta.numLayers,
      tensors: tensors.map(([name, , shape]) => ({ name, shape, dtype: 'float32' })),
      payload_crc32: crc32(body),
    }),
  );
  const out = new Uint8Array(PREFIX_BYTES + header.length + body.length);
  out.set(new TextEncoder().encode(MAGIC), 0);
  const prefix = new DataView(out.buffer);
  prefix.setUint32(8, VERSION, true);
  prefix.setUint32(12, header.length, true);
  out.set(header, PREFIX_BYTES);
  out.set(body, PREFIX_BYTES + header.length);
  return out;
}

function invalid(what, got) {
  return new SnapshotError(
    `saved stream header is not valid: expected ${what}; got ${JSON.stringify(got)?.slice(0, 120)}`,
  );
}

function isInt(x, low, high) {
  return Number.isSafeInteger(x) && x >= low && x < high;
}

function readHeader(raw) {
  let header;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw));
  } catch (e) {
    throw new SnapshotError(`saved stream header is not valid: ${e.name}: ${e.message}`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw invalid('a JSON object', header === null ? 'null' : typeof header);
  }
  for (const key of ['tensors', 'payload_crc32', 'checkpoint_sha256']) {
    if (!Object.hasOwn(header, key)) throw new SnapshotError(`saved stream header is not valid: '${key}' is missing`);
  }
  const { checkpoint_sha256: sha, payload_crc32: crc, tensors: specs } = header;
  if (typeof sha !== 'string') throw invalid('checkpoint_sha256 to be a str', sha);
  if (!isInt(crc, 0, 2 ** 32)) throw invalid('payload_crc32 to be an int in [0, 2**32)', crc);
  if (!Array.isArray(specs) || specs.length > MAX_TENSORS) {
    throw invalid(`tensors to be a list of at most ${MAX_TENSORS}`, specs);
  }
  const tensors = [];
  for (const spec of specs) {
    if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw invalid('each tensor to be an object', spec);
    if (!Object.hasOwn(spec, 'name')) throw new SnapshotError("saved stream header is not valid: 'name'");
    const { name, shape } = spec;
    if (
      typeof name !== 'string' ||
      !Array.isArray(shape) ||
      shape.length > MAX_RANK ||
      !shape.every((d) => isInt(d, 0, MAX_DIM + 1))
    ) {
      throw new SnapshotError(
        'saved stream header is not valid: expected tensors with a str name and ' +
          `a shape of at most ${MAX_RANK} ints in [0, 2**31]; got name ${JSON.stringify(name)?.slice(0, 60)}, ` +
          `shape ${JSON.stringify(shape)?.slice(0, 60)}`,
      );
    }
    if (spec.dtype !== 'float32') {
      throw new SnapshotError(`saved tensor dtype ${JSON.stringify(spec.dtype)?.slice(0, 40)}; expected 'float32'`);
    }
    tensors.push([name, shape]);
  }
  const names = tensors.map(([n]) => n);
  if (new Set(names).size !== names.length) {
    const twice = [...new Set(names.filter((n, i) => names.indexOf(n) !== i))].sort();
    throw new SnapshotError(`saved stream header names tensor(s) ${JSON.stringify(twice)} more than once`);
  }
  return { sha, crc, tensors };
}

/**
 * Parse saved bytes; check format, integrity and that they come from the model `meta`.
 * @param {import('./metadata.js').ModelMetadata} meta
 * @param {Uint8Array} data
 * @returns {Map<string, {values: Float32Array, shape: number[]}>} in the saved order
 * @throws {SnapshotError} naming what was expected and what was got
 */
export function loadSnapshot(meta, data) {
  if (data instanceof ArrayBuffer) data = new Uint8Array(data);
  if (!(data instanceof Uint8Array)) {
    throw new SnapshotError(`a saved stream is bytes (Uint8Array); got ${data?.constructor?.name ?? typeof data}`);
  }
  const magic = new TextDecoder('latin1').decode(data.subarray(0, 8));
  if (data.length < PREFIX_BYTES || magic !== MAGIC) {
    throw new SnapshotError(`not a saved stream: expected magic b'${MAGIC}' at the start; got ${JSON.stringify(magic)}`);
  }
  const prefix = new DataView(data.buffer, data.byteOffset, PREFIX_BYTES);
  const version = prefix.getUint32(8, true);
  const n = prefix.getUint32(12, true);
  if (version !== VERSION) {
    throw new SnapshotError(`saved stream format version ${version}; this runtime reads version ${VERSION}`);
  }
  if (n > MAX_HEADER || PREFIX_BYTES + n > data.length) {
    throw new SnapshotError(
      `saved stream header claims ${n} bytes; only ${data.length - PREFIX_BYTES} follow (at most ${MAX_HEADER})`,
    );
  }
  const { sha, crc: wantCrc, tensors } = readHeader(data.subarray(PREFIX_BYTES, PREFIX_BYTES + n));
  if (sha !== meta.checkpointSha256) {
    throw new SnapshotError(
      `saved stream comes from the model with checkpoint sha256 ${sha.slice(0, 80)}; ` +
        `this model's is ${meta.checkpointSha256}`,
    );
  }
  const counts = tensors.map(([, shape]) => shape.reduce((a, d) => a * d, 1));
  const body = data.subarray(PREFIX_BYTES + n);
  const want = 4 * counts.reduce((a, c) => a + c, 0);
  if (body.length !== want) {
    throw new SnapshotError(`saved stream payload has ${body.length} bytes; its header describes ${want}`);
  }
  const crc = crc32(body);
  if (crc !== wantCrc) throw new SnapshotError(`saved stream payload is corrupt: crc32 ${crc}; header says ${wantCrc}`);
  const view = new DataView(body.buffer, body.byteOffset, body.length);
  const out = new Map();
  let offset = 0;
  tensors.forEach(([name, shape], t) => {
    const values = new Float32Array(counts[t]);
    for (let i = 0; i < values.length; i++, offset += 4) values[i] = view.getFloat32(offset, true);
    out.set(name, { values, shape });
  });
  return out;
}
