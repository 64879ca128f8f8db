"""Models written, trained and saved the way users write them, deployed with documented
flags only: import, convert, verify PASS, and the deployed file gives every held-out
label the user's own module gives, probabilities within 1e-5.

    CharRNN        the PyTorch tutorial's name classifier: nn.RNN over one-hot letters,
                   h2o, LogSoftmax (`import --arch stacked`, no embedding: one-hot)
    RNN            the tutorial's classic cell: i2h on the letter, h2h on the state, h2o
                   (`import --arch cell`: nn.RNN with one layer)
    KeywordGRU     a 2-layer GRU over 40-dim float frames with a Linear head
                   (`import --arch gru --input features`, with its normalization)
    NameLSTM       Embedding(57, E) -> LSTM(H) -> Linear, E != H (`import --arch lstm`)

The names models train on the names data when it is present (../shared/data/names) and
on generated names otherwise; each loop is the user's own and short (a few hundred
steps): the weights are those of a real training, not of the toolkit's classes.
"""

from __future__ import annotations

import json
import string
import unicodedata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import rnn_runtime
from rnn_export.cli import main
from rnn_runtime.text import prepare

# The real data lives next to the repository, never inside it (see ../shared/data/README.md).
NAMES_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "names"

ALLOWED = string.ascii_letters + " .,;'" + "_"  # the tutorial's letters, "_" for unknown
PROB_ATOL = 1e-5


def unicode_to_ascii(s: str) -> str:
    """The tutorial's unicodeToAscii."""
    return "".join(
        c
        for c in unicodedata.normalize("NFD", s)
        if unicodedata.category(c) != "Mn" and c in ALLOWED
    )


def letter_index(letter: str) -> int:
    return ALLOWED.find("_") if letter not in ALLOWED else ALLOWED.find(letter)


def line_tensor(line: str) -> torch.Tensor:
    """The tutorial's lineToTensor: (T, 1, n_letters) one-hot."""
    tensor = torch.zeros(len(line), 1, len(ALLOWED))
    for i, letter in enumerate(line):
        tensor[i][0][letter_index(letter)] = 1
    return tensor


class CharRNN(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.rnn = nn.RNN(input_size, hidden_size)
        self.h2o = nn.Linear(hidden_size, output_size)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, line_tensor):
        rnn_out, hidden = self.rnn(line_tensor)
        output = self.h2o(hidden[0])
        output = self.softmax(output)
        return output


class RNN(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.hidden_size = hidden_size
        self.i2h = nn.Linear(input_size, hidden_size)
        self.h2h = nn.Linear(hidden_size, hidden_size)
        self.h2o = nn.Linear(hidden_size, output_size)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, input, hidden):
        hidden = F.tanh(self.i2h(input) + self.h2h(hidden))
        output = self.h2o(hidden)
        output = self.softmax(output)
        return output, hidden

    def initHidden(self):
        return torch.zeros(1, self.hidden_size)


class NameLSTM(nn.Module):
    def __init__(self, vocab, embed, hidden, classes):
        super().__init__()
        self.emb = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, classes)

    def forward(self, ids):
        _, (h, _) = self.lstm(self.emb(ids))
        return self.out(h[-1])  # logits


class KeywordGRU(nn.Module):
    def __init__(self, features, hidden, classes):
        super().__init__()
        self.gru = nn.GRU(features, hidden, num_layers=2, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, frames):
        _, h = self.gru(frames)
        return self.fc(h[-1])  # logits


# --- data ---------------------------------------------------------------------------------


def _names(seed: int = 0, raw: bool = False):
    """(train, held-out, labels): the names data (ASCII as the tutorial loads it; raw:
    as the files have them, accents included) when present, else generated names of 4
    made-up languages."""
    rng = np.random.default_rng(seed)
    if NAMES_DIR.is_dir():
        labels = sorted(p.stem for p in NAMES_DIR.glob("*.txt"))
        rows = [
            (line.strip() if raw else unicode_to_ascii(line.strip()), i)
            for i, label in enumerate(labels)
            for line in (NAMES_DIR / f"{label}.txt").read_text(encoding="utf-8").splitlines()
            if unicode_to_ascii(line.strip())
        ]
    else:
        labels = ["Ao", "Ke", "Ri", "Zu"]
        stems = ["ao", "ke", "ri", "zu"]
        rows = []
        for i, stem in enumerate(stems):
            for _ in range(400):
                n = int(rng.integers(2, 6))
                other = rng.choice(list(string.ascii_lowercase), size=n)
                rows.append((stem.title() + "".join(other) + stem, i))
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    return rows[:-600][:3000], rows[-600:], labels


