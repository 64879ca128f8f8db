"""How good a deployed model is: accuracy, per-class precision and recall, confusion matrix.

The model file runs through the torch-free runtime (StreamModel.predict: padded batches
through the main graph, the numbers a stream gives), on a folder dataset's every text or
on a RUN_DIR's own validation split (the split training reported its val_accuracy on,
rebuilt from the run's data spec). Texts are matched to the model's classes by label
name, so a folder's classes may be a subset of the model's, in any order.

A features model is evaluated on float frames (rnn_export.frames): every sequence of a
.npz or .ts file, or a RUN_DIR's held-out test split (its validation split where the run
has no test file).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnn_export.errors import InputError


class EvaluationError(InputError):
    """A dataset or checkpoint that cannot be evaluated against this model file."""


@dataclass(frozen=True)
class EvaluationReport:
    """The figures of one evaluation.

    Args:
        model: the model file.
        source: where the texts came from ("folder DIR" or "validation split of RUN_DIR").
        labels: the model's class names (index = class id).
        confusion: int64 (C, C): row = true class, column = predicted class.
        skipped: texts left out: characters a vocabulary without an unknown token cannot
            read.
        unit: what was classified, for people: "texts", or "sequences" of frames.
    """

    model: str
    source: str
    labels: tuple[str, ...]
    confusion: np.ndarray
    skipped: int = 0
    unit: str = "texts"

    @property
    def total(self) -> int:
        return int(self.confusion.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    def classes(self) -> list[dict]:
        """Per class: support (true texts), predicted, precision and recall (None where
        the denominator is 0)."""
        rows = []
        for i, label in enumerate(self.labels):
            support = int(self.confusion[i].sum())
            predicted = int(self.confusion[:, i].sum())
            hit = int(self.confusion[i, i])
            rows.append(
                {
                    "label": label,
                    "support": support,
                    "predicted": predicted,
                    "precision": hit / predicted if predicted else None,
                    "recall": hit / support if support else None,
                }
            )
        return rows

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "source": self.source,
            "texts": self.total,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "skipped": self.skipped,
            "classes": self.classes(),
            "confusion": {
                "rows": "true class",
                "columns": "predicted class",
                "labels": list(self.labels),
                "matrix": self.confusion.tolist(),
            },
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def format_table(self) -> str:
        width = max(len("class"), *(len(label) for label in self.labels))
        lines = [
            f"{self.model} on the {self.source}",
            f"accuracy {self.accuracy:.4f} ({self.correct:,} of {self.total:,} {self.unit})"
            + (f"; {self.skipped:,} texts skipped (characters outside the vocabulary)"
               if self.skipped else ""),
            f"{'class':<{width}}  {'support':>7}  {'predicted':>9}  {'precision':>9}  "
            f"{'recall':>6}",
        ]  # fmt: skip
        for row in self.classes():
            precision, recall = (
                "-" if row[k] is None else f"{row[k]:.4f}" for k in ("precision", "recall")
            )
            lines.append(
                f"{row['label']:<{width}}  {row['support']:>7,}  {row['predicted']:>9,}  "
                f"{precision:>9}  {recall:>6}"
            )
        return "\n".join(lines)

    def plot_confusion(self) -> bytes:
        """The confusion matrix as a PNG (its bytes): counts, rows = true class."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        C = len(self.labels)
        size = min(4 + 0.45 * C, 30)
        fig, ax = plt.subplots(figsize=(size, size))
        ax.imshow(self.confusion, cmap="Blues")
        ax.set_xticks(range(C), self.labels, rotation=90)
        ax.set_yticks(range(C), self.labels)
        ax.set(xlabel="predicted class", ylabel="true class")
        ax.set_title(f"accuracy {self.accuracy:.4f} on {self.total:,} {self.unit}")
        if C <= 30:
            high = self.confusion.max()
            for (i, j), n in np.ndenumerate(self.confusion):
                if n:
                    color = "white" if n > high / 2 else "black"
                    ax.text(j, i, str(n), ha="center", va="center", color=color, fontsize=8)
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=100)
        plt.close(fig)
        return png.getvalue()


