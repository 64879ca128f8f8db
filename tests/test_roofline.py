"""rnn_export.roofline: the step's products read from the file, and a products model that
computes exactly those products (checked against numpy, not timed)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from rnn_export.config import ModelConfig
from rnn_export.data import Vocabulary
from rnn_export.export import build_onnx
from rnn_export.models import build_model
from rnn_export.roofline import (
    OFFLINE_REPEAT,
    OfflineRoofline,
    Product,
    ProductsRunner,
    ScheduleRunner,
    products_model,
    running_counts,
    schedule_model,
    step_and_head,
    step_products,
)


def _step_bytes(tmp_path, arch: str, H: int, L: int, C: int) -> bytes:
    """The step model embedded in a real export of a random model."""
    import rnn_runtime

    torch.manual_seed(0)
    vocab = Vocabulary(("<unk>", *"abcdef"))
    config = ModelConfig(arch, 7, tuple("xyzw"[:C]), hidden_size=H, num_layers=L)
    data = build_onnx(build_model(config).eval(), vocab, "0" * 64).data
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    return rnn_runtime.load_metadata(path).step.model_bytes()


@pytest.mark.parametrize(
    ("arch", "L", "want"),
    [
        ("cell", 1, [(12, 12, False), (12, 3, True)]),
        ("stacked", 1, [(12, 12, False), (12, 3, True)]),
        # Layer 0's input term is a Gather; above it, an input and a recurrent product.
        ("stacked", 3, [(12, 12, False)] * 5 + [(12, 3, True)]),
    ],
)
def test_step_products_reads_the_exported_step(tmp_path, arch, L, want):
    products = step_products(_step_bytes(tmp_path, arch, 12, L, 3))
    assert [(p.k, p.m, p.head) for p in products] == want
    step, head = step_and_head(products)
    assert len(head) == 1 and head[0].head and not any(p.head for p in step)


def test_step_products_handles_matmul_and_untransposed_weights():
    w = numpy_helper.from_array(np.zeros((5, 9), np.float32), "w")  # (k, m) for MatMul
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["y"]),
            helper.make_node("LogSoftmax", ["y"], ["z"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 9])],
        [w],
    )
    products = step_products(helper.make_model(g).SerializeToString())
    assert products == (Product(k=5, m=9, head=True),)


def test_step_products_refuses_a_graph_without_products():
    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    with pytest.raises(ValueError, match="no matrix product"):
        step_products(helper.make_model(g).SerializeToString())


def test_products_model_computes_the_products():
    import onnxruntime as ort

    products = (Product(4, 6, False), Product(6, 2, True))
    model = onnx.load_from_string(products_model(products, rows=3, repeat=2))
    onnx.checker.check_model(model, full_check=True)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        f"x{i}": rng.standard_normal((3, p.k)).astype(np.float32) for i, p in enumerate(products)
    }
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    assert set(got) == {"y0_0", "y0_1", "y1_0", "y1_1"}
    for i, p in enumerate(products):
        want = feeds[f"x{i}"].astype(np.float64) @ weights[f"w{i}"].astype(np.float64).T
        assert want.shape == (3, p.m)
        for r in range(2):
            np.testing.assert_allclose(got[f"y{i}_{r}"], want, rtol=1e-5, atol=1e-6)


def test_products_runner_counts_flops_of_one_step():
    products = (Product(8, 8, False), Product(8, 8, False), Product(8, 3, True))
    runner = ProductsRunner(products, rows=5, threads=1, repeat=4)
    assert runner.flops == 2 * 5 * (8 * 8 + 8 * 8 + 8 * 3)
    assert runner.repeat == 4
    runner.run(2)  # binds and runs: a wrong binding raises here


def test_running_counts_are_the_rows_still_going_at_each_step():
    assert running_counts(np.array([3, 1, 2, 3])) == [4, 3, 2]
    assert running_counts(np.array([1])) == [1]


def test_schedule_model_computes_each_steps_products_on_its_running_rows():
    import onnxruntime as ort

    products, counts = (Product(4, 6, False), Product(4, 5, False)), [3, 2, 2, 1]
    model = onnx.load_from_string(schedule_model(products, counts))
    onnx.checker.check_model(model, full_check=True)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    rng = np.random.default_rng(0)
    x = [rng.standard_normal((3, 4)).astype(np.float32) for _ in products]
    feeds = {f"x{i}_{t}": x[i][:n] for i in range(2) for t, n in enumerate(counts)}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    got = dict(zip(outputs, session.run(None, feeds), strict=True))
    assert set(got) == {f"y{i}_{t}" for i in range(2) for t in range(4)}
    for i, p in enumerate(products):
        for t, n in enumerate(counts):
            want = x[i][:n].astype(np.float64) @ weights[f"w{i}"].astype(np.float64).T
            assert want.shape == (n, p.m)
            np.testing.assert_allclose(got[f"y{i}_{t}"], want, rtol=1e-5, atol=1e-6)


def test_schedule_runner_binds_and_runs():
    runner = ScheduleRunner((Product(8, 8, False), Product(8, 16, False)), [5, 3, 1], threads=1)
    runner.run(2)  # a wrong binding (name, shape) raises here


def test_offline_roofline_counts_each_real_tokens_share_and_the_head_once():
    products = (Product(8, 8, False), Product(8, 3, True))
    lengths = np.array([4, 1, 3])  # 8 real tokens in 3 rows
    roofline = OfflineRoofline(products, lengths, threads=1)
    assert set(roofline.runs) == {"step", "head", "schedule"}
    for run in roofline.runs.values():
        run(1)  # a wrong binding raises here
    t = {"step": 16.0, "head": 32.0, "schedule": 5.0}  # seconds per call, by name
    s = roofline.seconds(t)
    head = 32.0 / OFFLINE_REPEAT
    assert s["roofline_s"] == pytest.approx(8 / 3 * 16.0 / OFFLINE_REPEAT + head)
    assert s["schedule_s"] == pytest.approx(5.0 + head)
    without = OfflineRoofline(products, lengths, threads=1, schedule=False)
    assert set(without.runs) == {"step", "head"}
    assert without.seconds({"step": 16.0, "head": 32.0})["schedule_s"] is None
