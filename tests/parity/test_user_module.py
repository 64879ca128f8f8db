"""verify against the user's own module, with models written the way their users write them.

The PyTorch tutorial's name classifiers, defined here as a user defines them (not the
toolkit's classes): `CharRNN` (nn.RNN over one-hot letters, `h2o`, LogSoftmax; a whole
sequence per call) and the classic `RNN` (i2h, h2h, h2o; one step per call). Their
state_dicts are folded by hand into the importable form (embedding = W_ih^T, W_ih = an
exact identity or permutation), imported, exported and verified:

- correct files pass, whatever exactly representable or sparse input weight the fold
  leaves (their small pre-activations expose the tanh kernel's absolute rounding);
- with the user's module given, a transposed tensor or the wrong nonlinearity fails by at
  least 10x its allowance;
- with labelled data given, labels imported in another order than the training's fail.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from rnn_export.cli import main
from rnn_export.data import folder_spec
from rnn_export.export import export_onnx
from rnn_export.importing import import_weights
from rnn_export.parity import ParityError, verify_parity
from rnn_export.parity.labels import best_assignment
from rnn_export.parity.module import ModuleSpec

pytestmark = pytest.mark.parity

CHARS = "abcdefghijkl"
V, H = len(CHARS), 12
# The user's training order (the tutorial's is its files' glob order): not sorted.
LABELS = ("zebra", "apple", "mango")
LETTERS = {"zebra": "abcd", "apple": "efgh", "mango": "ijkl"}  # each class's own letters
SHORT_STREAM = 300
MARGIN = 10.0  # a wrong import fails by at least this many times its allowance


class CharRNN(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.rnn = nn.RNN(input_size, hidden_size)
        self.h2o = nn.Linear(hidden_size, output_size)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, line_tensor):
        rnn_out, hidden = self.rnn(line_tensor)
        output = self.h2o(hidden[0])
        return self.softmax(output)


class RNN(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.hidden_size = hidden_size
        self.i2h = nn.Linear(input_size, hidden_size)
        self.h2h = nn.Linear(hidden_size, hidden_size)
        self.h2o = nn.Linear(hidden_size, output_size)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, input, hidden):
        hidden = torch.tanh(self.i2h(input) + self.h2h(hidden))
        output = self.softmax(self.h2o(hidden))
        return output, hidden

    def initHidden(self):
        return torch.zeros(1, self.hidden_size)


SOURCE = """
import torch
from torch import nn
"""


def _class_source(cls) -> str:
    import inspect

    return inspect.getsource(cls)


def line_tensor(line: str) -> torch.Tensor:
    """The tutorial's lineToTensor: (T, 1, V) one-hot letters."""
    t = torch.zeros(len(line), 1, V)
    for i, ch in enumerate(line):
        t[i][0][CHARS.find(ch)] = 1
    return t


