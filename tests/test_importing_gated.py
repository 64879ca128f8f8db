"""import_weights for gru and lstm: a hand-written wrapper around nn.GRU / nn.LSTM
imported, exported and equal to the user's module from a non-zero state; misshapen gate
weights named with the shape of the arch they fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_importing import ATOL, CHARS, RTOL, _cell_state, _edit
from torch import nn

from rnn_export.data import Vocabulary
from rnn_export.importing import ImportWeightsError, import_weights


class GatedClassifier(nn.Module):
    """A hand-written classifier as a user would write it: the names PyTorch gives."""

    def __init__(self, kind, V, H, C, L):
        super().__init__()
        self.embedding = nn.Embedding(V, H)
        self.rnn = kind(H, H, L, batch_first=True)
        self.fc = nn.Linear(H, C)

    def forward(self, tokens, state):
        _, new = self.rnn(self.embedding(tokens), state)
        top = new[0][-1] if isinstance(new, tuple) else new[-1]
        return torch.log_softmax(self.fc(top), dim=-1), new


@pytest.mark.parametrize(("arch", "kind"), [("gru", nn.GRU), ("lstm", nn.LSTM)])
def test_a_hand_written_gated_state_dict_imports_and_exports(arch, kind, tmp_path):
    """V, H, L, C from the shapes (3H / 4H gate rows); the imported model, its ONNX file
    and the user's own module agree from a non-zero state (both LSTM states)."""
    import onnxruntime as ort

    from rnn_export.export import export_onnx

    torch.manual_seed(3)
    V, H, C, L = len(CHARS), 6, 3, 2
    user = GatedClassifier(kind, V, H, C, L).eval()
    torch.save(user.state_dict(), tmp_path / "w.pt")
    vocab = Vocabulary(tuple(CHARS), unk_id=None)
    ckpt = import_weights(tmp_path / "w.pt", arch, vocab, ["x", "y", "z"], tmp_path / "run")
    config = ckpt.config
    assert (config.arch, config.vocab_size, config.hidden_size, config.num_layers) == (
        arch,
        V,
        H,
        L,
    )
    assert config.nonlinearity == "tanh" and config.labels == ("x", "y", "z")
    tokens = torch.randint(0, V, (3, 7))
    gen = torch.Generator().manual_seed(1)
    states = tuple(torch.randn(L, 3, H, generator=gen) for _ in config.state_names)
    state = states if arch == "lstm" else states[0]
    with torch.no_grad():
        want_lp, want_state = user(tokens, state)
        got_lp, got_state = ckpt.model(tokens, state)
    torch.testing.assert_close(got_lp, want_lp, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(got_state, want_state, atol=ATOL, rtol=RTOL)
    path = export_onnx(tmp_path / "run", tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"tokens": tokens.numpy(), "lengths": np.full(3, 7, dtype=np.int64)}
    feeds |= {i: s.numpy() for (i, _), s in zip(config.state_names, states, strict=True)}
    outputs = ["log_probs", *(o for _, o in config.state_names)]
    got = session.run(outputs, feeds)
    want = [want_lp, *(want_state if arch == "lstm" else (want_state,))]
    for name, g, w in zip(outputs, got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), atol=ATOL, rtol=RTOL, err_msg=name)


def _gated_state(kind, V=5, H=4, C=3, L=1):
    torch.manual_seed(0)
    return GatedClassifier(kind, V, H, C, L).state_dict()


@pytest.mark.parametrize(
    ("arch", "state", "match"),
    [
        (
            "gru",
            lambda: _gated_state(nn.LSTM),
            r"tensor 'rnn.weight_ih_l0' has shape \(16, 4\); --arch gru with H=4 \(from "
            r"rnn.weight_hh_l0's columns\), input width X=4, C=3 expects \(12, 4\) \(4 gate "
            r"rows: the shape of --arch lstm\)",
        ),
        (
            "lstm",
            lambda: _gated_state(nn.GRU),
            r"tensor 'rnn.weight_ih_l0' has shape \(12, 4\); --arch lstm with .* expects "
            r"\(16, 4\) \(3 gate rows: the shape of --arch gru\)",
        ),
        (
            "lstm",
            lambda: _edit(_gated_state(nn.LSTM), rnn__bias_hh_l0=torch.zeros(15)),
            r"tensor 'rnn.bias_hh_l0' has shape \(15,\); --arch lstm with .* expects \(16,\)$",
        ),
        (
            "gru",
            lambda: _edit(_gated_state(nn.GRU, L=2), rnn__weight_hh_l1=None),
            r"do not match --arch gru with tokens input \(H=4, X=4, L=2, C=3 from the shapes\): "
            r"missing \['rnn.weight_hh_l1'\]",
        ),
        (
            "lstm",
            lambda: _cell_state(),
            r"expected one recurrent module \(tensors NAME.weight_ih_l0, NAME.weight_hh_l0, ... "
            r"of nn.RNN, nn.GRU or nn.LSTM\); found none; .* \(these are the names of --arch "
            r"cell\)",
        ),
    ],
    ids=["lstm-as-gru", "gru-as-lstm", "bias-shape", "missing-layer", "cell-as-lstm"],
)
def test_bad_gated_weights_name_the_tensor(tmp_path, arch, state, match):
    torch.save(state(), tmp_path / "w.pt")
    with pytest.raises(ImportWeightsError, match=match):
        import_weights(tmp_path / "w.pt", arch, list("abcde"), ["x", "y", "z"], tmp_path / "o")
    assert not (tmp_path / "o").exists()
