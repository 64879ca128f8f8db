"""The descriptions stored with every checkpoint: the model (ModelConfig, enough to rebuild
it) and the options it was trained with (TrainOptions).

Every size and number is bounded, so that a config read from a file or an option is
refused before anything is allocated:
    input_kind       "tokens" (an Embedding (V, E)), "onehot" (V symbols fed to layer 0 as
                     one-hot vectors) or "features" (F float32 values per step)
    vocab_size   V   2 .. 65,536 (single characters, the unknown token included); 0 for
                     "features"
    input_size   E   1 .. 4,096: the embedding size of "tokens" (None: E = H), the
                     frame size F of "features" (required); None for "onehot" (width V)
    hidden_size  H   1 .. 4,096
    num_layers   L   1 .. 16 (exactly 1 for "cell")
    (gru and lstm have their native gates only: nonlinearity is always "tanh")
    labels       C   2 .. 10,000 distinct strings of 1 .. 256 characters, each one
                     encodable as UTF-8 (no lone surrogates), without a control
                     character or line break (check_label)
    epochs           1 .. 100,000        batch_size  1 .. 65,536
    lr               finite, 0 < lr <= 1 clip        finite, 0 < clip <= 1e6
    seed             0 .. 2**32 - 1      threads     1 .. 256
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields

from rnn_export.errors import InputError

ARCHS = ("cell", "stacked", "gru", "lstm")
# The input stage: what a step reads (see ModelConfig).
INPUT_KINDS = ("tokens", "onehot", "features")
# The head stage: what the model answers and when (log-softmax after each row's last real
# step); heads at every step and sigmoid or raw outputs are added here.
HEADS = ("log_softmax",)
HEAD_STEPS = ("last",)
NONLINEARITIES = {
    "cell": ("tanh", "relu", "identity"),
    "stacked": ("tanh", "relu"),
    # The gated cells' nonlinearities are fixed (sigmoid gates, tanh candidate): "tanh" names them.
    "gru": ("tanh",),
    "lstm": ("tanh",),
}
# Every nonlinearity of any arch, in the order above (for option choices).
ALL_NONLINEARITIES = tuple(dict.fromkeys(n for names in NONLINEARITIES.values() for n in names))

# Training defaults, chosen so that every arch passes 90% on the embedded task and 80% on
# the names data within two minutes on two cores (figures in docs/commands.md). A gated
# step costs 3-4 times a plain one, and the gated arches learn in fewer epochs.
DEFAULT_EPOCHS_BY_ARCH = {"cell": 8, "stacked": 8, "gru": 4, "lstm": 4}
DEFAULT_EPOCHS = DEFAULT_EPOCHS_BY_ARCH["cell"]
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 3e-3
DEFAULT_CLIP = 1.0
DEFAULT_HIDDEN_SIZE = 128
DEFAULT_NUM_LAYERS = {"cell": 1, "stacked": 2, "gru": 1, "lstm": 1}

MAX_VOCAB_SIZE = 65_536
MAX_HIDDEN_SIZE = 4_096
MAX_INPUT_SIZE = 4_096
MAX_NUM_LAYERS = 16
MAX_LABELS = 10_000
MAX_LABEL_CHARS = 256
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 65_536
MAX_LR = 1.0
MAX_CLIP = 1e6
MAX_SEED = 2**32 - 1
MAX_THREADS = 256

# One name per tensor, the same in PyTorch, in the ONNX graph and in the runtime.
TOKENS = "tokens"
FEATURES = "features"  # a "features" model's main input: float32 (B, T, F)
LENGTHS = "lengths"
STATE_IN = "h0"
LOG_PROBS = "log_probs"
STATE_OUT = "hn"

# The state contract: the kinds of state each arch carries, in order. Kind k is fed in as
# f"{k}0" and returned as f"{k}n" (PyTorch's names: h0/hn, and c0/cn for the LSTM's cell
# state), in PyTorch, in the graph, in the metadata and in the runtime; the step model
# names layer l's as f"{k}_{l}" in and f"{k}n_{l}" out.
STATE_KINDS = {"cell": ("h",), "stacked": ("h",), "gru": ("h",), "lstm": ("h", "c")}


def input_name(config) -> str:
    """The main graph's input: "tokens" (int64 (B, T) ids) or "features" (float32 (B, T, F))."""
    return TOKENS if config.reads_tokens else FEATURES