def _names(rng: random.Random, label: str, n: int) -> list[str]:
    letters = LETTERS[label]
    return ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(n)]


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The user's files: their module file, the data folder (one .txt per label), a
    CharRNN trained by the tutorial's loop, a classic RNN with small random weights and
    the same with a sparse input weight."""
    root = tmp_path_factory.mktemp("user")
    (root / "models.py").write_text(
        SOURCE + "\n\n" + _class_source(CharRNN) + "\n\n" + _class_source(RNN), encoding="utf-8"
    )
    rng = random.Random(0)
    data = root / "names"
    data.mkdir()
    lines = {label: _names(rng, label, 40) for label in LABELS}
    for label, texts in lines.items():
        (data / f"{label}.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    (root / "vocab.json").write_text(json.dumps(list(CHARS)), encoding="utf-8")
    (root / "labels.json").write_text(json.dumps(LABELS), encoding="utf-8")
    (root / "labels_sorted.json").write_text(json.dumps(sorted(LABELS)), encoding="utf-8")

    torch.manual_seed(0)
    char_rnn = CharRNN(V, H, len(LABELS))
    optimizer = torch.optim.SGD(char_rnn.parameters(), lr=0.1)
    for _ in range(300):  # the tutorial's loop: one random name per step
        label = rng.choice(LABELS)
        loss = nn.NLLLoss()(
            char_rnn(line_tensor(rng.choice(lines[label]))), torch.tensor([LABELS.index(label)])
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save(char_rnn.state_dict(), root / "charrnn.pt")

    classic = RNN(V, H, len(LABELS))
    with torch.no_grad():
        for p in classic.parameters():
            p.mul_(0.2)  # small pre-activations: the tanh kernel's rounding shows
    torch.save(classic.state_dict(), root / "rnn.pt")
    with torch.no_grad():  # a user's sparse input weight: most entries zero
        classic.i2h.weight.mul_(torch.rand(H, V, generator=torch.Generator().manual_seed(2)) < 0.2)
    torch.save(classic.state_dict(), root / "rnn_sparse.pt")
    return root


def fold(sd: dict, fold_with: str, transpose_recurrent: bool = False) -> dict:
    """The user's state_dict in the importable form (embedding, rnn, fc), by hand.

    fold_with: "identity" (embedding = W_ih^T, W_ih = I) or "permutation" (the same
    through a permutation P: embedding = (P W_ih)^T, W_ih = P^T).
    """
    if "i2h.weight" in sd:  # the classic RNN: i2h and h2h are nn.RNN's ih and hh
        W, R, b_i, b_h = sd["i2h.weight"], sd["h2h.weight"], sd["i2h.bias"], sd["h2h.bias"]
    else:
        W, R = sd["rnn.weight_ih_l0"], sd["rnn.weight_hh_l0"]
        b_i, b_h = sd["rnn.bias_ih_l0"], sd["rnn.bias_hh_l0"]
    P = torch.eye(H)
    if fold_with == "permutation":
        P = P[torch.randperm(H, generator=torch.Generator().manual_seed(1))]
    return {
        "embedding.weight": (P @ W).T.contiguous(),
        "rnn.weight_ih_l0": P.T.contiguous(),
        "rnn.weight_hh_l0": (R.T if transpose_recurrent else R).contiguous(),
        "rnn.bias_ih_l0": b_i.clone(),
        "rnn.bias_hh_l0": b_h.clone(),
        "fc.weight": sd["h2o.weight"].clone(),
        "fc.bias": sd["h2o.bias"].clone(),
    }


def deploy(user, tmp_path, which: str, fold_with="identity", *, labels="labels.json", **kw):
    """Fold, import, convert: (the .onnx file, its RUN_DIR)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    sd = torch.load(user / f"{which}.pt", weights_only=True)
    torch.save(fold(sd, fold_with, kw.pop("transpose_recurrent", False)), tmp_path / "folded.pt")
    run_dir = import_weights(
        tmp_path / "folded.pt",
        "stacked",
        user / "vocab.json",
        user / labels,
        tmp_path / "run",
        **kw,
    ).run_dir
    return export_onnx(run_dir, tmp_path / "model.onnx"), run_dir


def module_spec(user, which: str) -> ModuleSpec:
    if which == "charrnn":
        return ModuleSpec(
            f"{user / 'models.py'}:CharRNN",
            user / "charrnn.pt",
            {"input_size": V, "hidden_size": H, "output_size": len(LABELS)},
            encoding="onehot",
        )
    return ModuleSpec(
        f"{user / 'models.py'}:RNN",
        user / f"{which}.pt",
        {"input_size": V, "hidden_size": H, "output_size": len(LABELS)},
        call="step",
        encoding="onehot",
    )


def _verdict(path, run_dir, **kwargs):
    try:
        return verify_parity(path, run_dir, stream_steps=SHORT_STREAM, **kwargs)
    except ParityError as e:
        return e.report


@pytest.mark.parametrize(
    "which, fold_with",
    [
        ("charrnn", "identity"),
        ("charrnn", "permutation"),
        ("rnn", "identity"),
        ("rnn_sparse", "identity"),
    ],
)
def test_a_correct_tutorial_import_passes_beside_the_users_module(user, tmp_path, which, fold_with):
    path, run_dir = deploy(user, tmp_path, which, fold_with)
    report = _verdict(path, run_dir, module=module_spec(user, which))
    assert report.passed, report.summary_line()
    mine = [c for c in report.cases if c.family == "user module"]
    assert mine and all(c.ratio < 1.0 for c in mine)
    # The user's float64 math and the RUN_DIR's reference are the same function: the file
    # sits as close to the one as to the other (far inside the allowance).
    assert max(c.ratio for c in mine) < 0.1, [c.ratio for c in mine]


