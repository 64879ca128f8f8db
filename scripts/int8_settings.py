"""The weight-type tables of docs/runtimes.md: quantize_dynamic's settings on this CPU.

    python scripts/int8_settings.py RUN_DIR [--exact N] [--data-size N]

For each setting (int8 or uint8 weights, per tensor or per channel, reduce_range), the
run's step file quantized as `rnn-export quantize` does with that setting, then verify's
int8 rule against PyTorch float32, and the first `--exact` texts run through onnx's
reference evaluator (MatMulInteger summed in int32, what a kernel that does not saturate
computes) to give how far this CPU's onnxruntime is from the file's exact integers.
`--data-size N`: the validation split of embedded_spec(seed=1, size=N) (the tests' texts)
instead of the run's own. Prints Markdown.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

SETTINGS = {
    "int8, per tensor": {"weight_type": "QInt8"},
    "int8, per channel": {"weight_type": "QInt8", "per_channel": True},
    "int8, `reduce_range`": {"weight_type": "QInt8", "reduce_range": True},
    "int8, per channel, `reduce_range`": {
        "weight_type": "QInt8",
        "per_channel": True,
        "reduce_range": True,
    },
    "uint8, per tensor": {"weight_type": "QUInt8"},
    "uint8, per channel": {"weight_type": "QUInt8", "per_channel": True},
}


def quantize_with(step: Path, out: Path, setting: dict) -> Path:
    """quantize_file with quantize_dynamic's keyword arguments replaced by `setting`."""
    import onnxruntime.quantization as oq

    from rnn_export.quantize import quantize_file

    original = oq.quantize_dynamic
    extra = dict(setting, weight_type=getattr(oq.QuantType, setting["weight_type"]))

    def patched(src, dst, **kwargs):
        return original(src, dst, **(kwargs | extra))

    oq.quantize_dynamic = patched
    try:
        return quantize_file(step, out).path
    finally:
        oq.quantize_dynamic = original


def exact_probabilities(path: Path, texts: list[np.ndarray]) -> np.ndarray:
    """(N, C) probabilities of each text run alone from the zero state by onnx's reference
    evaluator, one step per token as a stream runs it."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    proto = onnx.load(str(path))
    reference = ReferenceEvaluator(proto)
    token, *states = proto.graph.input
    out = []
    for ids in texts:
        state = {
            s.name: np.zeros((1, s.type.tensor_type.shape.dim[1].dim_value), np.float32)
            for s in states
        }
        for t in ids:
            log_probs, *new = reference.run(None, {token.name: np.array([t]), **state})
            state = {s.name: v for s, v in zip(states, new, strict=True)}
        out.append(np.exp(log_probs[0]))
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--exact", type=int, default=100, help="texts run in exact integers")
    parser.add_argument("--data-size", type=int, default=None, help="embedded_spec size")
    args = parser.parse_args()

    import torch

    from rnn_export.checkpoint import load_checkpoint
    from rnn_export.data import embedded_spec
    from rnn_export.export import export_onnx
    from rnn_export.parity.verify import _validation_split
    from rnn_export.quantize import verify_quantized
    from rnn_runtime import open_model

    ckpt = load_checkpoint(args.run_dir)
    data = embedded_spec(seed=1, size=args.data_size) if args.data_size else None
    validation = _validation_split(ckpt, data)
    print(
        "| weights | agreement | within 0.05 | max p error | mean p error | onnxruntime vs "
        "exact integers (max p difference) | agreement in exact integers |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        step = export_onnx(args.run_dir, Path(tmp) / "m.step.onnx", graph="step")
        for n, (name, setting) in enumerate(SETTINGS.items()):
            path = quantize_with(step, Path(tmp) / f"{n}.onnx", setting)
            report = verify_quantized(path, args.run_dir, data=data)
            model = open_model(path)
            texts = [model.encode(text) for text, _ in validation[: args.exact]]
            texts = [ids for ids in texts if ids.size]
            got = np.stack([model.stream().feed(ids).probabilities for ids in texts])
            exact = exact_probabilities(path, texts)
            with torch.inference_mode():
                want = np.stack(
                    [
                        np.exp(
                            ckpt.model.eval()(torch.from_numpy(ids[None].astype(np.int64)))[0][
                                0
                            ].numpy()
                        )
                        for ids in texts
                    ]
                )
            print(
                f"| {name} | {report.agreement:.2%} | {report.within:.2%} | "
                f"{report.max_prob_error:.3g} | {report.mean_prob_error:.3g} | "
                f"{np.abs(got - exact).max():.2g} | "
                f"{(exact.argmax(1) == want.argmax(1)).mean():.2%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
