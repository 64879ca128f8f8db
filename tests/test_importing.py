"""import_weights and `rnn-export import`: the notes' own classes, trained with their own
loop, imported, converted, verified and deployed; every bad input with its message."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.autograd import Variable

from rnn_export.cli import main
from rnn_export.importing import ImportWeightsError, import_weights, read_state_dict

# The project's parity tolerance, float32 against PyTorch (tests/runtime/reference.py).
ATOL, RTOL = 1e-5, 1e-4
CHARS = "abcdefgh"


# --- the notes' two classes, as the notes write them ------------------------------------
# Fixed only where they do not run: the full-width colon after __init__'s arguments,
# torch.zero (-> torch.zeros), nn.LogSoftmax() without dim (-> dim=1, over the classes).


class RNN(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super(RNN, self).__init__()  # noqa: UP008 (as the notes write it)
        self.hidden_size = hidden_size
        # 一个embedding层
        self.embed = nn.Embedding(input_size, hidden_size)
        # 隐含层内相互连接,因为它需要输入上一层值和自身一层值
        self.i2h = nn.Linear(2 * hidden_size, hidden_size)
        # 隐含层到输出层的连接
        self.h2o = nn.Linear(hidden_size, hidden_size)
        # 最后一层softmax
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, input, hidden):
        # 先进行embedding层的计算
        x = self.embed(input)
        # 将输入和隐含层的输出耦合在一起（拼成一个长向量）
        combined = torch.cat((x, hidden), 1)
        # 把这个长向量喂给隐含层
        hidden = self.i2h(combined)
        # 从隐含层到输出层的运算
        output = self.h2o(hidden)
        # 最后经过softmax激活
        output = self.softmax(output)
        return output, hidden

    def initHidden(self):
        # 对隐含单元的初始化
        # 注意尺寸是：batch_size, hidden_size
        return Variable(torch.zeros(1, self.hidden_size))


class my_RNN(nn.Module):  # noqa: N801 (the notes' name)
    def __init__(self, input_size, hidden_size, output_size, num_layers=1):
        # 定义
        super(my_RNN, self).__init__()  # noqa: UP008
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        # 一个embedding层
        self.embedding = nn.Embedding(input_size, hidden_size)
        # pytorch的RNN层，注意它接受的是三维张量
        self.rnn = nn.RNN(hidden_size, hidden_size, num_layers, batch_first=True)
        # 输出全连接层
        self.fc = nn.Linear(hidden_size, output_size)
        # 最后的logsoftmax层
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, input, hidden):
        # 运算过程
        # 先进行嵌入，把数值转化为onehot向量，再把这个向量转化为嵌入向量
        x = self.embedding(input)
        # 从输入层到隐含层的计算
        # 注意x的尺寸为batch_size,len_of_seq,hidden_size
        output, hidden = self.rnn(x, hidden)
        # 从output中取出最后一个时间步的数值（因为output中包含了所有的时间步的结果）
        output = output[:, -1, :]
        # 此时得到的output层尺寸为二维：batch_size,hidden_size
        # 最后再接全连接层
        output = self.fc(output)
        # 最后再接一层softmax
        output = self.softmax(output)

        return output, hidden


# --- the task, the loops and the notes' way of running each model --------------------
# The label is the text's last letter: the cell's classes are its H = 8 outputs (the
# notes' h2o is (H, H)), one per letter; my_RNN's 4 classes pair the letters (a/e, ...).


def _texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(CHARS) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def _cell_run(model: RNN, ids: list[int]):
    hidden = model.initHidden()
    for i in ids:  # one character per call, as the notes drive it
        output, hidden = model(torch.tensor([i]), hidden)
    return output[0]


def _stacked_run(model: my_RNN, ids: list[int]):
    hidden = torch.zeros(model.num_layers, 1, model.hidden_size)
    return model(torch.tensor([ids]), hidden)[0][0]


def _train(model, run, ids, label, steps: int = 400, seed: int = 0):
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for text in _texts(seed, steps):  # one text per call
        loss = nn.functional.nll_loss(
            run(model, ids(text)).unsqueeze(0), torch.tensor([label(text)])
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


CELL = {
    "make": lambda: RNN(len(CHARS), len(CHARS), len(CHARS)),
    "run": _cell_run,
    "ids": lambda text: [CHARS.index(c) for c in text],  # a plain-list vocabulary: no unk
    "label": lambda text: CHARS.index(text[-1]),
    "vocab": list(CHARS),
    "labels": [f"ends-{c}" for c in CHARS],
}
STACKED = {
    "make": lambda: my_RNN(len(CHARS) + 1, 16, 4, num_layers=2),
    "run": _stacked_run,
    "ids": lambda text: [CHARS.index(c) + 1 for c in text],  # id 0: the unknown token
    "label": lambda text: CHARS.index(text[-1]) % 4,
    "vocab": {"tokens": ["<unk>", *CHARS], "unk_id": 0},
    "labels": ["ae", "bf", "cg", "dh"],
}


@pytest.fixture(scope="module", params=["cell", "stacked"])
def notes_model(request, tmp_path_factory):
    """(arch, spec, trained module, folder with weights.pt, vocab.json, labels file)."""
    arch = request.param
    spec = CELL if arch == "cell" else STACKED
    torch.manual_seed(1)
    model = _train(spec["make"](), spec["run"], spec["ids"], spec["label"])
    folder = tmp_path_factory.mktemp(f"notes-{arch}")
    state = model.state_dict()
    if arch == "stacked":  # as nn.DataParallel saves it: every name under "module."
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state, folder / "weights.pt")
    (folder / "vocab.json").write_text(json.dumps(spec["vocab"]), encoding="utf-8")
    if arch == "cell":
        (folder / "labels.json").write_text(json.dumps(spec["labels"]), encoding="utf-8")
    else:
        (folder / "labels.txt").write_text("\n".join(spec["labels"]) + "\n", encoding="utf-8")
    return arch, spec, model, folder


def _labels_file(folder):
    return folder / "labels.json" if (folder / "labels.json").exists() else folder / "labels.txt"


def test_notes_classes_import_convert_verify_and_deploy(notes_model, tmp_path):
    import rnn_runtime

    arch, spec, model, folder = notes_model
    runner = CliRunner()
    run_dir, onnx_path = tmp_path / "run", tmp_path / "model.onnx"
    args = ["import", str(folder / "weights.pt"), "--arch", arch, "--out", str(run_dir)]
    args += ["--vocab", str(folder / "vocab.json"), "--labels", str(_labels_file(folder))]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    expected = (
        "cell, L=1, H=8, identity, V=8, C=8"
        if arch == "cell"
        else ("stacked, L=2, H=16, tanh, V=9, C=4")
    )
    assert f"model    {expected}" in result.stdout
    train_json = json.loads((run_dir / "train.json").read_text())
    assert train_json["data"] is None
    imported = train_json["imported"]
    assert imported["source"] == str((folder / "weights.pt").resolve())
    assert imported["sha256"] == hashlib.sha256((folder / "weights.pt").read_bytes()).hexdigest()
    assert imported["prefix"] == ("module." if arch == "stacked" else "")

    result = runner.invoke(main, ["convert", str(run_dir), "--out", str(onnx_path)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["verify", str(onnx_path), "--checkpoint", str(run_dir), "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("PASS")

    held_out = _texts(12345, 200)
    deployed = rnn_runtime.open_model(onnx_path).predict(held_out)
    correct = 0
    with torch.no_grad():
        for text, prediction in zip(held_out, deployed, strict=True):
            want = spec["run"](model, spec["ids"](text)).numpy()
            assert prediction.label == spec["labels"][int(np.argmax(want))], text
            np.testing.assert_allclose(prediction.log_probs, want, atol=ATOL, rtol=RTOL)
            correct += prediction.label_id == spec["label"](text)
    assert correct / len(held_out) > 0.5  # trained: chance is 1/8 and 1/4


def test_verify_on_an_imported_run_uses_real_texts_with_data(notes_model, tmp_path):
    arch, spec, _, folder = notes_model
    run_dir, onnx_path = tmp_path / "run", tmp_path / "model.onnx"
    import_weights(
        folder / "weights.pt", arch, folder / "vocab.json", _labels_file(folder), run_dir
    )
    runner = CliRunner()
    assert runner.invoke(main, ["convert", str(run_dir), "--out", str(onnx_path)]).exit_code == 0
    data = tmp_path / "data"
    data.mkdir()
    texts = _texts(7, 120) + ["abz"]  # "z": outside a vocabulary without an unknown token
    for label in spec["labels"][:2]:
        (data / f"{label}.txt").write_text("\n".join(texts), encoding="utf-8")
    report = tmp_path / "report.json"
    base = ["verify", str(onnx_path), "--checkpoint", str(run_dir), "-q", "--report"]
    plain = runner.invoke(main, [*base, str(report)])
    assert plain.exit_code == 0, plain.output
    families = {c["family"] for c in json.loads(report.read_text())["cases"]}
    assert "validation" not in families  # no training data: generated tokens only
    real = runner.invoke(main, [*base, str(report), "--data", str(data)])
    assert real.exit_code == 0, real.output
    cases = [c for c in json.loads(report.read_text())["cases"] if c["family"] == "validation"]
    rows = sum(c["batch_size"] for c in cases)
    # The split of 2 x 121 texts keeps 24 of each for validation; a vocabulary without an
    # unknown token cannot read "abz", and leaves it out.
    assert rows in (48, 47, 46)
    if arch == "cell":
        assert rows < 48 or "abz" not in str(cases)


def test_an_imported_run_streams_benches_and_refuses_unknown_characters(tmp_path):
    torch.save(_cell_state(), tmp_path / "w.pt")
    (tmp_path / "v.json").write_text(json.dumps(list("abcde")))  # no unknown token
    (tmp_path / "l.json").write_text(json.dumps(["x", "y", "z"]))
    import_weights(
        tmp_path / "w.pt", "cell", tmp_path / "v.json", tmp_path / "l.json", tmp_path / "r"
    )
    onnx_path, runner = str(tmp_path / "m.onnx"), CliRunner()
    assert runner.invoke(main, ["convert", str(tmp_path / "r"), "--out", onnx_path]).exit_code == 0
    bench = runner.invoke(
        main, ["bench", onnx_path, "--checkpoint", str(tmp_path / "r"), "--quick"]
    )
    assert bench.exit_code == 0, bench.output
    for command in (["stream", onnx_path], ["predict", onnx_path, "--file", "-"]):
        result = runner.invoke(main, command, input="abc\nabz\n")
        assert result.exit_code == 2
        assert "warning" not in result.stderr
        assert "not in the model's vocabulary" in result.stderr
        assert "this model has no unknown token" in result.stderr


def test_evaluate_and_verify_data_on_an_imported_run(tmp_path):
    torch.save(_cell_state(), tmp_path / "w.pt")
    (tmp_path / "v.json").write_text(json.dumps(list("abcde")))  # no unknown token
    (tmp_path / "l.json").write_text(json.dumps(["x", "y", "z"]))
    run_dir = tmp_path / "r"
    import_weights(tmp_path / "w.pt", "cell", tmp_path / "v.json", tmp_path / "l.json", run_dir)
    onnx_path, runner = str(tmp_path / "m.onnx"), CliRunner()
    assert runner.invoke(main, ["convert", str(run_dir), "--out", onnx_path]).exit_code == 0
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.txt").write_text("abc\nabz\n")  # "abz" cannot be read: left out, counted
    (data / "y.txt").write_text("eed\n")
    result = runner.invoke(main, ["evaluate", onnx_path, "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert "of 2 texts); 1 texts skipped (characters outside the vocabulary)" in result.stdout
    result = runner.invoke(main, ["evaluate", onnx_path, "--checkpoint", str(run_dir)])
    assert result.exit_code == 2
    assert "an imported model has no validation split" in result.stderr
    missing = tmp_path / "missing"
    args = ["verify", onnx_path, "--checkpoint", str(run_dir), "--data", str(missing)]
    result = runner.invoke(main, args)
    assert result.exit_code == 2
    assert f"cannot rebuild the validation split of {missing}: {missing}: expected a folder" in (
        result.stderr
    )


def test_safetensors_and_a_given_prefix_and_map(notes_model, tmp_path):
    from safetensors.torch import save_file

    arch, spec, model, folder = notes_model
    state = {f"net.{k}".replace("net.fc.", "net.head."): v for k, v in model.state_dict().items()}
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    mapping = {"head.": "fc."} if arch == "stacked" else {}
    ckpt = import_weights(
        tmp_path / "w.safetensors",
        arch,
        folder / "vocab.json",
        _labels_file(folder),
        tmp_path / "run",
        prefix="net.",
        mapping=mapping,
    )
    assert ckpt.imported["format"] == "safetensors"
    for name, tensor in model.state_dict().items():
        assert torch.equal(ckpt.model.state_dict()[name], tensor)


# --- bad inputs ---------------------------------------------------------------------


def _cell_state(V=5, H=4, C=3):
    torch.manual_seed(0)
    return {
        "embed.weight": torch.randn(V, H),
        "i2h.weight": torch.randn(H, 2 * H) * 0.1,  # a contraction: the identity cell stays finite
        "i2h.bias": torch.randn(H),
        "h2o.weight": torch.randn(C, H),
        "h2o.bias": torch.randn(C),
    }


class _Custom:
    pass


def _edit(state, **changes):
    state = dict(state)
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del state[key]
        else:
            state[key] = value
    return state


BAD = [
    ("module", lambda p: torch.save(nn.Linear(2, 2), p), "refused: it needs the global torch.nn"),
    (
        "custom",
        lambda p: torch.save({"x": _Custom()}, p),
        r"refused: it needs the global .*_Custom",
    ),
    ("tensor", lambda p: torch.save(torch.zeros(2), p), "expected a state_dict .*holds a Tensor"),
    ("entry", lambda p: torch.save({"a": 3}, p), r"entry 'a' holds a int"),
    ("garbage", lambda p: p.write_bytes(b"not a pickle"), "not a PyTorch weights file"),
    (
        "missing",
        lambda p: torch.save(_edit(_cell_state(), i2h__bias=None), p),
        r"do not match --arch cell .*missing \['i2h.bias'\], unexpected \[\]",
    ),
    (
        "extra",
        lambda p: torch.save(_edit(_cell_state(), extra=torch.zeros(1)), p),
        r"missing \[\], unexpected \['extra'\]; rename with --map",
    ),
    (
        "shape",
        lambda p: torch.save(_edit(_cell_state(), i2h__weight=torch.zeros(4, 7)), p),
        r"the embedding has shape \(5, 4\), so it gives E = 4 values a step; layer 0's input "
        r"weight takes X = 3 \(from i2h.weight's columns less H\): E must equal",
    ),
    (
        "dtype",
        lambda p: torch.save(_edit(_cell_state(), h2o__bias=torch.zeros(3, dtype=torch.int64)), p),
        r"tensor 'h2o.bias' has dtype torch.int64; expected floating-point",
    ),
    (
        "nan",
        lambda p: torch.save(_edit(_cell_state(), i2h__bias=torch.full((4,), float("nan"))), p),
        "tensor 'i2h.bias' holds NaN or infinity",
    ),
    (
        "arch",
        lambda p: torch.save(
            {"embedding.weight": torch.zeros(5, 4), "fc.weight": torch.zeros(3, 4)}, p
        ),
        r"--arch cell expects i2h.weight \(H, X \+ H\): the notes' cell, .* i2h.weight is "
        r"missing; the file has embedding.weight \(5, 4\), h2o.weight \(3, 4\)",
    ),
]


class _Touch:
    """A pickle that creates a file when loaded unsafely."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_pickle_that_runs_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"embed.weight": torch.zeros(2, 2), "x": _Touch(marker)}, tmp_path / "w.pt")
    with pytest.raises(
        ImportWeightsError, match=r"refused: it needs the global (io|builtins)\.open"
    ):
        import_weights(tmp_path / "w.pt", "cell", ["a", "b"], ["x", "y"], tmp_path / "o")
    assert not marker.exists()


