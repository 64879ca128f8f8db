"""The one description of a model: stored with every checkpoint, enough to rebuild it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

ARCHS = ("cell", "stacked")
NONLINEARITIES = {"cell": ("tanh", "relu", "identity"), "stacked": ("tanh", "relu")}

# One name per tensor, the same in PyTorch, in the ONNX graph and in the runtime.
TOKENS = "tokens"
LENGTHS = "lengths"
STATE_IN = "h0"
LOG_PROBS = "log_probs"
STATE_OUT = "hn"


class ConfigError(ValueError):
    """A model description that cannot describe a model."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model of either arch.

    Args:
        arch: "cell" (the notes' hand-built cell) or "stacked" (the notes' nn.RNN wrapper).
        vocab_size: V, number of token ids, unknown-token id included.
        labels: class names, index = class id; C = len(labels).
        hidden_size: H.
        num_layers: L; always 1 for "cell".
        nonlinearity: "tanh" or "relu" for both arches, also "identity" for "cell".
    """

    arch: str
    vocab_size: int
    labels: tuple[str, ...] = field(default_factory=tuple)
    hidden_size: int = 128
    num_layers: int = 1
    nonlinearity: str = "tanh"

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.arch not in ARCHS:
            raise ConfigError(f"arch must be one of {ARCHS}; got {self.arch!r}")
        if self.nonlinearity not in NONLINEARITIES[self.arch]:
            raise ConfigError(
                f"nonlinearity for arch {self.arch!r} must be one of "
                f"{NONLINEARITIES[self.arch]}; got {self.nonlinearity!r}"
            )
        if self.arch == "cell" and self.num_layers != 1:
            raise ConfigError(f"arch 'cell' has exactly 1 layer; got num_layers={self.num_layers}")
        for name in ("vocab_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer; got {value!r}")
        if len(self.labels) < 2:
            raise ConfigError(f"a classifier needs at least 2 labels; got {len(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"labels must be unique; got {list(self.labels)}")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def state_shape(self, batch_size: int | str = "B") -> tuple:
        """Shape of the hidden state: (B, H) for "cell", (L, B, H) for "stacked"."""
        if self.arch == "cell":
            return (batch_size, self.hidden_size)
        return (self.num_layers, batch_size, self.hidden_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["labels"] = list(self.labels)
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
