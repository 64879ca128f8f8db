"""The machine's limit for a model's arithmetic: onnxruntime's own matrix products at the
shapes of one recurrent step, timed by the bench in the same run as what it measures.

One step of any exported model is a few matrix products (per layer the recurrent product
and, above layer 0, the input product, with 3H or 4H gate rows for GRU and LSTM; then the
output head) plus elementwise work (the Gather of layer 0's folded input term, the
activations, LogSoftmax). The products are read from the file's own step model, so the
roofline follows whatever the export wrote. The roofline of N rows is one onnxruntime
session holding exactly those products as independent Gemms at N rows, called through
IOBinding: the least time onnxruntime itself needs for the step's arithmetic at that
thread count. A pool step pays one call per step, so its roofline holds the products
once (one call's fixed cost included); an offline batch runs every step in one call, so
its roofline holds them `repeat` times per call and counts a repeat's share (the fixed
cost spread as the real graph spreads it). A pool step or an offline batch is then
reported as roofline time / its own time (1.0 = nothing but the products).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Ops whose second input, when it is a weight (an initializer), is a product's right side.
_PRODUCT_OPS = ("Gemm", "MatMul")


@dataclass(frozen=True)
class Product:
    """One matrix product of a step: (N, k) times (k, m); head = it computes the logits."""

    k: int
    m: int
    head: bool

    def flops(self, rows: int) -> int:
        return 2 * rows * self.k * self.m


def step_products(step_model: bytes) -> tuple[Product, ...]:
    """The matrix products of one step, read from a step model's graph.

    Args:
        step_model: a serialized step model (token and per-layer states in, log_probs and
            new states out), as embedded in every exported file.

    Returns:
        One Product per Gemm/MatMul node whose right side is a weight, in graph order;
        head is True for the product whose result LogSoftmax reads.

    Raises:
        ValueError: the graph has no such product (not a step model of this toolkit).
    """
    import onnx

    graph = onnx.load_from_string(step_model).graph
    weights = {t.name: tuple(t.dims) for t in graph.initializer}
    logits = {n.input[0] for n in graph.node if n.op_type == "LogSoftmax"}
    products = []
    for node in graph.node:
        if node.op_type not in _PRODUCT_OPS or len(node.input) < 2:
            continue
        shape = weights.get(node.input[1])
        if shape is None or len(shape) != 2:
            continue
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        m, k = shape if trans_b else shape[::-1]
        products.append(Product(k=int(k), m=int(m), head=node.output[0] in logits))
    if not products:
        raise ValueError("the step model has no matrix product with a weight operand")
    return tuple(products)


# An offline batch's roofline computes the products this many times per call, so that one
# call's fixed cost is spread over many steps, as in the main graph.
OFFLINE_REPEAT = 16


def _weight(rng: np.random.Generator, p: Product) -> np.ndarray:
    """A random (m, k) weight in the step model's layout (transB=1)."""
    return (rng.standard_normal((p.m, p.k)) / np.sqrt(p.k)).astype(np.float32)


def _serialized(nodes, inputs, outputs, inits, name: str) -> bytes:
    """The model of one graph of Gemm nodes, at opset 14."""
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    opsets = [helper.make_opsetid("", 14)]
    model = helper.make_model(
        graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)
    )
    return model.SerializeToString()


class _BoundRunner:
    """n calls of one session's IOBinding, called as the runtime calls (bound_run); the
    subclass sets self._run."""

    def run(self, n: int) -> None:
        """n calls (each computing the model's products once, or `repeat` times)."""
        run = self._run
        for _ in range(n):
            run()