@pytest.mark.parametrize(
    "which, wrong",
    [
        ("charrnn", {"transpose_recurrent": True}),
        ("rnn", {"transpose_recurrent": True}),
        ("charrnn", {"nonlinearity": "relu"}),
    ],
)
def test_a_wrong_import_fails_by_a_wide_margin_against_the_users_module(
    user, tmp_path, which, wrong
):
    path, run_dir = deploy(user, tmp_path, which, **wrong)
    # Without the user's module the file matches the RUN_DIR it was wrongly rebuilt into.
    assert _verdict(path, run_dir).passed
    report = _verdict(path, run_dir, module=module_spec(user, which))
    assert not report.passed
    mine = [c for c in report.cases if c.family == "user module"]
    assert min(c.ratio for c in mine) >= MARGIN, [c.ratio for c in mine]
    assert report.deciding().family == "user module"


def test_labels_in_another_order_fail_with_data(user, tmp_path):
    data = folder_spec(user / "names")
    path, run_dir = deploy(user, tmp_path / "right", "charrnn")
    right = _verdict(path, run_dir, data=data)
    assert right.passed, right.summary_line()
    (check,) = [c for c in right.cases if c.family == "labels"]
    assert "not judged" not in check.detail  # the trained model is informative
    right_as_filed, rows = map(int, check.detail.split(" right as filed")[0].split("/"))
    assert right_as_filed > 0.9 * rows, check.detail

    path, run_dir = deploy(user, tmp_path / "sorted", "charrnn", labels="labels_sorted.json")
    report = _verdict(path, run_dir, data=data)
    assert not report.passed
    (check,) = [c for c in report.cases if c.family == "labels"]
    assert check.error.startswith("labels out of order: ")
    assert "outputs match" in report.summary_line()
    assert report.deciding() is check
    # The numbers agree with the RUN_DIR: the labels alone are wrong.
    assert all(c.passed for c in report.cases if c.family != "labels")


def test_cli_verify_with_the_users_module(user, tmp_path):
    path, run_dir = deploy(user, tmp_path, "rnn", transpose_recurrent=True)
    args = ["verify", str(path), "--checkpoint", str(run_dir), "-q"]
    module = [
        "--module",
        f"{user / 'models.py'}:RNN",
        "--module-args",
        json.dumps({"input_size": V, "hidden_size": H, "output_size": len(LABELS)}),
        "--weights",
        str(user / "rnn.pt"),
        "--module-call",
        "step",
        "--module-input",
        "onehot",
    ]
    result = CliRunner().invoke(main, args + module)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("FAIL: worst cpu/user module:")


