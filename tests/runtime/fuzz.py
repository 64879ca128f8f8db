"""Mutated model files and saved states through the runtime: the fuzz test's worker.

Run as a script (in a subprocess, so that a crash or a hang fails the test instead of
killing it):

    python fuzz.py MODEL.onnx OUT_DIR SEED N_MODELS N_STATES

Writes N_MODELS mutants of MODEL.onnx (bit flips, truncations, metadata value
mutations, invalid UTF-8, changed graph nodes), puts each through `rnn-export inspect`
(CliRunner) and open_model + feed + step, then N_STATES mutants of a saved stream through restore().
Prints one JSON object: {"models": {outcome: count}, "states": {outcome: count},
"problems": [...]}, where a problem is anything but success or a typed error with a
message (and, for restore, a stream changed by a refused restore).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

DEEP = "[" * 100_000 + "]" * 100_000
SPECIALS = {
    '"__deep__"': DEEP,
    '"__digits__"': "9" * 5001,
    '"__surrogate__"': '"\\ud800"',
    '"__nan__"': "NaN",
}
REPLACEMENTS = [
    -1,
    0,
    1,
    2**31,
    2**63,
    10**30,
    -(10**30),
    1.5,
    None,
    True,
    "",
    "B",
    "h0",
    "x" * 300,
    [],
    {},
    [1, 2],
    {"name": "h0"},
    "__deep__",
    "__digits__",
    "__surrogate__",
    "__nan__",
]


def _nodes(value, out):
    """(container, key) of every node below value."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in list(items):
        out.append((value, key))
        if isinstance(child, (dict, list)):
            _nodes(child, out)
    return out


def mutate_json(text: str, rng) -> str:
    """The JSON text with one node replaced, deleted or the whole value replaced."""
    value = json.loads(text)
    nodes = _nodes(value, []) if isinstance(value, (dict, list)) else []
    replacement = REPLACEMENTS[rng.integers(len(REPLACEMENTS))]
    if not nodes or rng.random() < 0.1:
        value = replacement
    else:
        container, key = nodes[rng.integers(len(nodes))]
        if isinstance(container, dict) and rng.random() < 0.25:
            del container[key]
        else:
            container[key] = replacement
    out = json.dumps(value, ensure_ascii=False)
    for marker, raw in SPECIALS.items():
        out = out.replace(marker, raw)
    if rng.random() < 0.05:
        out = out[: rng.integers(len(out) + 1)]  # truncated: not JSON
    return out


def _graph_nodes(graph, out):
    for node in graph.node:
        out.append(node)
        for attr in node.attribute:
            if attr.HasField("g"):
                _graph_nodes(attr.g, out)
    return out


def mutate_graph(proto, rng) -> bytes:
    """A node of the main graph (subgraphs included) with an input, its op or an int
    attribute changed."""
    copy = type(proto)()
    copy.CopyFrom(proto)
    nodes = _graph_nodes(copy.graph, [])
    node = nodes[rng.integers(len(nodes))]
    ints = [a for a in node.attribute if a.type == 2]  # AttributeProto.INT
    kind = rng.integers(3)
    if kind == 0 and node.input:
        node.input[rng.integers(len(node.input))] = ["h0", "tokens", "one", "nope", ""][
            rng.integers(5)
        ]
    elif kind == 1 and ints:
        ints[rng.integers(len(ints))].i = [-1, 0, 2, 2**31, -(2**62)][rng.integers(5)]
    else:
        node.op_type = ["Gemm", "Add", "Gather", "Loop", "Tanh", "Nope"][rng.integers(6)]
    return copy.SerializeToString()


def mutate_model(data: bytes, proto, rng) -> bytes:
    kind = rng.integers(5)
    if kind == 4:
        return mutate_graph(proto, rng)
    if kind == 0:  # bit flips
        raw = bytearray(data)
        for _ in range(rng.integers(1, 9)):
            i = rng.integers(len(raw))
            raw[i] ^= 1 << rng.integers(8)
        return bytes(raw)
    if kind == 1:  # truncation
        return data[: rng.integers(len(data))]
    if kind == 2:  # invalid UTF-8 inside the metadata
        start = data.index(b"rnn_export.")
        i = start + rng.integers(len(data) - start)
        return data[:i] + b"\xff" + data[i + 1 :]
    keys = [p.key for p in proto.metadata_props]
    key = keys[rng.integers(len(keys))]
    copy = type(proto)()
    copy.CopyFrom(proto)
    for p in copy.metadata_props:
        if p.key == key:
            p.value = mutate_json(p.value, rng)
    return copy.SerializeToString()


