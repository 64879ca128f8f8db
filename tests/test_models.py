"""Every arch: shapes, the padded-batch rule, chunked streaming, the notes' recurrence."""

from __future__ import annotations

import pytest
import torch

from rnn_export.config import NONLINEARITIES, ConfigError, ModelConfig
from rnn_export.models import build_model

# float32 recurrences over a few steps: rows run alone vs. in a padded batch may take
# different kernel paths (batch sizes), so allow rounding, nothing more.
ATOL = 1e-6
RTOL = 1e-5

V, H, C = 11, 8, 3
COMBOS = [(arch, f) for arch, fs in NONLINEARITIES.items() for f in fs]


def make(arch: str, nonlinearity: str = "tanh", num_layers: int | None = None, seed: int = 0):
    torch.manual_seed(seed)
    layers = num_layers or (1 if arch == "cell" else 2)
    config = ModelConfig(arch, V, ("x", "y", "z"), H, layers, nonlinearity)
    return build_model(config).eval()


def random_state(model, batch_size: int, seed: int = 1):
    """A random state: a tensor, or for "lstm" the pair (h, c)."""
    g = torch.Generator().manual_seed(seed)
    shape = model.config.state_shape(batch_size)
    states = tuple(torch.randn(shape, generator=g) * 0.5 for _ in model.config.state_names)
    return states if len(states) > 1 else states[0]


def parts(state) -> tuple:
    """The state's tensors: (h,) or (h, c)."""
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("arch,nonlinearity", COMBOS)
@pytest.mark.parametrize("B,T", [(1, 1), (3, 5), (4, 17)])
def test_shapes_and_log_probs(arch, nonlinearity, B, T):
    model = make(arch, nonlinearity)
    tokens = torch.randint(0, V, (B, T))
    with torch.no_grad():
        log_probs, state = model(tokens)
    assert log_probs.shape == (B, C)
    assert log_probs.dtype == torch.float32
    assert len(parts(state)) == len(model.config.state_names) == (2 if arch == "lstm" else 1)
    for s, zeros in zip(parts(state), parts(model.initial_state(B)), strict=True):
        assert tuple(s.shape) == tuple(zeros.shape) == model.config.state_shape(B)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(B), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("arch,nonlinearity", COMBOS)
def test_state_none_means_zeros(arch, nonlinearity):
    model = make(arch, nonlinearity)
    tokens = torch.randint(0, V, (2, 6))
    with torch.no_grad():
        a = model(tokens)
        b = model(tokens, model.initial_state(2))
    assert torch.equal(a[0], b[0])
    assert all(torch.equal(x, y) for x, y in zip(parts(a[1]), parts(b[1]), strict=True))
    assert not any(s.any() for s in parts(model.initial_state(2)))


@pytest.mark.parametrize("arch,nonlinearity", COMBOS)
def test_padded_batch_row_equals_row_alone(arch, nonlinearity):
    """Each row of a padded batch gives what the row alone gives, from a non-zero state."""
    model = make(arch, nonlinearity, num_layers=None if arch == "cell" else 3)
    lengths = torch.tensor([7, 1, 4, 7, 2])
    B, T = len(lengths), int(lengths.max())
    # Padding holds real, non-zero token ids: only the lengths may keep them out.
    tokens = torch.randint(1, V, (B, T))
    state = random_state(model, B)
    batch_dim = 0 if arch == "cell" else 1
    with torch.no_grad():
        log_probs, new_state = model(tokens, state, lengths)
        for i, n in enumerate(lengths.tolist()):
            row_state = tuple(s.narrow(batch_dim, i, 1) for s in parts(state))
            alone_lp, alone_state = model(
                tokens[i : i + 1, :n], row_state if len(row_state) > 1 else row_state[0]
            )
            torch.testing.assert_close(log_probs[i : i + 1], alone_lp, atol=ATOL, rtol=RTOL)
            torch.testing.assert_close(
                tuple(s.narrow(batch_dim, i, 1) for s in parts(new_state)),
                parts(alone_state),
                atol=ATOL,
                rtol=RTOL,
            )


@pytest.mark.parametrize("arch,nonlinearity", COMBOS)
def test_padding_content_changes_nothing(arch, nonlinearity):
    model = make(arch, nonlinearity)
    lengths = torch.tensor([3, 6, 2])
    tokens = torch.randint(1, V, (3, 6))
    other = tokens.clone()
    for i, n in enumerate(lengths.tolist()):
        other[i, n:] = (tokens[i, n:] + 1) % V
    with torch.no_grad():
        a = model(tokens, lengths=lengths)
        b = model(other, lengths=lengths)
    assert torch.equal(a[0], b[0])
    assert all(torch.equal(x, y) for x, y in zip(parts(a[1]), parts(b[1]), strict=True))