class _System:
    """A pickle that would run a shell command when loaded unsafely."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_a_pickle_that_would_call_os_system_is_refused_in_one_line(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"embed.weight": torch.zeros(2, 2), "x": _System(marker)}, tmp_path / "w.pt")
    with pytest.raises(ImportWeightsError) as info:
        read_state_dict(tmp_path / "w.pt")
    message = str(info.value)
    assert re.fullmatch(
        r"\S+w\.pt: refused: it needs the global (posix|nt|os)\.system: the file needs code "
        r"to load .*, so nothing in it ran; save the weights alone: .*",
        message,
    ), message
    assert "\n" not in message and "weights_only=False" not in message
    assert not marker.exists()


def _sparse_csr(p):
    torch.save(_edit(_cell_state(), h2o__weight=torch.randn(3, 4).to_sparse_csr()), p)


def _f8_safetensors(p):
    from safetensors.torch import save_file

    save_file(_edit(_cell_state(), i2h__bias=torch.zeros(4).to(torch.float8_e5m2)), p)


KINDS = {
    "sparse COO": (
        lambda p: torch.save(_edit(_cell_state(), h2o__weight=torch.randn(3, 4).to_sparse()), p),
        r"tensor 'h2o.weight' is a sparse tensor \(layout torch.sparse_coo\)",
    ),
    "sparse CSR": (
        _sparse_csr,
        r"tensor 'h2o.weight' is a sparse tensor \(layout torch.sparse_csr\)",
    ),
    "meta": (
        lambda p: torch.save(_edit(_cell_state(), i2h__bias=torch.empty(4, device="meta")), p),
        r"tensor 'i2h.bias' is a tensor on the meta device, without data in the file",
    ),
    "float8": (
        lambda p: torch.save(
            _edit(_cell_state(), i2h__bias=torch.zeros(4).to(torch.float8_e4m3fn)), p
        ),
        r"tensor 'i2h.bias' is a tensor of dtype torch.float8_e4m3fn",
    ),
    "float8 safetensors": (
        _f8_safetensors,
        r"tensor 'i2h.bias' is a tensor of dtype torch.float8_e5m2",
    ),
    "nested": (
        lambda p: torch.save(
            _edit(_cell_state(), h2o__bias=torch.nested.nested_tensor([torch.zeros(2)] * 2)), p
        ),
        r"tensor 'h2o.bias' is a nested tensor",
    ),
}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_tensor_of_another_kind_is_refused_naming_it(tmp_path, kind):
    write, match = KINDS[kind]
    weights = tmp_path / ("w.safetensors" if "safetensors" in kind else "w.pt")
    write(weights)
    (tmp_path / "v.json").write_text(json.dumps(list("abcde")))
    (tmp_path / "l.json").write_text(json.dumps(["x", "y", "z"]))
    args = ["--arch", "cell", "--vocab", str(tmp_path / "v.json")]
    args += ["--labels", str(tmp_path / "l.json"), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(main, ["import", str(weights), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert re.search(
        match + r"; expected a dense tensor with its data on the CPU, of dtype float32",
        result.stderr,
    ), result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name, write, match", BAD, ids=[b[0] for b in BAD])
def test_bad_weights(tmp_path, name, write, match):
    weights = tmp_path / "w.pt"
    write(weights)
    (tmp_path / "v.json").write_text(json.dumps(list("abcde")))
    (tmp_path / "l.json").write_text(json.dumps(["x", "y", "z"]))
    with pytest.raises(ImportWeightsError, match=match):
        import_weights(weights, "cell", tmp_path / "v.json", tmp_path / "l.json", tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "vocab, labels, kwargs, match",
    [
        (
            list("abcd"),
            ["x", "y", "z"],
            {},
            r"v.json: has 4 tokens; .*'embedding.weight' has shape \(5, 4\), so the model reads "
            r"V = 5",
        ),
        (
            list("abcde"),
            ["x", "y"],
            {},
            r"l.json: has 2 labels; .*'h2o.weight' has shape \(3, 4\), so the model has C = 3",
        ),
        (
            {"tokens": ["a", "b"], "unk_id": 7},
            ["x"],
            {},
            "v.json: expected a vocabulary.*unk_id must be",
        ),
        (["ab", "c"], ["x"], {}, "v.json: expected a vocabulary.*must be one character; got 'ab'"),
        (list("abcde"), {"x": 1}, {}, "l.json: expected a JSON list of label strings"),
        (
            list("abcde"),
            ["x", "y", "z"],
            {"arch": "rnn"},
            r"unknown arch 'rnn'; expected one of \['cell', 'stacked', 'gru', 'lstm'\]",
        ),
        (
            list("abcde"),
            ["x", "y", "z"],
            {"nonlinearity": "relu6"},
            "nonlinearity for arch 'cell' must be one of",
        ),
        (
            list("abcde"),
            ["x", "y", "z"],
            {"prefix": "module."},
            r"--prefix 'module.': 5 names lack it",
        ),
        (
            list("abcde"),
            ["x", "y", "z"],
            {"mapping": {"emb.": "embed."}},
            r"--map emb.=embed.: no tensor is named 'emb.' or starts with it",
        ),
        (
            list("abcde"),
            ["x", "y", "z"],
            {"mapping": {"i2h.bias": "h2o.bias"}},
            "'i2h.bias' would become 'h2o.bias', which already exists",
        ),
    ],
)
def test_bad_vocab_labels_and_options(tmp_path, vocab, labels, kwargs, match):
    torch.save(_cell_state(), tmp_path / "w.pt")
    (tmp_path / "v.json").write_text(json.dumps(vocab))
    (tmp_path / "l.json").write_text(json.dumps(labels))
    kwargs = {"arch": "cell", **kwargs}
    with pytest.raises(ImportWeightsError, match=match):
        import_weights(
            tmp_path / "w.pt",
            vocab=tmp_path / "v.json",
            labels=tmp_path / "l.json",
            out=tmp_path / "o",
            **kwargs,
        )


BREAKS = ["a\tb", "a\rb", "a\x0cb", "a\x85b", "a\u2028b", "a\x00b", "a\x1bb"]


# In a .txt a newline ends the label: "a\nb" is two labels there.
@pytest.mark.parametrize(
    "form, label", [("json", "a\nb")] + [(form, x) for form in ("json", "txt") for x in BREAKS]
)
def test_a_label_with_a_control_character_or_line_break_is_refused(tmp_path, label, form):
    """A label is one field of one line in score's and stream's text outputs."""
    torch.save(_cell_state(), tmp_path / "w.pt")
    (tmp_path / "v.json").write_text(json.dumps(list("abcde")))
    labels = tmp_path / f"l.{form}"
    names = ["x", label, "z"]
    if form == "json":
        labels.write_text(json.dumps(names))
    else:
        labels.write_bytes("\n".join(names).encode("utf-8"))
    args = ["--arch", "cell", "--vocab", str(tmp_path / "v.json"), "--labels", str(labels)]
    result = CliRunner().invoke(
        main, ["import", str(tmp_path / "w.pt"), *args, "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2, result.output
    assert re.fullmatch(
        rf"error: \S+l\.{form}: a label must not hold a control character or line break "
        r"\(each label is one field of a line in the text outputs\); '.*' holds .* at "
        r"character 1\n",
        result.stderr,
    ), result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "args, match",
    [
        (["--arch", "rnn"], "Invalid value for '--arch'"),
        (["--map", "nonsense"], "expected OLD=NEW"),
        (["--labels", "MISSING"], "missing.json: expected a labels file .*; not found"),
        (["WEIGHTS=folder"], "expected a weights file .*; it is a folder"),
    ],
)
def test_cli_import_bad_input_exits_2_with_one_line(tmp_path, args, match):
    torch.save(_cell_state(), tmp_path / "w.pt")
    (tmp_path / "v.json").write_text(json.dumps(list("abcde")))
    (tmp_path / "l.json").write_text(json.dumps(["x", "y", "z"]))
    weights = str(tmp_path / "w.pt")
    if args == ["WEIGHTS=folder"]:
        weights, args = str(tmp_path), []
    base = {
        "--arch": "cell",
        "--vocab": str(tmp_path / "v.json"),
        "--labels": str(tmp_path / "l.json"),
    }
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1].replace("MISSING", str(tmp_path / "missing.json"))
    flat = [x for kv in base.items() for x in kv]
    result = CliRunner().invoke(main, ["import", weights, *flat, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert re.search(match, result.stderr), result.stderr
