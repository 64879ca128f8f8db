// The metadata_props of a serialized ONNX ModelProto, read from its bytes.
//
// onnxruntime-node and onnxruntime-web expose no model metadata, so the contract is read
// here from the protobuf wire format itself: varints and length-delimited fields, just
// ModelProto.metadata_props (field 14) -> StringStringEntryProto key (1) and value (2).
// A reader of these three fields is 80 lines with no dependency; a protobuf library
// would need the ONNX schema compiled in and would decode every tensor of the graph
// only to skip it. Every top-level field is walked, so a truncated file is refused here
// with one clear error, before onnxruntime sees it (as rnn_runtime/onnxfile.py does).

import { MetadataError, ModelFileError } from './errors.js';

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;
const METADATA_PROPS = 14;
const utf8 = new TextDecoder('utf-8', { fatal: true });

class Invalid extends Error {}

/** @returns {[number, number]} value (exact up to 2**53) and the next position */
function varint(data, pos) {
  let value = 0;
  let scale = 1;
  const end = Math.min(pos + 10, data.length);
  for (let i = pos; i < end; i++) {
    const byte = data[i];
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return [value, i + 1];
    scale *= 128;
  }
  throw new Invalid(`a varint at byte ${pos} is truncated or longer than 10 bytes`);
}

/** (field, wire, value) of one message; value: a number or a Uint8Array view. */
function* fields(data) {
  let pos = 0;
  const end = data.length;
  while (pos < end) {
    let tag;
    [tag, pos] = varint(data, pos);
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (field === 0) throw new Invalid(`field number 0 at byte ${pos}`);
    let value;
    if (wire === VARINT) {
      [value, pos] = varint(data, pos);
    } else if (wire === I64 || wire === I32) {
      const width = wire === I64 ? 8 : 4;
      if (pos + width > end) throw new Invalid(`field ${field} is truncated`);
      value = data.subarray(pos, pos + width);
      pos += width;
    } else if (wire === LEN) {
      let n;
      [n, pos] = varint(data, pos);
      if (n > end - pos) throw new Invalid(`field ${field} claims ${n} bytes; ${end - pos} are left`);
      value = data.subarray(pos, pos + n);
      pos += n;
    } else {
      throw new Invalid(`field ${field} has wire type ${wire} (not used by ONNX)`);
    }
    yield [field, wire, value];
  }
}

/**
 * The metadata_props of a serialized ModelProto.
 * @param {Uint8Array} data the model's bytes
 * @param {string} where how messages name it (a file name, "the embedded step model")
 * @returns {Map<string, string>}
 * @throws {ModelFileError} not a protobuf message (a truncated file, a length past the end)
 * @throws {MetadataError} a key or value that is not UTF-8, a key given twice
 */
export function readMetadataProps(data, where) {
  if (!(data instanceof Uint8Array)) {
    throw new ModelFileError(`${where}: a model is bytes (Uint8Array); got ${typeof data}`);
  }
  if (data.length === 0) throw new ModelFileError(`${where}: is empty; expected an .onnx file`);
  const props = new Map();
  try {
    for (const [field, wire, value] of fields(data)) {
      if (field !== METADATA_PROPS) continue;
      if (wire !== LEN) throw new Invalid(`field 14 (metadata_props) has wire type ${wire}`);
      const pair = { key: '', value: '' };
      for (const [f, w, raw] of fields(value)) {
        if ((f !== 1 && f !== 2) || w !== LEN) continue;
        const kind = f === 1 ? 'key' : 'value';
        try {
          pair[kind] = utf8.decode(raw);
        } catch {
          const what = kind === 'key' ? 'key' : `value of key ${JSON.stringify(pair.key)}`;
          throw new MetadataError(`${where}: metadata ${what} is not valid UTF-8`);
        }
      }
      if (props.has(pair.key)) {
        throw new MetadataError(`${where}: metadata key ${JSON.stringify(pair.key)} is given twice`);
      }
      props.set(pair.key, pair.value);
    }
  } catch (e) {
    if (e instanceof Invalid) {
      throw new ModelFileError(
        `${where}: cannot load it as a model: not a valid ONNX protobuf (${e.message}); ` +
          'a truncated or damaged file?',
      );
    }
    throw e;
  }
  return props;
}