@pytest.mark.parametrize("arch,nonlinearity", COMBOS)
def test_chunks_with_carried_state_equal_whole_sequence(arch, nonlinearity):
    """Streaming: feeding a sequence in pieces, carrying the state, changes nothing."""
    model = make(arch, nonlinearity)
    tokens = torch.randint(0, V, (2, 12))
    with torch.no_grad():
        whole_lp, whole_state = model(tokens)
        state = None
        for piece in tokens.split([1, 4, 7], dim=1):
            lp, state = model(piece, state)
    torch.testing.assert_close(lp, whole_lp, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(state, whole_state, atol=ATOL, rtol=RTOL)


def test_identity_cell_is_the_notes_linear_recurrence():
    model = make("cell", "identity")
    tokens = torch.randint(0, V, (2, 3))
    h = random_state(model, 2)
    with torch.no_grad():
        log_probs, state = model(tokens, h)
        for t in range(3):
            h = model.i2h(torch.cat((model.embed(tokens[:, t]), h), dim=1))
        expected = torch.log_softmax(model.h2o(h), dim=-1)
    torch.testing.assert_close(state, h, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(log_probs, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("arch", ["stacked", "gru", "lstm"])
def test_stacked_is_the_notes_last_time_step(arch):
    """Without padding, the output is fc(output[:, -1, :]) as in the notes."""
    model = make(arch)
    tokens = torch.randint(0, V, (3, 5))
    with torch.no_grad():
        log_probs, _ = model(tokens)
        output, _ = model.rnn(model.embedding(tokens))
        expected = torch.log_softmax(model.fc(output[:, -1, :]), dim=-1)
    torch.testing.assert_close(log_probs, expected, atol=ATOL, rtol=RTOL)


def test_default_sizes():
    config = ModelConfig("stacked", V, ("x", "y"), num_layers=2)
    assert config.hidden_size == 128
    model = build_model(config)
    assert model.rnn.num_layers == 2 and model.rnn.hidden_size == 128


@pytest.mark.parametrize(
    ("arch", "module", "gate_rows", "names"),
    [
        ("gru", torch.nn.GRU, 3, (("h0", "hn"),)),
        ("lstm", torch.nn.LSTM, 4, (("h0", "hn"), ("c0", "cn"))),
    ],
)
def test_gated_arches_wrap_torch_modules(arch, module, gate_rows, names):
    """rnn.weight_ih_l{k} as PyTorch names them; the LSTM's state is (h, c), both carried."""
    model = make(arch, num_layers=2)
    assert isinstance(model.rnn, module) and model.config.state_names == names
    keys = set(model.state_dict())
    assert {"embedding.weight", "fc.weight", "fc.bias", "rnn.weight_hh_l1"} <= keys
    assert tuple(model.state_dict()["rnn.weight_ih_l0"].shape) == (gate_rows * H, H)
    tokens = torch.randint(0, V, (3, 5))
    state = random_state(model, 3)
    with torch.no_grad():
        log_probs, new = model(tokens, state)
        _, want = model.rnn(model.embedding(tokens), state)
    torch.testing.assert_close(parts(new), parts(want), atol=ATOL, rtol=RTOL)
    if arch == "lstm":  # the cell state moves too: a runner that drops it is wrong
        assert not torch.allclose(new[1], state[1], atol=1e-3)


@pytest.mark.parametrize(
    ("arch", "nonlinearity", "match"),
    [
        ("gru", "relu", r"nonlinearity for arch 'gru' must be one of \('tanh',\); got 'relu'"),
        ("lstm", "identity", r"arch 'lstm' must be one of \('tanh',\); got 'identity'"),
    ],
)
def test_gated_arches_take_only_their_native_gates(arch, nonlinearity, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(arch, V, ("x", "y"), H, 1, nonlinearity)


@pytest.mark.parametrize("label", ["a\nb", "tab\there", "cr\r", "\x85", "line\u2029", "\x7f"])
def test_a_label_holds_no_control_character_or_line_break(label):
    """A label is one field of one line in the text outputs (stream, score)."""
    with pytest.raises(ConfigError, match=r"a label must not hold a control character or line"):
        ModelConfig("cell", V, ("ok", label))
    assert ModelConfig("cell", V, ("ok", "ünïcode label, with spaces")).num_classes == 2
