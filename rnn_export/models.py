"""The two RNNs of the notes and their gated variants (GRU, LSTM), behind one interface.

A model is three stages: input -> recurrence -> head. The input stage (config.input_kind)
turns a step's input into a vector of width config.input_width: an Embedding (V, E) of a
token id ("tokens"), a one-hot vector of width V ("onehot": the PyTorch tutorial's
letters) or F float values normalized per feature ("features"); the recurrence is the
arch's; the head a Linear and log-softmax on the top layer's state.

All map (inputs, state, lengths) to (log_probs, new_state):
    inputs   int64 token ids (B, T), or float32 frames (B, T, F) for "features"
    state    float32, (B, H) for "cell", (L, B, H) for "stacked" and "gru", the pair
             (h, c) of (L, B, H) for "lstm" (config.state_names: h0, c0); None means zeros
    lengths  int64 (B), 1 <= lengths <= T, for padded batches; None means all T
    log_probs (B, C) and new_state are those after each row's own last real token,
    exactly as if the row were run alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from rnn_export.config import ModelConfig

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda x: x}


class OneHot(nn.Module):
    """Token ids as one-hot float vectors of width V (no weights): the tutorial's
    letterToTensor."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        # Follows the model's dtype (.double() for the float64 reference); not a weight.
        self.register_buffer("dtype_of", torch.zeros(0), persistent=False)

    def forward(self, tokens):
        return F.one_hot(tokens, self.vocab_size).to(self.dtype_of.dtype)  # (B, T, V)


class Frames(nn.Module):
    """F float values per step, normalized per feature: (x - mean) / scale. mean and scale
    are buffers (stored with the weights, not trained): statistics of the training split,
    so that device code feeds raw frames."""

    def __init__(self, size: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("scale", torch.ones(size))

    def forward(self, frames):
        return (frames - self.mean) / self.scale  # (B, T, F)


def input_stage(config: ModelConfig, embedding_name: str) -> tuple[str, nn.Module]:
    """The input stage's attribute name and module. A token Embedding keeps the name the
    notes give it (embedding_name), so their state_dicts load as they are."""
    if config.input_kind == "onehot":
        return "onehot", OneHot(config.vocab_size)
    if config.input_kind == "features":
        return "frames", Frames(config.input_size)
    return embedding_name, nn.Embedding(config.vocab_size, config.input_width)


class _Staged(nn.Module):
    """What every model shares: the input stage under its attribute name."""

    def _add_input(self, config: ModelConfig, embedding_name: str) -> None:
        self.input_name, module = input_stage(config, embedding_name)
        setattr(self, self.input_name, module)

    def encode(self, inputs):
        """The input stage: (B, T) ids or (B, T, F) frames -> (B, T, input_width) float."""
        return getattr(self, self.input_name)(inputs)


class CellRNN(_Staged):
    """The notes' hand-built single-hidden-layer RNN (the 单隐藏层 version).

    h_t = f(i2h([embed(x_t), h_{t-1}])), log_probs = log_softmax(h2o(h_T)).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        H = config.hidden_size
        self._add_input(config, "embed")
        self.i2h = nn.Linear(config.input_width + H, H)
        self.h2o = nn.Linear(H, config.num_classes)  # the notes had (H, H): ignored output_size
        self.activation = _ACTIVATIONS[config.nonlinearity]

    def initial_state(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, self.config.hidden_size)  # (B, H)

    def forward(self, inputs, state=None, lengths=None):
        B, T = inputs.shape[:2]
        h = self.initial_state(B) if state is None else state  # (B, H)
        x = self.encode(inputs)  # (B, T, E)
        for t in range(T):
            h_next = self.activation(self.i2h(torch.cat((x[:, t], h), dim=1)))  # (B, H)
            if lengths is None:
                h = h_next
            else:
                # Rows already past their last real token keep their state: padding never counts.
                h = torch.where((t < lengths).unsqueeze(1), h_next, h)  # (B, H)
        return F.log_softmax(self.h2o(h), dim=-1), h  # (B, C), (B, H)


class StackedRNN(_Staged):
    """The notes' multi-layer nn.RNN wrapper (the 多隐藏层 version).

    log_probs = log_softmax(fc(top layer's output at the last real step)).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        H = config.hidden_size
        self._add_input(config, "embedding")
        self.rnn = self._recurrence(H, config)
        self.fc = nn.Linear(H, config.num_classes)

    @staticmethod
    def _recurrence(H: int, config: ModelConfig) -> nn.Module:
        E = config.input_width
        return nn.RNN(E, H, config.num_layers, nonlinearity=config.nonlinearity, batch_first=True)

    def initial_state(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(self.config.num_layers, batch_size, self.config.hidden_size)  # (L, B, H)

    def forward(self, inputs, state=None, lengths=None):
        B = inputs.shape[0]
        h0 = self.initial_state(B) if state is None else state  # (L, B, H), or a pair of them
        x = self.encode(inputs)  # (B, T, E)
        if lengths is not None:
            # Packing stops each row at its own length; PyTorch restores the row order of hn.
            x = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, hn = self.rnn(x, h0)  # hn (L, B, H), or the pair (hn, cn)
        top = hn[0][-1] if isinstance(hn, tuple) else hn[-1]  # (B, H)
        # The top layer's state after the last real step is the notes' output[:, -1, :].
        return F.log_softmax(self.fc(top), dim=-1), hn  # (B, C), state


class GatedRNN(StackedRNN):
    """StackedRNN around nn.GRU ("gru") or nn.LSTM ("lstm"): the cells devices ship.

    Tensor names as PyTorch gives them (rnn.weight_ih_l{k}: (3H, H) for GRU gates r, z, n;
    (4H, H) for LSTM gates i, f, g, o). The LSTM's state is the pair (h, c).
    """

    @staticmethod
    def _recurrence(H: int, config: ModelConfig) -> nn.Module:
        return {"gru": nn.GRU, "lstm": nn.LSTM}[config.arch](
            config.input_width, H, config.num_layers, batch_first=True
        )

    def initial_state(self, batch_size: int):
        zeros = super().initial_state
        return model_state(zeros(batch_size) for _ in self.config.state_names)  # or (h, c)


def model_state(tensors):
    """A model's state from its tensors in config.state_names order: the one tensor, or
    the tuple (h, c) of the LSTM."""
    tensors = tuple(tensors)
    return tensors if len(tensors) > 1 else tensors[0]


MODELS = {"cell": CellRNN, "stacked": StackedRNN, "gru": GatedRNN, "lstm": GatedRNN}


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised model of config.arch (in train mode)."""
    return MODELS[config.arch](config)