def mutate_state(blob: bytes, rng) -> bytes:
    kind = rng.integers(4)
    if kind == 0:
        raw = bytearray(blob)
        for _ in range(rng.integers(1, 5)):
            i = rng.integers(len(raw))
            raw[i] ^= 1 << rng.integers(8)
        return bytes(raw)
    if kind == 1:
        return blob[: rng.integers(len(blob))]
    if kind == 2:
        return blob + bytes(rng.integers(0, 256, size=rng.integers(1, 16), dtype=np.uint8))
    n = int.from_bytes(blob[12:16], "little")
    header = mutate_json(blob[16 : 16 + n].decode(), rng).encode("utf-8", "surrogatepass")
    return blob[:12] + len(header).to_bytes(4, "little") + header + blob[16 + n :]


def _describe(e: BaseException) -> str:
    return "".join(traceback.format_exception(e))[-1500:]


def fuzz_models(model_path: Path, out_dir: Path, rng, count: int, problems: list) -> Counter:
    import onnx
    from click.testing import CliRunner

    import rnn_runtime
    from rnn_export.cli import main

    typed = (rnn_runtime.ModelFileError, rnn_runtime.MetadataError)
    data = model_path.read_bytes()
    proto = onnx.load_from_string(data)
    outcomes: Counter = Counter()
    runner = CliRunner()
    for i in range(count):
        path = out_dir / f"mutant-{i}.onnx"
        path.write_bytes(mutate_model(data, proto, rng))
        result = runner.invoke(main, ["inspect", str(path)])
        if result.exit_code == 2:
            if not result.stderr.startswith("error: ") or len(result.stderr) < 12:
                problems.append(f"{path.name}: inspect exit 2 without a message: {result.stderr!r}")
        elif result.exit_code != 0 or not result.stdout:
            problems.append(
                f"{path.name}: inspect exit {result.exit_code}: {result.output[-500:]}"
                + (_describe(result.exception) if result.exception else "")
            )
        try:
            model = rnn_runtime.open_model(path)
        except typed as e:
            outcomes[f"refused: {type(e).__name__}"] += 1
            if not str(e) or str(path) not in str(e):
                problems.append(f"{path.name}: {type(e).__name__} without the path: {e!r}")
            if result.exit_code != 2:
                problems.append(f"{path.name}: open_model refused it, inspect did not")
            continue
        except Exception as e:  # noqa: BLE001 - any other error is what this test looks for
            problems.append(f"{path.name}: open_model raised {_describe(e)}")
            continue
        outcomes["opened"] += 1
        try:
            stream = model.stream()
            stream.feed("abcabcabc")
            stream.step("a")
            pool = model.pool()
            pool.join(), pool.join()
            pool.step([1, 2])
            pool.feed({pool.streams[0]: "ab", pool.streams[1]: "abcd"})
        except rnn_runtime.StreamError as e:
            outcomes["opened, a step refused"] += 1
            if not str(e):
                problems.append(f"{path.name}: StreamError without a message")
        except Exception as e:  # noqa: BLE001
            problems.append(f"{path.name}: opened, then streaming raised {_describe(e)}")
    return outcomes


def fuzz_states(model_path: Path, rng, count: int, problems: list) -> Counter:
    import rnn_runtime

    model = rnn_runtime.open_model(model_path)
    source = model.stream()
    source.feed("abcabc")
    blob = source.save()
    stream = model.stream()
    stream.feed("hello")
    good = stream.save()
    outcomes: Counter = Counter()
    for i in range(count):
        before = {k: v.tobytes() for k, v in stream.get_state().items()}
        prediction = stream.prediction.log_probs.tobytes()
        mutant = mutate_state(blob, rng)
        try:
            stream.restore(mutant)
        except rnn_runtime.StreamError as e:
            outcomes[f"refused: {type(e).__name__}"] += 1
            after = {k: v.tobytes() for k, v in stream.get_state().items()}
            if after != before or stream.prediction.log_probs.tobytes() != prediction:
                problems.append(f"state {i}: a refused restore changed the stream ({e})")
            if not str(e):
                problems.append(f"state {i}: {type(e).__name__} without a message")
            continue
        except Exception as e:  # noqa: BLE001
            problems.append(f"state {i}: restore raised {_describe(e)}")
            continue
        outcomes["restored"] += 1
        stream.restore(good)
    return outcomes


def main() -> None:
    model_path, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    seed, n_models, n_states = (int(x) for x in sys.argv[3:6])
    rng = np.random.default_rng(seed)
    problems: list = []
    models = fuzz_models(model_path, out_dir, rng, n_models, problems)
    states = fuzz_states(model_path, rng, n_states, problems)
    print(json.dumps({"models": models, "states": states, "problems": problems}))


if __name__ == "__main__":
    main()