@pytest.mark.parametrize("transpose, code", [(False, 0), (True, 1)])
def test_cli_import_checks_the_run_dir_against_the_users_module(user, tmp_path, transpose, code):
    sd = torch.load(user / "charrnn.pt", weights_only=True)
    torch.save(fold(sd, "identity", transpose), tmp_path / "folded.pt")
    args = [
        "import",
        str(tmp_path / "folded.pt"),
        "--arch",
        "stacked",
        "--vocab",
        str(user / "vocab.json"),
        "--labels",
        str(user / "labels.json"),
        "--out",
        str(tmp_path / "run"),
        "--module",
        f"{user / 'models.py'}:CharRNN",
        "--module-args",
        json.dumps({"input_size": V, "hidden_size": H, "output_size": len(LABELS)}),
        "--weights",
        str(user / "charrnn.pt"),
        "--module-input",
        "onehot",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, result.output
    (line,) = [x for x in result.output.splitlines() if x.startswith("  module")]
    ratio = float(line.split(", ")[-1].split("x")[0].split(" ")[0])
    if transpose:
        assert line.startswith("  module   FAIL") and ratio >= MARGIN, line
        assert "does not compute what your module computes" in result.output
    else:
        # float64 against float64: the same function to float64 rounding
        assert line.startswith("  module   PASS") and ratio < 1e-6, line


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--module", "models.py:RNN"], "--module needs --weights"),
        (["--weights", "rnn.pt"], "go with --module"),
        (["--module", "models.py:Nope", "--weights", "rnn.pt"], "has no class Nope"),
        (["--module", "models.py", "--weights", "rnn.pt"], "expected FILE.py:CLASS"),
        (["--module", "broken.py:RNN", "--weights", "rnn.pt"], "cannot import broken.py"),
        (["--module", "models.py:RNN", "--weights", "rnn.pt", "--module-args", "[1]"], "JSON"),
        (
            [
                "--module",
                "models.py:RNN",
                "--weights",
                "charrnn.pt",
                "--module-args",
                '{"input_size": 12, "hidden_size": 12, "output_size": 3}',
            ],
            "not a state_dict of RNN",
        ),  # noqa: E501
    ],
)
def test_cli_module_usage_errors_exit_2_with_one_line(user, tmp_path, monkeypatch, extra, message):
    path, run_dir = deploy(user, tmp_path, "rnn")
    monkeypatch.chdir(user)
    (user / "broken.py").write_text("import no_such_module_here\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["verify", str(path), "--checkpoint", str(run_dir), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_best_assignment_is_the_best_permutation():
    import itertools

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5):
        gain = rng.integers(0, 20, size=(n, n))
        p = best_assignment(gain)
        best = max(sum(gain[q[j], j] for j in range(n)) for q in itertools.permutations(range(n)))
        assert sorted(p) == list(range(n))
        assert gain[p, np.arange(n)].sum() == best


class Spotter(nn.Module):
    """A user's GRU classifier: batch-first, token ids in, logits out, its own names."""

    def __init__(self, vocab, hidden, classes):
        super().__init__()
        self.emb = nn.Embedding(vocab, hidden)
        self.gru = nn.GRU(hidden, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):  # (B, T) -> (B, C) logits after the last step
        out, _ = self.gru(self.emb(x))
        return self.head(out[:, -1])


@pytest.mark.parametrize("transpose", [False, True])
def test_a_batch_first_gru_returning_logits(tmp_path, transpose):
    (tmp_path / "spotter.py").write_text(SOURCE + "\n\n" + _class_source(Spotter))
    torch.manual_seed(3)
    model = Spotter(V, H, len(LABELS))
    torch.save(model.state_dict(), tmp_path / "user.pt")
    sd = dict(model.state_dict())
    if transpose:
        # each gate's block transposed, as a hand-written loader might store it
        sd["gru.weight_hh_l1"] = torch.cat([b.T for b in sd["gru.weight_hh_l1"].chunk(3)])
    torch.save(sd, tmp_path / "saved.pt")
    (tmp_path / "vocab.json").write_text(json.dumps(list(CHARS)))
    (tmp_path / "labels.json").write_text(json.dumps(LABELS))
    run_dir = import_weights(
        tmp_path / "saved.pt",
        "gru",
        tmp_path / "vocab.json",
        tmp_path / "labels.json",
        tmp_path / "run",
        mapping={"emb.": "embedding.", "gru.": "rnn.", "head.": "fc."},
    ).run_dir
    path = export_onnx(run_dir, tmp_path / "model.onnx")
    spec = ModuleSpec(
        f"{tmp_path / 'spotter.py'}:Spotter",
        tmp_path / "user.pt",
        {"vocab": V, "hidden": H, "classes": len(LABELS)},
        batch_first=True,
        output="logits",
        encoding="tokens",
    )
    report = _verdict(path, run_dir, module=spec)
    mine = [c for c in report.cases if c.family == "user module"]
    if transpose:
        assert not report.passed and min(c.ratio for c in mine) >= MARGIN
    else:
        assert report.passed, report.summary_line()
        assert max(c.ratio for c in mine) < 0.1


def _predictions(rng, truth: np.ndarray, right: float) -> np.ndarray:
    """A classifier's top outputs: the true class with probability `right`, else random."""
    noise = rng.integers(0, 4, size=truth.shape)
    return np.where(rng.random(truth.shape) < right, truth, noise)