def _frames(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Keyword-spotting-like frames: 40 values a frame, 20 frames, 3 classes told apart by
    which band rises when; raw scale (a log-mel energy around -20)."""
    x = rng.normal(size=(n, 20, 40)).astype(np.float32)
    y = rng.integers(0, 3, size=n)
    for i, label in enumerate(y):
        x[i, 4 + 4 * label : 10 + 4 * label, 10 * label : 10 * label + 10] += 2.5
    return x * 3.0 - 20.0, y


def _write(tmp: Path, name: str, value) -> Path:
    path = tmp / name
    path.write_text(json.dumps(value))
    return path


def _invoke(*args) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _deploy(tmp: Path, weights: Path, *import_args) -> rnn_runtime.StreamModel:
    """import, convert, verify (must PASS): the deployed model."""
    _invoke("import", weights, *import_args, "--out", tmp / "run")
    _invoke("convert", tmp / "run", "--out", tmp / "m.onnx")
    verdict = _invoke("verify", tmp / "m.onnx", "--checkpoint", tmp / "run", "--quiet")
    assert verdict.startswith("PASS"), verdict
    return rnn_runtime.open_model(tmp / "m.onnx")


def _same_answers(deployed_log_probs: np.ndarray, module_log_probs: np.ndarray) -> None:
    assert (deployed_log_probs.argmax(1) == module_log_probs.argmax(1)).all()
    np.testing.assert_allclose(
        np.exp(deployed_log_probs), np.exp(module_log_probs), atol=PROB_ATOL, rtol=0
    )


# --- the four models ----------------------------------------------------------------------


def test_the_tutorials_charrnn_deploys_with_documented_flags(tmp_path):
    torch.manual_seed(0)
    train, held_out, labels = _names()
    model = CharRNN(len(ALLOWED), 32, len(labels))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(400):  # the user's loop: one name at a time, NLLLoss
        name, label = train[step % len(train)]
        loss = F.nll_loss(model(line_tensor(name)), torch.tensor([label]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save(model.state_dict(), tmp_path / "charrnn.pt")
    vocab = _write(tmp_path, "vocab.json", {"tokens": list(ALLOWED), "unk_id": ALLOWED.find("_")})
    rt = _deploy(
        tmp_path,
        tmp_path / "charrnn.pt",
        "--arch",
        "stacked",
        "--vocab",
        vocab,
        "--strip-accents",
        "--labels",
        _write(tmp_path, "labels.json", labels),
    )
    assert rt.metadata.input_kind == "onehot"
    assert rt.metadata.text == ("strip_marks", False)
    # Raw names in: the file strips accents as the tutorial's unicodeToAscii did when the
    # data was loaded ("Émile" is "Emile"); names with letters unicodeToAscii drops
    # altogether (it keeps only its letters) are left out of this comparison.
    raw = [name for name, _ in _names(raw=True)[1]]
    names = [n for n in raw if prepare(n, "strip_marks") == unicode_to_ascii(n)]
    assert len(names) >= 0.95 * len(raw)
    with torch.no_grad():
        want = np.concatenate([model(line_tensor(unicode_to_ascii(n))).numpy() for n in names])
    got = np.stack([p.log_probs for p in rt.predict(names)])
    _same_answers(got, want)


def test_the_tutorials_classic_rnn_deploys_with_documented_flags(tmp_path):
    torch.manual_seed(1)
    train, held_out, labels = _names(seed=1)
    model = RNN(len(ALLOWED), 32, len(labels))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(400):  # the tutorial's classic loop: a step per letter
        name, label = train[step % len(train)]
        hidden = model.initHidden()
        for letter in line_tensor(name):
            output, hidden = model(letter, hidden)
        loss = F.nll_loss(output, torch.tensor([label]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save(model.state_dict(), tmp_path / "rnn.pt")
    rt = _deploy(
        tmp_path,
        tmp_path / "rnn.pt",
        "--arch",
        "cell",
        "--vocab",
        _write(tmp_path, "vocab.json", {"tokens": list(ALLOWED), "unk_id": ALLOWED.find("_")}),
        "--labels",
        _write(tmp_path, "labels.json", labels),
    )
    assert rt.metadata.input_kind == "onehot" and rt.metadata.arch == "stacked"
    names = [name for name, _ in held_out]
    want = []
    with torch.no_grad():
        for name in names:
            hidden = model.initHidden()
            for letter in line_tensor(name):
                output, hidden = model(letter, hidden)
            want.append(output.numpy())
    got = np.stack([p.log_probs for p in rt.predict(names)])
    _same_answers(got, np.concatenate(want))
    stream = rt.stream()  # streamed one letter at a time, the state carried
    for letter in names[0]:
        last = stream.step(letter)
    _same_answers(last.log_probs[None], want[0])


def test_a_name_lstm_whose_embedding_size_is_not_its_hidden_size_deploys(tmp_path):
    torch.manual_seed(2)
    train, held_out, labels = _names(seed=2)
    chars = sorted({c for name, _ in train + held_out for c in name})
    index = {c: i for i, c in enumerate(chars)}
    model = NameLSTM(len(chars), 16, 48, len(labels))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for step in range(300):
        name, label = train[step % len(train)]
        ids = torch.tensor([[index[c] for c in name]])
        loss = F.cross_entropy(model(ids), torch.tensor([label]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save(model.state_dict(), tmp_path / "lstm.pt")
    rt = _deploy(
        tmp_path,
        tmp_path / "lstm.pt",
        "--arch",
        "lstm",
        "--vocab",
        _write(tmp_path, "vocab.json", chars),
        "--labels",
        _write(tmp_path, "labels.json", labels),
    )
    meta = rt.metadata
    assert (meta.input_kind, meta.input_size, meta.hidden_size) == ("tokens", 16, 48)
    names = [name for name, _ in held_out]
    with torch.no_grad():
        want = np.concatenate(
            [F.log_softmax(model(torch.tensor([[index[c] for c in n]])), -1).numpy() for n in names]
        )
    got = np.stack([p.log_probs for p in rt.predict(names)])
    _same_answers(got, want)


def test_a_keyword_gru_over_float_frames_deploys_with_its_normalization(tmp_path):
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    x, y = _frames(600, rng)
    mean, scale = x.reshape(-1, 40).mean(0), x.reshape(-1, 40).std(0)
    model = KeywordGRU(40, 32, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    xs = torch.from_numpy((x - mean) / scale)  # the user's own normalization
    for _ in range(120):
        rows = torch.from_numpy(rng.integers(0, 500, size=32))
        loss = F.cross_entropy(model(xs[rows]), torch.from_numpy(y)[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save(model.state_dict(), tmp_path / "kws.pt")
    norm = _write(tmp_path, "norm.json", {"mean": mean.tolist(), "scale": scale.tolist()})
    module = [
        "--module",
        f"{Path(__file__)}:KeywordGRU",
        "--module-args",
        '{"features": 40, "hidden": 32, "classes": 3}',
        "--weights",
        tmp_path / "kws.pt",
        "--module-batch-first",
        "--module-output",
        "logits",
    ]
    labels = _write(tmp_path, "labels.json", ["yes", "no", "stop"])
    rt = _deploy(
        tmp_path,
        tmp_path / "kws.pt",
        "--arch",
        "gru",
        "--input",
        "features",
        "--normalization",
        norm,
        "--labels",
        labels,
        *module,
    )
    assert (rt.metadata.input_kind, rt.metadata.input_size) == ("features", 40)
    with torch.no_grad():
        want = F.log_softmax(model(xs[500:]), -1).numpy()
    got = np.stack([p.log_probs for p in rt.predict(list(x[500:]))])  # raw frames in
    _same_answers(got, want)
    assert (got.argmax(1) == y[500:]).mean() > 0.9  # it learned the task
    stream = rt.stream()
    for frame in x[500]:
        last = stream.step(frame)
    _same_answers(last.log_probs[None], want[:1])


def test_a_wrong_import_is_refused_with_the_shape_expected(tmp_path):
    """E != H named plainly: the message says what the model's own H makes it expect."""
    torch.manual_seed(0)
    model = NameLSTM(10, 8, 12, 3)
    state = model.state_dict()
    state["lstm.weight_ih_l0"] = state["lstm.weight_ih_l0"][:, :6]  # a cut input weight
    torch.save(state, tmp_path / "bad.pt")
    result = CliRunner().invoke(
        main,
        [
            "import",
            str(tmp_path / "bad.pt"),
            "--arch",
            "lstm",
            "--vocab",
            str(_write(tmp_path, "v.json", list("abcdefghij"))),
            "--labels",
            str(_write(tmp_path, "l.json", ["a", "b", "c"])),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 2
    assert "the embedding has shape (10, 8), so it gives E = 8 values a step; layer 0's " in (
        result.output
    )
    assert "takes X = 6" in result.output and len(result.output.strip().splitlines()) == 1
