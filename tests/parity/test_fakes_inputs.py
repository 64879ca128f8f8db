"""The proof for every input kind: a file whose input stage is wrong (a features model's
normalization left out, two of its features read in the other order, a one-hot table
one row off) fails by at least 10x its allowance; a correct one that rounds differently
(every new state a few ulp off) passes. Random small models of every arch."""

from __future__ import annotations

import fakes
import numpy as np
import onnx
import pytest
import torch

from rnn_export.checkpoint import save_checkpoint
from rnn_export.config import ModelConfig
from rnn_export.data import Vocabulary
from rnn_export.export import export_onnx
from rnn_export.models import build_model
from rnn_export.parity import ParityError, verify_parity

pytestmark = pytest.mark.parity

MARGIN = 10.0
SHORT_STREAM = 300
V, F = 12, 6
VOCAB = Vocabulary(("<unk>", *"abcdefghijk"), unk_id=0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    built = {}

    def get(arch, kind):
        if (arch, kind) not in built:
            torch.manual_seed(0)
            frames = kind == "features"
            config = ModelConfig(
                arch,
                0 if frames else V,
                ("a", "b", "c"),
                hidden_size=16,
                num_layers=1 if arch == "cell" else 2,
                input_kind=kind,
                input_size=F if frames else None,
            )
            model = build_model(config).eval()
            if frames:
                model.frames.mean.copy_(torch.randn(F) * 2)
                model.frames.scale.copy_(torch.rand(F) * 3 + 0.5)
            run = root / f"{arch}-{kind}"
            training = {"imported": {"source": "generated"}}
            save_checkpoint(run, model, None if frames else VOCAB, None, training, {})
            built[arch, kind] = (run, export_onnx(run, root / f"{arch}-{kind}.onnx"))
        return built[arch, kind]

    return get


def _verdict(path, run):
    try:
        return verify_parity(path, run, stream_steps=SHORT_STREAM)
    except ParityError as e:
        return e.report


CASES = [(kind, name) for kind, fakes_ in fakes.INPUT_BROKEN.items() for name in fakes_]


@pytest.mark.parametrize("arch", ["cell", "stacked", "gru", "lstm"])
@pytest.mark.parametrize("kind, name", CASES)
def test_a_wrong_input_stage_fails_by_a_wide_margin(exported, tmp_path, arch, kind, name):
    run, path = exported(arch, kind)
    broken = fakes.INPUT_BROKEN[kind][name](onnx.load(path))
    onnx.save(broken, tmp_path / "broken.onnx")
    report = _verdict(tmp_path / "broken.onnx", run)
    assert not report.passed
    assert report.deciding().ratio >= MARGIN, (name, report.summary_line())


@pytest.mark.parametrize("arch", ["cell", "stacked", "gru", "lstm"])
@pytest.mark.parametrize("kind", ["features", "onehot"])
def test_a_correct_file_that_rounds_differently_passes(exported, tmp_path, arch, kind):
    run, path = exported(arch, kind)
    onnx.save(fakes.ulp_scaled(onnx.load(path)), tmp_path / "ulp.onnx")
    for candidate in (path, tmp_path / "ulp.onnx"):
        report = _verdict(candidate, run)
        assert report.passed, report.summary_line()
        assert np.isfinite(report.deciding().ratio)