def evaluate_model(
    model_path: str | Path,
    *,
    data_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    threads: int = 1,
) -> EvaluationReport:
    """Evaluate a model file on a folder dataset's texts or a RUN_DIR's validation split.

    Args:
        model_path: a .onnx file made by `rnn-export convert`.
        data_dir: a folder dataset (rnn_export.data.read_folder): every text of it; for
            a features model a .npz or .ts file (rnn_export.frames): every sequence.
        checkpoint: a RUN_DIR: its own validation split (the model file must have been
            exported from it); for a features model its test split, where it has one.
            Exactly one of data_dir and checkpoint.
        threads: onnxruntime intra-op threads.

    Raises:
        EvaluationError: neither or both sources, a folder label the model does not
            have, an imported RUN_DIR (no validation split), a model file of another
            checkpoint, no text left to evaluate.
    """
    import rnn_runtime

    if (data_dir is None) == (checkpoint is None):
        raise EvaluationError("evaluate needs --data DIR or --checkpoint RUN_DIR (one of them)")
    model = rnn_runtime.open_model(model_path, threads=threads)
    if model.tokenizer is None:
        texts, source = _frame_sequences(model, data_dir, checkpoint, model_path)
    elif data_dir is not None:
        from rnn_export.data import read_folder

        samples = read_folder(data_dir)
        texts = [(text, label) for label, lines in samples.items() for text in lines]
        source = f"folder {data_dir}"
    else:
        texts, source = _validation_texts(model, Path(checkpoint), model_path)
    labels = model.labels
    ids = {label: i for i, label in enumerate(labels)}
    foreign = sorted({label for _, label in texts} - ids.keys())
    if foreign:
        raise EvaluationError(
            f"{data_dir}: the classes {foreign[:5]} are not labels of {model_path}, whose "
            f"labels are {list(labels)[:10]}"
        )
    tokenizer = model.tokenizer
    readable = texts
    if (
        tokenizer is not None and tokenizer.unk_id is None
    ):  # such texts cannot be read: left out and counted
        readable = [(t, y) for t, y in texts if not tokenizer.count_unknown(t)]
    if not readable:
        raise EvaluationError(
            f"no text to evaluate in the {source}: {len(texts)} texts, none of them readable "
            f"by {model_path} (characters outside a vocabulary without an unknown token)"
        )
    predictions = model.predict([t for t, _ in readable])
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for (_, label), prediction in zip(readable, predictions, strict=True):
        confusion[ids[label], prediction.label_id] += 1
    unit = "texts" if tokenizer is not None else "sequences"
    skipped = len(texts) - len(readable)
    return EvaluationReport(str(model_path), source, labels, confusion, skipped, unit)


def _frame_sequences(model, path, run_dir, model_path) -> tuple[list, str]:
    """[((T, F) frames, label name)] of a .npz or .ts file, or of a RUN_DIR's test split
    (its validation split where it has no test file)."""
    from rnn_export.frames import load_frames, read_frames

    if path is not None:
        labels, frames = read_frames(path)
        source = f"file {path}"
    else:
        dataset = load_frames(_run_data(model, Path(run_dir), model_path, "a .npz or .ts file"))
        labels = dataset.labels
        held_out = "test" if dataset.test is not None else "validation"
        frames = dataset.test if dataset.test is not None else dataset.val
        source = f"{held_out} split of {run_dir}"
    rows = zip(frames.x, frames.lengths, frames.labels, strict=True)
    return [(x[:n], labels[y]) for x, n, y in rows], source


def _run_data(model, run_dir: Path, model_path, other: str) -> dict:
    """The data spec of the RUN_DIR that model_path was exported from."""
    from rnn_export.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run_dir)
    if model.metadata.checkpoint_sha256 != ckpt.sha256:
        raise EvaluationError(ckpt.mismatch(model.metadata.checkpoint_sha256, model_path))
    if ckpt.data is None:
        raise EvaluationError(
            f"{run_dir}: an imported model has no validation split (no training data); "
            f"evaluate it on {other} with --data"
        )
    return ckpt.data


def _validation_texts(model, run_dir: Path, model_path) -> tuple[list, str]:
    """[(text, label name)] of a RUN_DIR's validation split, once the file is its export."""
    from rnn_export.data import load_dataset

    dataset = load_dataset(_run_data(model, run_dir, model_path, "a folder dataset"))
    return [(t, dataset.labels[y]) for t, y in dataset.val], f"validation split of {run_dir}"
