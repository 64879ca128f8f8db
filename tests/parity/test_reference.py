"""The float64 reference computes the PyTorch model's function, for every arch."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rnn_export.checkpoint import load_checkpoint
from rnn_export.config import ARCHS, NONLINEARITIES
from rnn_export.parity.cases import random_state
from rnn_export.parity.reference import (
    Recurrence,
    ReferenceError,
    TorchFloat32,
    from_torch_state,
    to_torch_state,
)

pytestmark = pytest.mark.parity
ARCH_NONLINEARITIES = [(a, n) for a in ARCHS for n in NONLINEARITIES[a]]


def _inputs(config, B=5, T=9, seed=0):
    """tokens, a random state tuple (h, and c for the LSTM), lengths."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, config.vocab_size, size=(B, T), dtype=np.int64)
    state = random_state(config, B, rng)
    lengths = rng.integers(1, T + 1, size=B, dtype=np.int64)
    lengths[0] = T
    return tokens, state, lengths


@pytest.mark.parametrize("arch, nonlinearity", ARCH_NONLINEARITIES)
def test_reference_is_pytorch_in_float64_with_mixed_lengths(make_export, arch, nonlinearity):
    run_dir, _ = make_export(arch, nonlinearity)
    model = load_checkpoint(run_dir).model
    tokens, state, lengths = _inputs(model.config)
    log_probs, new = Recurrence(model).run(tokens, state, lengths)
    assert len(new) == len(model.config.state_names)
    model64 = copy.deepcopy(model).double()
    with torch.inference_mode():
        lp64, state64 = model64(
            torch.from_numpy(tokens),
            to_torch_state(tuple(s.astype(np.float64) for s in state)),
            torch.from_numpy(lengths),
        )
    np.testing.assert_allclose(log_probs.value, lp64.numpy(), rtol=1e-12, atol=1e-12)
    for mine, theirs in zip(new, from_torch_state(state64), strict=True):
        np.testing.assert_allclose(mine.value, theirs, rtol=1e-12, atol=1e-12)
    # PyTorch float32 sits within the allowance, and the allowance is small
    lp32, new32 = TorchFloat32(model, 1)(tokens, state, lengths)
    assert (np.abs(lp32 - log_probs.value) <= log_probs.radius).all()
    for mine, theirs in zip(new, new32, strict=True):
        assert (np.abs(theirs - mine.value) <= mine.radius).all()
        assert float(np.median(mine.radius)) < 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_every_step_equals_the_run_of_that_length(make_export, arch):
    run_dir, _ = make_export(arch, "tanh")
    model = load_checkpoint(run_dir).model
    tokens, state, _ = _inputs(model.config, T=6)
    reference = Recurrence(model)
    per_step_lp, per_step = reference.run_steps(tokens, state)
    for t in (0, 3, 5):
        lp, new = reference.run(tokens[:, : t + 1], state)
        np.testing.assert_array_equal(per_step_lp.value[t], lp.value)
        for steps, s in zip(per_step, new, strict=True):
            np.testing.assert_array_equal(steps.value[t], s.value)
            np.testing.assert_array_equal(steps.radius[t], s.radius)


def test_self_check_catches_a_reference_that_is_not_the_model(make_export):
    run_dir, _ = make_export("stacked", "tanh")
    model = load_checkpoint(run_dir).model
    tokens, state, _ = _inputs(model.config, T=1)
    reference = Recurrence(model)
    reference.check_against_pytorch(model, tokens[:, 0], state)  # the real model: silent
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.rnn.weight_hh_l1[3, 4] += 1e-6
    with pytest.raises(ReferenceError, match=r"differs from PyTorch float64 by .* in log_probs"):
        reference.check_against_pytorch(other, tokens[:, 0], state)


@pytest.mark.parametrize("arch", ARCHS)
def test_quiet_tokens_list_every_token_least_saturating_first(make_export, arch):
    run_dir, _ = make_export(arch, "tanh")
    reference = Recurrence(load_checkpoint(run_dir).model)
    quiet = reference.quiet_tokens()
    assert sorted(quiet.tolist()) == list(range(reference.config.vocab_size))
    sizes = np.abs(reference.table.value).sum(axis=1)[quiet]
    assert (np.diff(sizes) >= 0).all()


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_a_saturated_bound_keeps_the_values_and_the_cap(make_export, monkeypatch, nonlinearity):
    """Long runs of an amplifying model saturate the bound; from then on only values are
    computed: the same values, and radii at the cap, as the full arithmetic gives."""
    from rnn_export.parity import bounds

    run_dir, _ = make_export("stacked", nonlinearity)
    model = load_checkpoint(run_dir).model
    with torch.no_grad():
        for layer in range(model.config.num_layers):
            getattr(model.rnn, f"weight_hh_l{layer}").mul_(6.0)  # chaotic: the bound grows
    tokens, state, lengths = _inputs(model.config, B=4, T=300)
    reference = Recurrence(model)
    fast = reference.run(tokens, state, lengths)
    calls = []
    monkeypatch.setattr(Recurrence, "_step_values", lambda *a: calls.append(1) or None)
    monkeypatch.setattr(bounds, "radius_cap", lambda name: np.inf)  # never saturated
    import rnn_export.parity.reference as reference_module

    monkeypatch.setattr(reference_module, "radius_cap", lambda name: np.inf)
    slow = Recurrence(model).run(tokens, state, lengths)
    assert not calls
    cap = bounds.RADIUS_CAP / 2 if nonlinearity == "relu" else 2.0
    np.testing.assert_allclose(fast[1][0].value, slow[1][0].value, rtol=1e-12, atol=1e-12)
    assert (fast[1][0].radius >= np.minimum(slow[1][0].radius, cap)).all()
    assert (fast[1][0].radius >= cap).any()  # it did saturate


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_self_check_catches_a_wrong_gated_reference(make_export, arch):
    """The one-step self-check runs on the gated arches' state tuples too."""
    run_dir, _ = make_export(arch, "tanh")
    model = load_checkpoint(run_dir).model
    tokens, state, _ = _inputs(model.config, T=1)
    reference = Recurrence(model)
    reference.check_against_pytorch(model, tokens[:, 0], state)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.rnn.bias_hh_l1[2 * model.config.hidden_size] += 1e-6  # GRU n / LSTM g, unit 0
    with pytest.raises(ReferenceError, match=r"differs from PyTorch float64 by .* in log_probs"):
        reference.check_against_pytorch(other, tokens[:, 0], state)
