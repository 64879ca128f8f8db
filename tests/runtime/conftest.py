"""Fixtures of the runtime's tests: a tiny random model of each arch, exported once."""

from __future__ import annotations

import pytest
from reference import CHARS, LABELS, export_tiny

from rnn_runtime import open_model


@pytest.fixture(scope="session", params=["cell", "stacked"])
def exported(request, tmp_path_factory):
    """(torch model in eval mode, path of its .onnx) for a tiny random model of each arch."""
    import torch

    from rnn_export.config import ModelConfig
    from rnn_export.models import build_model

    arch = request.param
    torch.manual_seed(0)
    vocab = ["<unk>", *CHARS]
    config = ModelConfig(
        arch, len(vocab), LABELS, hidden_size=16, num_layers=1 if arch == "cell" else 2
    )
    model = build_model(config).eval()
    path = export_tiny(model, vocab, tmp_path_factory.mktemp(arch) / f"{arch}.onnx")
    return model, path


@pytest.fixture(scope="session")
def rt_model(exported):
    return open_model(exported[1])


@pytest.fixture(scope="session")
def growing(exported, tmp_path_factory):
    """A relu model of the same arch whose state grows about H-fold a step, so that it
    overflows float32 after some 30 steps from zero, or at once from a huge state
    (a diverged model, as training with relu can make): StreamModel opened on it."""
    import torch

    from rnn_export.config import ModelConfig
    from rnn_export.models import build_model

    arch = exported[0].config.arch
    vocab = ["<unk>", *CHARS]
    config = ModelConfig(
        arch,
        len(vocab),
        LABELS,
        hidden_size=16,
        num_layers=1 if arch == "cell" else 2,
        nonlinearity="relu",
    )
    model = build_model(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    path = export_tiny(model, vocab, tmp_path_factory.mktemp(f"{arch}-growing") / "grow.onnx")
    return open_model(path)


@pytest.fixture(scope="session")
def counting(tmp_path_factory):
    """A cell model whose state h[j] counts the tokens seen (exact in float32)."""
    import torch

    from rnn_export.config import ModelConfig
    from rnn_export.models import build_model

    vocab = ["<unk>", *CHARS]
    config = ModelConfig("cell", len(vocab), LABELS, hidden_size=4, nonlinearity="relu")
    model = build_model(config).eval()
    H = config.hidden_size
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.weight[:, 0] = 1.0  # every token's x[0] is 1
        model.i2h.weight[:, 0] = 1.0  # + 1 ...
        model.i2h.weight[:, H:] = torch.eye(H)  # ... to the state as it was
    path = export_tiny(model, vocab, tmp_path_factory.mktemp("counting") / "count.onnx")
    return open_model(path)
