"""open_model: what it refuses (paths, files, metadata, weights, step models) and why."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
from reference import (
    CHARS,
    LABELS,
    TEXT,
    edit_json,
    export_tiny,
    rewrite,
    set_initializer,
    step_edit,
)

import rnn_runtime
from rnn_runtime import (
    MetadataError,
    ModelFileError,
    ProviderError,
    ThreadsError,
    open_model,
)
from rnn_runtime.session import MAX_THREADS

# --- paths of the wrong kind -------------------------------------------------------------


def _run_dir(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"{}")
    return folder


def _fifo(tmp_path):
    path = tmp_path / "pipe.onnx"
    os.mkfifo(path)
    return path


PATHS = {
    "missing": (lambda t: t / "missing.onnx", r"missing.onnx: no such model file \(expected a"),
    "folder": (lambda t: t, r": is a folder; expected a .onnx file made by `rnn-export convert`$"),
    "run dir": (
        _run_dir,
        r"run: is a folder; expected .*; it looks like a RUN_DIR \(it holds model.safetensors\): "
        r"make its model file with `rnn-export convert .*run --out model.onnx`",
    ),
    "fifo": (_fifo, r"pipe.onnx: is a named pipe \(FIFO\); expected a .onnx file"),
    "character device": (lambda t: os.devnull, r"null: is a character device; expected"),
    "empty": (
        lambda t: (t / "empty.onnx").write_bytes(b"") and None or t / "empty.onnx",
        r"empty.onnx: is an empty file; expected a .onnx file",
    ),
    "not onnx": (
        lambda t: (t / "junk.onnx").write_bytes(b"not a model") and None or t / "junk.onnx",
        r"junk.onnx: cannot load it as a model: not a valid ONNX protobuf",
    ),
}


@pytest.mark.parametrize("case", list(PATHS))
def test_open_says_what_a_wrong_path_is(tmp_path, case):
    make, message = PATHS[case]
    if case == "fifo" and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    with pytest.raises(ModelFileError, match=message):
        open_model(make(tmp_path))


def test_open_errors_for_providers_and_threads(exported):
    with pytest.raises(ProviderError, match=r"unknown execution provider 'NoSuch'; expected one"):
        open_model(exported[1], providers=["NoSuch"])
    with pytest.raises(ProviderError, match=r"\['CUDAExecutionProvider'\] not available"):
        open_model(exported[1], providers="cpu,cuda")
    for bad in (0, MAX_THREADS + 1, 2**31, 100_000, True, 1.5):
        with pytest.raises(
            ThreadsError, match=rf"threads must be an integer in \[1, {MAX_THREADS}\]"
        ):
            open_model(exported[1], threads=bad)


def test_open_sets_providers_and_threads(exported):
    threads = min(2, MAX_THREADS)
    model = open_model(exported[1], threads=threads, providers="cpu")
    assert model.providers == ("CPUExecutionProvider",)
    assert model.session.get_providers() == ["CPUExecutionProvider"]
    assert model.session.get_session_options().intra_op_num_threads == threads
    assert model.step_session.get_session_options().intra_op_num_threads == threads
    assert rnn_runtime.load_metadata(exported[1]).to_dict() == model.metadata.to_dict()


# --- metadata that is not what convert writes ---------------------------------------------


def _drop(key):
    def edit(props, m):
        del props[f"rnn_export.{key}"]

    return edit


def _raw(key, text):
    def edit(props, m):
        props[f"rnn_export.{key}"] = text

    return edit


def _set(key, field, value):
    return edit_json(key, lambda d: d.__setitem__(field, value))


def _no_metadata(props, m):
    props.clear()


def _state_field(field, value):
    def change(io):
        io["states"][0][field] = value

    return edit_json("io", change)


def _big_shape(io):
    io["states"][0]["shape"] = [s if s == "B" else 2**21 for s in io["states"][0]["shape"]]


def _too_many_values(io):
    io["states"][0]["shape"] = ["B", 2048, 4096]  # 2**23 values per stream


def _more_classes(props, m):
    """model.num_classes and the labels say 4; the graph and io.log_probs say 3."""
    edit_json("model", lambda d: d.__setitem__("num_classes", 4))(props, m)
    edit_json("labels", lambda labels: [*labels, "west"])(props, m)


OPEN_METADATA = {
    "no metadata": (_no_metadata, r"no rnn-export metadata \(was it made by `rnn-export convert`"),
    "schema 3": (_raw("schema", "3"), r"unknown metadata schema version 3; this runtime reads"),
    "wrong state name": (
        _state_field("input", "c0"),
        r"graph inputs are .*'h0'.*; the metadata promises .*'c0'",
    ),
    "wrong hidden": (
        edit_json(
            "io",
            lambda io: io["states"][0].__setitem__(
                "shape", [s if s == "B" else 99 for s in io["states"][0]["shape"]]
            ),
        ),
        r"graph input 'h0' has shape .*; the metadata promises .*99",
    ),
    "input not an object": (
        edit_json("io", lambda io: io.__setitem__("input", "tokens")),
        r"expected io.input to be an object; got 'tokens'",
    ),
    "nested 100,000 deep": (
        _raw("labels", "[" * 100_000 + "]" * 100_000),
        r"'rnn_export.labels' is not valid JSON text: RecursionError",
    ),
    "5001-digit number": (
        _raw("model", '{"vocab_size": ' + "7" * 5001 + "}"),
        r"'rnn_export.model' is not valid JSON text: ValueError: Exceeds the limit \(4300",
    ),
    "lone surrogate in a label": (
        _raw("labels", '["north", "\\ud800", "east"]'),
        r"'rnn_export.labels' is not valid JSON text: UnicodeEncodeError",
    ),
    "vocab_size 10**30": (
        _set("model", "vocab_size", 10**30),
        r"expected model.vocab_size in \[1, 1048576\]; got 1{1}0{30}",
    ),
    "hidden_size 10**30": (
        _set("model", "hidden_size", 10**30),
        r"expected model.hidden_size in \[1, 16384\]; got 10{30}",
    ),
    "hidden_size 100000": (
        _set("model", "hidden_size", 100_000),
        r"expected model.hidden_size in \[1, 16384\]; got 100000",
    ),
    "num_layers 10**6": (
        _set("model", "num_layers", 10**6),
        r"expected model.num_layers in \[1, 64\]; got 1000000",
    ),
    "num_classes 10**9": (
        _set("model", "num_classes", 10**9),
        r"expected model.num_classes in \[1, 65536\]",
    ),
    "shape dimension 2**21": (
        edit_json("io", _big_shape),
        r"expected io.states\[0\].shape of ints in \[1, 1048576\], 'B' or 'T'",
    ),
    "state of 2**23 values": (
        edit_json("io", _too_many_values),
        r"expected io.states\[0\].shape of at most 4194304 values",
    ),
    "shape of rank 9": (
        edit_json("io", lambda io: io["input"].__setitem__("shape", ["B"] * 9)),
        r"expected io.input.shape of rank <= 8",
    ),
    "17 states": (
        edit_json("io", lambda io: io.__setitem__("states", io["states"] * 17)),
        r"expected io.states to be a list of 1 to 16 states",
    ),
    "opset 10**6": (
        _set("provenance", "opset", 10**6),
        r"expected provenance.opset in \[1, 1000\]; got 1000000",
    ),
    "duplicate labels": (
        _raw("labels", '["north", "north", "east"]'),
        r"expected distinct labels; got \['north'\]",
    ),
    "a label with a tab": (
        _raw("labels", '["north", "so\\tuth", "east"]'),
        r"expected labels without a control character or line break; got \['so\\tuth'\]",
    ),
    "a label with U+2028": (
        _raw("labels", '["north", "south\\u2028", "east"]'),
        r"expected labels without a control character or line break; got \['south\\u2028'\]",
    ),
    "4 classes for a 3-class graph": (
        _more_classes,
        r"the metadata promises 4 classes \(model.num_classes, 4 labels\); the graph's "
        r"log_probs has 3$",
    ),
    "hidden size 99 for 16": (
        _set("model", "hidden_size", 99),
        r"the metadata promises hidden size 99; the graph's state 'hn' has 16 \(shape",
    ),
}


@pytest.mark.parametrize("case", list(OPEN_METADATA))
def test_open_refuses_metadata_we_did_not_write(exported, tmp_path, case):
    edit, message = OPEN_METADATA[case]
    path = rewrite(exported[1], tmp_path / "edited.onnx", edit)
    with pytest.raises(MetadataError, match=message) as info:
        open_model(path)
    assert str(path) in str(info.value)


def _serialized(exported) -> bytes:
    return exported[1].read_bytes()


def test_open_refuses_metadata_that_is_not_utf8(exported, tmp_path):
    data = _serialized(exported)
    assert data.count(b'"north"') == 1
    path = tmp_path / "bad-utf8.onnx"
    path.write_bytes(data.replace(b'"north"', b'"nor\xffh"'))
    with pytest.raises(
        MetadataError, match=r"metadata value of key 'rnn_export.labels' is not valid UTF-8"
    ):
        open_model(path)


def test_open_refuses_a_metadata_key_given_twice(exported, tmp_path):
    def twice(props, m):
        pass

    path = rewrite(exported[1], tmp_path / "twice.onnx", twice)
    import onnx

    m = onnx.load(str(path))
    entry = m.metadata_props.add()
    entry.key, entry.value = "rnn_export.labels", '["a", "b", "c"]'
    onnx.save(m, str(path))
    with pytest.raises(MetadataError, match=r"metadata key 'rnn_export.labels' is given twice"):
        open_model(path)


# --- tensors: external data and non-finite weights ---------------------------------------


def _externalize(graph, name: str, folder, file: str = "weights.bin") -> None:
    """Move initializer `name` of `graph` into an external file next to the model."""
    from onnx import TensorProto

    for init in graph.initializer:
        if init.name == name:
            (folder / file).write_bytes(init.raw_data)
            size = len(init.raw_data)
            init.ClearField("raw_data")
            init.data_location = TensorProto.EXTERNAL
            for key, value in (("location", file), ("offset", "0"), ("length", str(size))):
                entry = init.external_data.add()
                entry.key, entry.value = key, value
            return
    raise KeyError(name)


def _subgraph(m):
    """The first If branch of the main graph."""
    for node in m.graph.node:
        for attr in node.attribute:
            if attr.g.node:
                return attr.g
    raise AssertionError("no subgraph")


def test_open_refuses_external_data_in_the_main_graph(exported, tmp_path):
    """The external file is there (onnxruntime would load it); the runtime still refuses."""
    path = rewrite(
        exported[1],
        tmp_path / "external.onnx",
        lambda props, m: _externalize(m.graph, "out_bias", tmp_path),
    )
    with pytest.raises(ModelFileError, match=r"tensor 'out_bias' keeps its data in an external"):
        open_model(path)


def test_open_refuses_external_data_in_a_subgraph(exported, tmp_path):
    def edit(props, m):
        from onnx import numpy_helper

        branch = _subgraph(m)
        branch.initializer.append(numpy_helper.from_array(np.ones(4, np.float32), "spare"))
        _externalize(branch, "spare", tmp_path)

    path = rewrite(exported[1], tmp_path / "external-sub.onnx", edit)
    with pytest.raises(ModelFileError, match=r"tensor 'spare' keeps its data in an external file"):
        open_model(path)


def test_open_refuses_external_data_in_the_step_model(exported, tmp_path, monkeypatch):
    """From bytes, the location resolves against the current folder: put the file there."""
    monkeypatch.chdir(tmp_path)
    edit = step_edit(lambda proto: _externalize(proto.graph, "out_bias", tmp_path))
    path = rewrite(exported[1], tmp_path / "external-step.onnx", edit)
    with pytest.raises(
        ModelFileError, match=r"the embedded step model: tensor 'out_bias' keeps its data"
    ):
        open_model(path)
    assert open_model(path, step_model=False).step_session is None


def _poison(value):
    def change(x):
        x.reshape(-1)[1] = value
        return x

    return change


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_open_refuses_non_finite_weights(exported, tmp_path, value):
    poison = _poison(value)

    def both(props, m):
        set_initializer(m, "R0", poison)
        step_edit(lambda proto: set_initializer(proto, "R0", poison))(props, m)

    path = rewrite(exported[1], tmp_path / "nan.onnx", both)
    with pytest.raises(ModelFileError, match=r"tensor 'R0' holds 1 non-finite values"):
        open_model(path)
    with pytest.raises(ModelFileError, match=r"tensor 'R0' holds 1 non-finite"):
        open_model(path, step_model=False)  # the main graph's own weights


def test_open_refuses_non_finite_step_model_weights(exported, tmp_path):
    edit = step_edit(lambda proto: set_initializer(proto, "out_bias", _poison(np.nan)))
    path = rewrite(exported[1], tmp_path / "nan-step.onnx", edit)
    with pytest.raises(
        ModelFileError, match=r"the embedded step model: tensor 'out_bias' holds 1 non-finite"
    ):
        open_model(path)
    assert open_model(path, step_model=False).step_session is None


# --- the embedded step model ------------------------------------------------------------


def _nudge(name, delta):
    def change(x):
        return x + np.float32(delta)

    return lambda proto: set_initializer(proto, name, change)


def _damage_bytes(props, m):
    step = json.loads(props["rnn_export.step"])
    data = step["onnx_base64"]
    step["onnx_base64"] = ("B" if data[100] != "B" else "C").join((data[:100], data[101:]))
    props["rnn_export.step"] = json.dumps(step)


def _rename_token_input(proto):
    proto.graph.input[0].name = "tok"
    proto.graph.node[0].input[1] = "tok"


STEP_MODELS = [
    (_damage_bytes, r"embedded step model has sha256 .*the file is damaged", True),
    (
        edit_json("step", lambda s: s.__setitem__("onnx_base64", "%%%" + s["onnx_base64"])),
        r"step.onnx_base64 is not valid base64",
        True,
    ),
    (
        step_edit(_nudge("R0", 1e-2)),
        r"step model disagrees with the main graph on one step of token id \d+ .*: log_probs",
        True,
    ),
    (step_edit(_rename_token_input), r"step model's inputs are .*'tok'", True),
    # Metadata that contradicts itself is refused whatever is asked for.
    (
        edit_json("step", lambda s: s.__setitem__("states", [])),
        r"expected \d step states \(one per layer and state\); got 0",
        False,
    ),
]


@pytest.mark.parametrize("edit, message, bypass", STEP_MODELS)
def test_open_rejects_a_bad_step_model(exported, tmp_path, edit, message, bypass):
    path = rewrite(exported[1], tmp_path / "bad-step.onnx", edit)
    with pytest.raises(MetadataError, match=message) as info:
        open_model(path)
    assert str(path) in str(info.value)
    if bypass:
        # Opting out of the step model opens the main graph, which is intact.
        assert open_model(path, step_model=False).step_session is None
    else:
        with pytest.raises(MetadataError, match=message):
            open_model(path, step_model=False)


@pytest.mark.parametrize("token", [1, 5, 7])
def test_the_step_model_is_checked_on_every_token(exported, tmp_path, token):
    """One row of the main graph's table altered (not 0 or V-1): refused, naming the token.

    Opened anyway (step_model=False against the default), steps and feeds would disagree."""

    def change(table):
        table[token] += np.float32(0.5)
        return table

    path = rewrite(
        exported[1], tmp_path / "row.onnx", lambda p, m: set_initializer(m, "table", change)
    )
    char = open_model(exported[1]).metadata.vocab[token]
    with pytest.raises(MetadataError, match=rf"token id {token} \({char!r}\): log_probs max"):
        open_model(path)
    main_only = open_model(path, step_model=False).stream()
    good = open_model(exported[1]).stream()
    text = char * 3 + TEXT[:3]
    assert not np.allclose(main_only.feed(text).log_probs, good.feed(text).log_probs, atol=1e-3)


def test_a_model_copied_into_a_folder_named_like_a_run_dir_still_opens(exported, tmp_path):
    """The RUN_DIR hint is about folders; a .onnx file beside model.safetensors opens."""
    folder = _run_dir(tmp_path)
    shutil.copy(exported[1], folder / "m.onnx")
    assert open_model(folder / "m.onnx").metadata.arch == exported[0].config.arch


def test_an_embedded_step_model_of_another_class_count_is_refused(exported, tmp_path):
    """The step model of a 4-class model in the file of a 3-class one (checksum right)."""
    import onnx

    from rnn_export.models import build_model

    model, path = exported
    config = model.config
    other = build_model(type(config)(**{**config.to_dict(), "labels": (*LABELS, "west")}))
    vocab = ["<unk>", *CHARS]
    (tmp_path / "other").mkdir()
    other_path = export_tiny(other.eval(), vocab, tmp_path / "other" / "four.onnx")
    four = {p.key: p.value for p in onnx.load(str(other_path)).metadata_props}

    def swap(props, m):
        props["rnn_export.step"] = four["rnn_export.step"]

    lying = rewrite(path, tmp_path / "swapped.onnx", swap)
    with pytest.raises(MetadataError) as info:
        open_model(lying)
    assert re.fullmatch(
        rf"{re.escape(str(lying))}: the metadata promises 3 classes \(model.num_classes, 3 "
        r"labels\); the embedded step model's log_probs has 4",
        str(info.value),
    ), info.value