def products_model(
    products: tuple[Product, ...], rows: int, *, repeat: int = 1, seed: int = 0
) -> bytes:
    """A model computing these products at `rows` rows, each `repeat` times, independently.

    Inputs x{i} (rows, k_i) and outputs y{i}_{r} (rows, m_i); the weights are random
    initializers in the step model's layout (transB=1), one per product and shared by its
    repeats as a recurrence shares them over time, so onnxruntime runs the same kernels
    on the same shapes.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inputs, outputs, inits = [], [], [], []
    for i, p in enumerate(products):
        inits.append(numpy_helper.from_array(_weight(rng, p), f"w{i}"))
        inputs.append(helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [rows, p.k]))
        for r in range(repeat):
            y = f"y{i}_{r}"
            nodes.append(helper.make_node("Gemm", [f"x{i}", f"w{i}"], [y], transB=1))
            outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [rows, p.m]))
    return _serialized(nodes, inputs, outputs, inits, "roofline")


class ProductsRunner(_BoundRunner):
    """Calls the products model of `rows` rows through IOBinding, buffers preallocated.

    Attributes:
        rows: N.
        repeat: how many times one call computes the products.
        flops: floating-point operations of the products once (one step).
    """

    def __init__(self, products: tuple[Product, ...], rows: int, threads: int, repeat: int = 1):
        import onnxruntime as ort

        from rnn_runtime.session import bound_run, open_session

        self.rows, self.repeat = rows, repeat
        self.flops = sum(p.flops(rows) for p in products)
        self._session = open_session(
            products_model(products, rows, repeat=repeat),
            threads=threads,
            name="the roofline model",
        )
        rng = np.random.default_rng(1)
        self._binding = self._session.io_binding()
        self._buffers = []  # the arrays IOBinding points into must outlive it
        for i, p in enumerate(products):
            x = rng.standard_normal((rows, p.k)).astype(np.float32)
            self._buffers.append(x)
            self._binding.bind_ortvalue_input(f"x{i}", ort.OrtValue.ortvalue_from_numpy(x))
            for r in range(repeat):
                y = np.zeros((rows, p.m), dtype=np.float32)
                self._buffers.append(y)
                self._binding.bind_ortvalue_output(f"y{i}_{r}", ort.OrtValue.ortvalue_from_numpy(y))
        self._run = bound_run(self._session, self._binding)


def schedule_model(products: tuple[Product, ...], counts: list[int]) -> bytes:
    """The step products at each step's running rows, as the length-sorted Scan runs them.

    Args:
        products: the products every step pays (the recurrence: step_and_head's first).
        counts: n_t, the rows still running at step t (non-increasing, n_0 = B rows).

    Returns:
        A model computing, for every step t and product i, y{i}_{t} = x{i}_{t} w{i}^T
        with x{i}_{t} (n_t, k_i) an input of its own (ScheduleRunner binds the first n_t
        rows of one (B, k_i) array), each product an independent Gemm node.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    f32 = TensorProto.FLOAT
    inits, inputs, outputs, nodes = [], [], [], []
    for i, p in enumerate(products):
        inits.append(numpy_helper.from_array(_weight(rng, p), f"w{i}"))
        for t, n in enumerate(counts):
            inputs.append(helper.make_tensor_value_info(f"x{i}_{t}", f32, [n, p.k]))
            outputs.append(helper.make_tensor_value_info(f"y{i}_{t}", f32, [n, p.m]))
            nodes.append(helper.make_node("Gemm", [f"x{i}_{t}", f"w{i}"], [f"y{i}_{t}"], transB=1))
    return _serialized(nodes, inputs, outputs, inits, "schedule")


class ScheduleRunner(_BoundRunner):
    """Calls schedule_model through IOBinding: each step's inputs are views of the first
    n_t rows of one (B, k) array per product, the outputs preallocated.

    `run(n)` makes n calls, each computing every step's products once.
    """

    def __init__(self, products: tuple[Product, ...], counts: list[int], threads: int):
        import onnxruntime as ort

        from rnn_runtime.session import bound_run, open_session

        rng = np.random.default_rng(1)
        session = open_session(
            schedule_model(products, counts), threads=threads, name="the schedule model"
        )
        binding = session.io_binding()
        self._session, self._binding = session, binding
        self._buffers = []  # the arrays IOBinding points into must outlive it
        for i, p in enumerate(products):
            x = rng.standard_normal((counts[0], p.k)).astype(np.float32)
            self._buffers.append(x)
            for t, n in enumerate(counts):
                y = np.zeros((n, p.m), dtype=np.float32)
                self._buffers.append(y)
                binding.bind_ortvalue_input(f"x{i}_{t}", ort.OrtValue.ortvalue_from_numpy(x[:n]))
                binding.bind_ortvalue_output(f"y{i}_{t}", ort.OrtValue.ortvalue_from_numpy(y))
        self._run = bound_run(session, binding)


def running_counts(lengths: np.ndarray) -> list[int]:
    """n_t for t < max(lengths): how many rows the length-sorted Scan runs at step t."""
    return [int((lengths > t).sum()) for t in range(int(lengths.max()))]


def step_and_head(products: tuple[Product, ...]) -> tuple[tuple[Product, ...], tuple]:
    """The products every token pays (the recurrence) and those once per row (the head)."""
    return tuple(p for p in products if not p.head), tuple(p for p in products if p.head)


class OfflineRoofline:
    """The products of one offline batch, timed as the bench reports them: the roofline
    (each real token's share of one step's recurrence at B rows, OFFLINE_REPEAT steps a
    call to spread its fixed cost, and the head once per row) and, with schedule, the
    sorted schedule (ScheduleRunner: the recurrence at each step's running rows, and the
    head; the bench leaves it out at B == 1, where the main graph runs the RNN operator).

    Attributes:
        runs: {"step", "head"[, "schedule"]: run(n)}, to time with the batch itself.
    """

    def __init__(
        self,
        products: tuple[Product, ...],
        lengths: np.ndarray,
        threads: int,
        schedule: bool = True,
    ):
        step, head = step_and_head(products)
        self._rows, self._real = int(lengths.size), int(lengths.sum())
        self.runs = {
            "step": ProductsRunner(step, self._rows, threads, repeat=OFFLINE_REPEAT).run,
            "head": ProductsRunner(head, self._rows, threads, repeat=OFFLINE_REPEAT).run,
        }
        if schedule:
            self.runs["schedule"] = ScheduleRunner(step, running_counts(lengths), threads).run

    def seconds(self, t: dict) -> dict[str, float | None]:
        """{"roofline_s", "schedule_s" (None without schedule)} from t: the median seconds
        per call of each of `runs`, by the same names."""
        step_s, head_s = t["step"] / OFFLINE_REPEAT, t["head"] / OFFLINE_REPEAT
        return {
            "roofline_s": self._real / self._rows * step_s + head_s,
            "schedule_s": t["schedule"] + head_s if "schedule" in t else None,
        }