def state_names(arch: str) -> tuple[tuple[str, str], ...]:
    """(input, output) name of each state of arch, in order: (("h0", "hn"),) or, for
    "lstm", (("h0", "hn"), ("c0", "cn"))."""
    return tuple((f"{kind}0", f"{kind}n") for kind in STATE_KINDS[arch])


def step_state_names(arch: str, num_layers: int) -> tuple[tuple[str, str], ...]:
    """(input, output) names of the step model's per-layer states: every layer of the first
    state kind, then every layer of the next (h_0, h_1, ..., c_0, c_1, ...)."""
    return tuple(
        (f"{kind}_{layer}", f"{kind}n_{layer}")
        for kind in STATE_KINDS[arch]
        for layer in range(num_layers)
    )


class ConfigError(InputError):
    """A model description that cannot describe a model."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model of any arch and input kind.

    Args:
        arch: "cell" (the notes' hand-built cell), "stacked" (the notes' nn.RNN wrapper),
            "gru" or "lstm" (the same wrapper around nn.GRU or nn.LSTM).
        vocab_size: V, number of token ids, unknown-token id included; 0 for "features".
        labels: class names, index = class id; C = len(labels).
        hidden_size: H.
        num_layers: L; always 1 for "cell".
        nonlinearity: "tanh" or "relu" for "cell" and "stacked", also "identity" for "cell";
            always "tanh" for "gru" and "lstm".
        input_kind: the input stage, one of INPUT_KINDS: "tokens" (token ids through an
            Embedding (V, E)), "onehot" (token ids as one-hot vectors of width V, as the
            PyTorch tutorial's name classifier feeds its letters) or "features" (F float32
            values per step, normalized by a per-feature mean and scale the model holds).
        input_size: E for "tokens" (None: E = H, the notes' models), F for "features"
            (required); None for "onehot".
        head: the head stage's output, one of HEADS: log-probabilities over C classes.
        head_steps: when the head answers, one of HEAD_STEPS: after each row's last real
            step.
    """

    arch: str
    vocab_size: int
    labels: tuple[str, ...] = field(default_factory=tuple)
    hidden_size: int = DEFAULT_HIDDEN_SIZE
    num_layers: int = 1
    nonlinearity: str = "tanh"
    input_kind: str = "tokens"
    input_size: int | None = None
    head: str = "log_softmax"
    head_steps: str = "last"

    def __post_init__(self) -> None:
        if not isinstance(self.labels, (list, tuple)):
            raise ConfigError(f"labels must be a list of strings; got {self.labels!r:.80}")
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.arch not in ARCHS:
            raise ConfigError(f"arch must be one of {ARCHS}; got {self.arch!r:.80}")
        if self.nonlinearity not in NONLINEARITIES[self.arch]:
            raise ConfigError(
                f"nonlinearity for arch {self.arch!r} must be one of "
                f"{NONLINEARITIES[self.arch]}; got {self.nonlinearity!r:.80}"
            )
        self._check_input()
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {HEADS}; got {self.head!r:.80}")
        if self.head_steps not in HEAD_STEPS:
            raise ConfigError(
                f"head_steps must be one of {HEAD_STEPS}; got {self.head_steps!r:.80}"
            )
        check_int("hidden_size", self.hidden_size, 1, MAX_HIDDEN_SIZE)
        check_int("num_layers", self.num_layers, 1, MAX_NUM_LAYERS)
        if self.arch == "cell" and self.num_layers != 1:
            raise ConfigError(f"arch 'cell' has exactly 1 layer; got num_layers={self.num_layers}")
        if not 2 <= len(self.labels) <= MAX_LABELS:
            raise ConfigError(
                f"a classifier needs 2 to {MAX_LABELS:,} labels; got {len(self.labels):,}"
            )
        for label in self.labels:
            check_label(label)
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"labels must be unique; got {list(self.labels)!r:.200}")

    def _check_input(self) -> None:
        kind = self.input_kind
        if kind not in INPUT_KINDS:
            raise ConfigError(f"input_kind must be one of {INPUT_KINDS}; got {kind!r:.80}")
        if kind == "features":
            if self.vocab_size != 0:
                raise ConfigError(
                    f"a features model reads no tokens: vocab_size must be 0; got "
                    f"{self.vocab_size!r:.40}"
                )
            if self.input_size is None:
                raise ConfigError("a features model needs input_size F (values per step)")
        else:
            check_int("vocab_size", self.vocab_size, 2, MAX_VOCAB_SIZE)
        if kind == "onehot" and self.input_size is not None:
            raise ConfigError(
                f"a onehot model's input width is its vocab_size V = {self.vocab_size}; "
                f"input_size must be null; got {self.input_size!r:.40}"
            )
        if self.input_size is not None:
            check_int("input_size", self.input_size, 1, MAX_INPUT_SIZE)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def input_width(self) -> int:
        """The width of layer 0's input per step: E for "tokens", V for "onehot", F for
        "features"."""
        if self.input_kind == "onehot":
            return self.vocab_size
        return self.hidden_size if self.input_size is None else self.input_size

    @property
    def reads_tokens(self) -> bool:
        """Whether a step reads a token id (tokens, onehot) rather than a float frame."""
        return self.input_kind != "features"

    def state_shape(self, batch_size: int | str = "B") -> tuple:
        """Shape of each state: (B, H) for "cell", (L, B, H) for the others (the LSTM's h
        and c alike)."""
        if self.arch == "cell":
            return (batch_size, self.hidden_size)
        return (self.num_layers, batch_size, self.hidden_size)

    @property
    def state_names(self) -> tuple[tuple[str, str], ...]:
        """(input, output) name of each state, in order (see the module's state_names)."""
        return state_names(self.arch)

    def describe(self) -> str:
        """One line for people: "cell, L=1, H=128, tanh, V=30, C=4" (the input stage
        named when it is not an Embedding (V, H): "onehot V=57", "E=32", "features F=40")."""
        inputs = {
            "tokens": f"V={self.vocab_size}"
            + ("" if self.input_size in (None, self.hidden_size) else f", E={self.input_size}"),
            "onehot": f"onehot V={self.vocab_size}",
            "features": f"features F={self.input_size}",
        }[self.input_kind]
        return (
            f"{self.arch}, L={self.num_layers}, H={self.hidden_size}, {self.nonlinearity}, "
            f"{inputs}, C={self.num_classes}"
        )

    def to_dict(self) -> dict:
        """The config as JSON values. The stage fields at their defaults are left out, so
        a model of the notes' form keeps the dict (and so the identity) it always had."""
        d = asdict(self)
        d["labels"] = list(self.labels)
        for name, default in _STAGE_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"a model config is a JSON object; got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        missing = {"arch", "vocab_size", "labels"} - d.keys()
        if missing:
            raise ConfigError(f"model config lacks {sorted(missing)}")
        unknown = d.keys() - known
        if unknown:
            raise ConfigError(f"model config has unknown keys {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)


_STAGE_DEFAULTS = {
    "input_kind": "tokens",
    "input_size": None,
    "head": "log_softmax",
    "head_steps": "last",
}


@dataclass(frozen=True)
class TrainOptions:
    """Everything that decides a training run besides its data; stored in train.json.

    Args:
        arch: "cell", "stacked", "gru" or "lstm".
        hidden_size: H.
        num_layers: L; None means DEFAULT_NUM_LAYERS[arch] (2 for "stacked", else 1).
        nonlinearity: "tanh", "relu" ("cell", "stacked") or "identity" ("cell" only);
            "gru" and "lstm" take "tanh" only.
        epochs: passes over the training split; None means DEFAULT_EPOCHS_BY_ARCH[arch]
            (8 for "cell" and "stacked", 4 for "gru" and "lstm").
        batch_size: samples per BPTT step.
        lr: Adam learning rate (decayed to 0 by a cosine schedule).
        clip: maximum gradient norm.
        seed: seeds the weights and the batch order (and the embedded task's data).
        threads: torch CPU threads while training. With these small matrices more
            threads gain little and collapse when cores are shared.
        input_kind: the input stage, one of INPUT_KINDS ("features": F is the data's).
        input_size: E, the embedding size of "tokens" (None: E = H).
    """

    arch: str
    hidden_size: int = DEFAULT_HIDDEN_SIZE
    num_layers: int | None = None
    nonlinearity: str = "tanh"
    epochs: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = DEFAULT_LR
    clip: float = DEFAULT_CLIP
    seed: int = 0
    threads: int = 1
    input_kind: str = "tokens"
    input_size: int | None = None

    def __post_init__(self) -> None:
        if self.num_layers is None:
            object.__setattr__(self, "num_layers", DEFAULT_NUM_LAYERS.get(self.arch, 1))
        if self.epochs is None:
            epochs = DEFAULT_EPOCHS_BY_ARCH.get(self.arch, DEFAULT_EPOCHS)
            object.__setattr__(self, "epochs", epochs)
        # The model's own checks (arch, nonlinearity, sizes), before any data is read.
        if self.input_kind == "features":
            self.model_config(vocab_size=0, labels=("a", "b"), input_size=self.input_size or 1)
        else:
            self.model_config(vocab_size=2, labels=("a", "b"))
        check_int("epochs", self.epochs, 1, MAX_EPOCHS)
        check_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        check_float("lr", self.lr, MAX_LR)
        check_float("clip", self.clip, MAX_CLIP)
        check_int("seed", self.seed, 0, MAX_SEED)
        check_int("threads", self.threads, 1, MAX_THREADS)

    def model_config(self, vocab_size: int, labels, input_size: int | None = None) -> ModelConfig:
        """The ModelConfig these options train, for a vocabulary (vocab_size 0 for
        "features") and labels; input_size: the data's frame size F ("features")."""
        return ModelConfig(
            arch=self.arch,
            vocab_size=vocab_size,
            labels=tuple(labels),
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            nonlinearity=self.nonlinearity,
            input_kind=self.input_kind,
            input_size=input_size if self.input_kind == "features" else self.input_size,
        )

    def to_dict(self) -> dict:
        """The options as JSON values; the input stage's fields at their defaults are left
        out, as ModelConfig.to_dict does."""
        d = asdict(self)
        for name in ("input_kind", "input_size"):
            if d[name] == _STAGE_DEFAULTS[name]:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainOptions:
        if not isinstance(d, dict):
            raise ConfigError(f"training options are a JSON object; got {type(d).__name__}")
        unknown = d.keys() - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"training options have unknown keys {sorted(unknown)}")
        if "arch" not in d:
            raise ConfigError("training options lack 'arch'")
        return cls(**d)


