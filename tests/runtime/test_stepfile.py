"""A step file (`convert --step-only`) in the runtime: streams, feeds, pools, predict, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from reference import TEXT, close, ids, rewrite, torch_run

from rnn_runtime import MetadataError, open_model


@pytest.fixture(scope="module")
def step_file(exported, tmp_path_factory):
    """(torch model, path of its step file) for each arch, from the run dir export_tiny made."""
    from rnn_export.export import export_onnx

    model, path = exported
    out = tmp_path_factory.mktemp("stepfile") / f"{model.config.arch}.step.onnx"
    export_onnx(path.parent / f"run-{path.stem}", out, graph="step")
    return model, out


def test_step_file_metadata_says_it_is_the_step_model(step_file):
    model, path = step_file
    rt = open_model(path)
    meta = rt.metadata
    assert meta.is_step_file and meta.step.in_file
    assert rt.session is rt.step_session
    L = model.config.num_layers
    assert [i for i, _ in meta.step.states] == [f"h_{layer}" for layer in range(L)]
    assert meta.to_dict()["step"] == {
        "input": "token",
        "log_probs": "log_probs",
        "states": [{"input": f"h_{i}", "output": f"hn_{i}"} for i in range(L)],
        "in_file": True,
    }
    with pytest.raises(MetadataError, match="embeds no step model"):
        meta.step.model_bytes()


def test_step_file_streams_feeds_and_pools_match_pytorch(step_file):
    model, path = step_file
    rt = open_model(path)
    stream = rt.stream()
    for i, ch in enumerate(TEXT[:6]):
        close(stream.step(ch).log_probs, torch_run(model, ids(TEXT[: i + 1]))[0])
    close(stream.feed(TEXT[6:]).log_probs, torch_run(model, ids(TEXT))[0])
    close(stream.get_state()["h0"], torch_run(model, ids(TEXT))[1].numpy())
    pool = rt.pool()
    a, b = pool.join(), pool.join()
    batch = pool.feed({a: "abc", b: "j"})
    close(batch[0].log_probs, torch_run(model, ids("abc"))[0])
    close(batch[1].log_probs, torch_run(model, ids("j"))[0])
    batch = pool.step(["d", "e"])
    close(batch[0].log_probs, torch_run(model, ids("abcd"))[0])
    close(batch[1].log_probs, torch_run(model, ids("je"))[0])
    got = rt.predict(["abcj", "h", ""])
    close(got[0].log_probs, torch_run(model, ids("abcj"))[0])
    close(got[1].log_probs, torch_run(model, ids("h"))[0])
    assert got[2] is None


def test_step_file_and_main_file_agree(step_file, exported):
    _, path = step_file
    main, stepped = open_model(exported[1]), open_model(path)
    tokens = np.array([ids("abcdef"), ids("hg") + [0] * 4], dtype=np.int64)
    lengths = np.array([6, 2], dtype=np.int64)
    want = main.run(tokens, main.initial_state(2), lengths)
    got = stepped.run(tokens, stepped.initial_state(2), lengths)
    close(got[0], want[0])
    close(got[1]["h0"], want[1]["h0"])


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda step: step.update(in_file=1), "step.in_file true or false"),
        (lambda step: step.update(in_file=False), "step.sha256"),
        (lambda step: step.update(input="nope"), "inputs are"),
    ],
)
def test_bad_step_file_metadata_is_refused(step_file, tmp_path, change, match):
    _, path = step_file

    def edit(props, _proto):
        step = json.loads(props["rnn_export.step"])
        change(step)
        props["rnn_export.step"] = json.dumps(step)

    bad = rewrite(path, tmp_path / "bad.onnx", edit)
    with pytest.raises(MetadataError, match=match):
        open_model(bad)


def _more_classes(props, m):
    """model.num_classes and the labels say one more class than the graph has."""
    model = json.loads(props["rnn_export.model"])
    model["num_classes"] += 1
    props["rnn_export.model"] = json.dumps(model)
    props["rnn_export.labels"] = json.dumps([*json.loads(props["rnn_export.labels"]), "west"])


def _wider(props, m):
    model = json.loads(props["rnn_export.model"])
    model["hidden_size"] += 1
    props["rnn_export.model"] = json.dumps(model)


@pytest.mark.parametrize(
    "edit, message",
    [
        (_more_classes, r"promises 4 classes \(model.num_classes, 4 labels\); .*log_probs has 3$"),
        (_wider, r"promises hidden size 17; .*'s state 'hn_0' has 16 \(shape \('B', 16\)\)$"),
    ],
)
def test_a_step_file_whose_metadata_promises_other_sizes_is_refused(
    step_file, tmp_path, edit, message
):
    path = rewrite(step_file[1], tmp_path / "lying.step.onnx", edit)
    with pytest.raises(MetadataError, match=message) as info:
        open_model(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
