"""Both arches: shapes, the padded-batch rule, chunked streaming, the notes' recurrence."""

from __future__ import annotations

import pytest
import torch

from rnn_export.config import NONLINEARITIES, ModelConfig
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


def random_state(model, batch_size: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(model.config.state_shape(batch_size), generator=g) * 0.5


@pytest.mark.parametrize("arch,nonlinearity", COMBOS)
@pytest.mark.parametrize("B,T", [(1, 1), (3, 5), (4, 17)])
def test_shapes_and_log_probs(arch, nonlinearity, B, T):
    model = make(arch, nonlinearity)
    tokens = torch.randint(0, V, (B, T))
    with torch.no_grad():
        log_probs, state = model(tokens)
    assert log_probs.shape == (B, C)
    assert log_probs.dtype == torch.float32
    assert tuple(state.shape) == model.config.state_shape(B)
    assert tuple(model.initial_state(B).shape) == model.config.state_shape(B)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(B), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("arch,nonlinearity", COMBOS)
def test_state_none_means_zeros(arch, nonlinearity):
    model = make(arch, nonlinearity)
    tokens = torch.randint(0, V, (2, 6))
    with torch.no_grad():
        a = model(tokens)
        b = model(tokens, model.initial_state(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not model.initial_state(2).any()


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
            row_state = state.narrow(batch_dim, i, 1)
            alone_lp, alone_state = model(tokens[i : i + 1, :n], row_state)
            torch.testing.assert_close(log_probs[i : i + 1], alone_lp, atol=ATOL, rtol=RTOL)
            torch.testing.assert_close(
                new_state.narrow(batch_dim, i, 1), alone_state, atol=ATOL, rtol=RTOL
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
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


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


def test_stacked_is_the_notes_last_time_step():
    """Without padding, stacked's output is fc(output[:, -1, :]) as in the notes."""
    model = make("stacked")
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