def check_int(name: str, value, low: int, high: int, error: type = ConfigError) -> int:
    """value, if an int (not a bool) in [low, high]; else error (ConfigError) naming name."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise error(f"{name} must be an integer; got {value!r:.80}")
    if not low <= value <= high:
        # str() of an int over 4,300 digits raises: show the size of a huge one instead.
        digits = int(abs(value).bit_length() * math.log10(2)) + 1
        shown = f"{value:,}" if digits <= 30 else f"an integer of about {digits:,} digits"
        raise error(f"{name} must be in {low:,} .. {high:,}; got {shown}")
    return value


def check_float(name: str, value, high: float) -> float:
    """value, if a finite number in (0, high]; else ConfigError naming name."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"{name} must be a number; got {value!r:.80}")
    if not (math.isfinite(value) and 0 < value <= high):
        raise ConfigError(f"{name} must be a finite number in (0, {high:g}]; got {value!r:.40}")
    return float(value)


# Characters a label cannot hold: C0 and C1 controls (tab, newline, carriage return, form
# feed, U+0085...) and the line and paragraph separators. A label is one tab-separated
# field of one line in the text outputs (stream, score); rnn_runtime.metadata refuses the
# same set in a file.
LABEL_BREAKS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_label(value, error: type = ConfigError) -> str:
    """value, if a label: check_text, and no character of LABEL_BREAKS; else error."""
    check_text("label", value, MAX_LABEL_CHARS, error)
    found = LABEL_BREAKS.search(value)
    if found:
        raise error(
            f"a label must not hold a control character or line break (each label is one "
            f"field of a line in the text outputs); {value!r:.80} holds {found.group()!r} "
            f"at character {found.start()}"
        )
    return value


def check_text(name: str, value, max_chars: int, error: type = ConfigError) -> str:
    """value, if a str of 1 .. max_chars characters that UTF-8 can encode; else error."""
    if not isinstance(value, str) or not 1 <= len(value) <= max_chars:
        size = "one character" if max_chars == 1 else f"a string of 1 to {max_chars} characters"
        raise error(f"a {name} must be {size}; got {value!r:.80}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise error(
            f"a {name} must be text UTF-8 can encode; {value!r:.80} holds {e.reason} "
            f"at character {e.start}"
        ) from None
    return value