@pytest.mark.parametrize(
    "file_order, right, verdict",
    [
        (("a", "b", "c", "d"), 0.6, "pass"),
        (("b", "c", "d", "a"), 0.6, "fail"),  # every output one label off
        (("b", "a", "c", "d"), 0.6, "fail"),  # two labels swapped
        (("b", "c", "d", "a"), 0.0, "not judged"),  # random outputs: no order to see
    ],
)
def test_check_labels(file_order, right, verdict):
    from rnn_export.parity.labels import check_labels

    rng = np.random.default_rng(0)
    data_labels = ("a", "b", "c", "d")
    truth = rng.choice(4, size=2000, p=[0.55, 0.25, 0.15, 0.05])  # imbalanced, as names
    # The model was trained with the data's order: output k means data_labels[k]; the file
    # names output k file_order[k].
    outputs = _predictions(rng, truth, right)
    result = check_labels(file_order, data_labels, truth, outputs)
    if verdict == "fail":
        assert not result.passed and result.error.startswith("labels out of order: ")
    else:
        assert result.passed, result.error
        assert ("not judged" in result.detail) == (verdict == "not judged")


@pytest.mark.slow
def test_the_tutorial_charrnn_on_the_names_data(names_dir, tmp_path):
    """The tutorial's CharRNN trained on the names data (batches of names of one length,
    Adam), its labels in the tutorial's file order: imported with them sorted instead,
    verify --data fails on the label order; imported in its own order, it passes."""
    import string
    import unicodedata

    letters = string.ascii_letters + " .,;'"

    def ascii_of(s):  # the tutorial's unicodeToAscii
        return "".join(
            c
            for c in unicodedata.normalize("NFD", s)
            if unicodedata.category(c) != "Mn" and c in letters
        )

    files = sorted(names_dir.glob("*.txt"), key=lambda f: f.stat().st_size)  # not sorted by name
    labels = [f.stem for f in files]
    names = [
        (ascii_of(line), k)
        for k, f in enumerate(files)
        for line in f.read_text(encoding="utf-8").split("\n")
        if ascii_of(line)
    ]
    torch.manual_seed(0)
    model = CharRNN(len(letters), 64, len(labels))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    rng = random.Random(0)
    by_length: dict[int, list] = {}
    for name, k in names:
        by_length.setdefault(len(name), []).append((name, k))
    lengths = [n for n in by_length if len(by_length[n]) >= 32]
    for _ in range(400):
        batch = rng.sample(by_length[rng.choice(lengths)], 32)
        x = torch.zeros(len(batch[0][0]), len(batch), len(letters))
        for b, (name, _) in enumerate(batch):
            for t, ch in enumerate(name):
                x[t, b, letters.find(ch)] = 1
        loss = nn.NLLLoss()(model(x), torch.tensor([k for _, k in batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    hidden = 64
    folded = {
        "embedding.weight": sd["rnn.weight_ih_l0"].T.contiguous(),
        "rnn.weight_ih_l0": torch.eye(hidden),
        "rnn.weight_hh_l0": sd["rnn.weight_hh_l0"],
        "rnn.bias_ih_l0": sd["rnn.bias_ih_l0"],
        "rnn.bias_hh_l0": sd["rnn.bias_hh_l0"],
        "fc.weight": sd["h2o.weight"],
        "fc.bias": sd["h2o.bias"],
    }
    torch.save(folded, tmp_path / "folded.pt")
    (tmp_path / "vocab.json").write_text(json.dumps(list(letters)))
    data = folder_spec(names_dir)
    verdicts = {}
    for order, listed in (("trained", labels), ("sorted", sorted(labels))):
        (tmp_path / f"{order}.json").write_text(json.dumps(listed))
        run_dir = import_weights(
            tmp_path / "folded.pt",
            "stacked",
            tmp_path / "vocab.json",
            tmp_path / f"{order}.json",
            tmp_path / order,
        ).run_dir
        path = export_onnx(run_dir, tmp_path / f"{order}.onnx")
        report = _verdict(path, run_dir, data=data)
        (verdicts[order],) = [c for c in report.cases if c.family == "labels"]
        others = [c for c in report.cases if c.family != "labels"]
        assert all(c.passed for c in others), report.summary_line()
    assert verdicts["trained"].passed and "not judged" not in verdicts["trained"].detail
    assert not verdicts["sorted"].passed
    assert verdicts["sorted"].error.startswith("labels out of order: ")
