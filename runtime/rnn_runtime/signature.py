"""A graph checked against the metadata it carries: names, types and shapes.

The metadata (rnn_runtime.metadata) promises the graph's inputs and outputs, the number
of classes, the hidden size and the layers; a file whose graph says otherwise would open
and then fail at its first step with an untyped broadcast error, or give rows of the
wrong width. `check_signature` checks the main graph, `check_step_signature` the step
model (embedded, or the graph of a step file), each at open with a one-line
MetadataError naming both numbers.
"""

from __future__ import annotations

from rnn_runtime.errors import MetadataError
from rnn_runtime.metadata import ORT_DTYPES, ModelMetadata, TensorSpec


def check_signature(meta: ModelMetadata, inputs, outputs) -> None:
    """Check that the graph's inputs and outputs are those the metadata promises.

    Args:
        inputs, outputs: onnxruntime NodeArg lists (`session.get_inputs()`,
            `session.get_outputs()`); each has .name, .shape and .type.

    Raises:
        MetadataError: naming the first input or output that contradicts the metadata.
    """
    got_in = {a.name: a for a in inputs}
    got_out = {a.name: a for a in outputs}
    want_in = [meta.tokens, meta.lengths] + [
        TensorSpec(s.input, s.shape, s.dtype) for s in meta.states
    ]
    want_out = [meta.log_probs] + [TensorSpec(s.output, s.shape, s.dtype) for s in meta.states]
    for kind, want, got in (("input", want_in, got_in), ("output", want_out, got_out)):
        if sorted(got) != sorted(w.name for w in want):
            raise MetadataError(
                f"graph {kind}s are {sorted(got)}; the metadata promises "
                f"{sorted(w.name for w in want)}"
            )
        for spec in want:
            arg = got[spec.name]
            dtype = ORT_DTYPES.get(arg.type, arg.type)
            if dtype != spec.dtype:
                raise MetadataError(
                    f"graph {kind} {spec.name!r} has type {dtype}; "
                    f"the metadata promises {spec.dtype}"
                )
            shape = list(arg.shape)
            if len(shape) != len(spec.shape):
                raise MetadataError(
                    f"graph {kind} {spec.name!r} has rank {len(shape)} {tuple(shape)}; "
                    f"the metadata promises {spec.shape}"
                )
            for got_dim, want_dim in zip(shape, spec.shape, strict=True):
                # A symbolic metadata dim must be symbolic in the graph; a fixed one must match.
                fixed = isinstance(got_dim, int)
                if (want_dim in ("B", "T")) == fixed or (fixed and got_dim != want_dim):
                    raise MetadataError(
                        f"graph {kind} {spec.name!r} has shape {tuple(shape)}; "
                        f"the metadata promises {spec.shape}"
                    )
    _check_sizes(
        meta, "the graph", meta.log_probs.shape[-1], [(s.output, s.shape) for s in meta.states]
    )


def _check_sizes(meta: ModelMetadata, graph: str, classes, states) -> None:
    """The graph's class count and state shapes against model.num_classes, hidden_size
    and num_layers (a state is (B, H), or (L, B, H) with its layers first).

    Args:
        graph: how the message names the graph.
        classes: the graph's log_probs width.
        states: (name, shape) of the graph's state outputs.
    """
    if classes != meta.num_classes:
        raise MetadataError(
            f"the metadata promises {meta.num_classes} classes (model.num_classes, "
            f"{len(meta.labels)} labels); {graph}'s log_probs has {classes}"
        )
    for name, shape in states:
        if shape[-1] != meta.hidden_size:
            raise MetadataError(
                f"the metadata promises hidden size {meta.hidden_size}; {graph}'s state "
                f"{name!r} has {shape[-1]} (shape {tuple(shape)})"
            )
        if len(shape) == 3 and shape[0] != meta.num_layers:
            raise MetadataError(
                f"the metadata promises {meta.num_layers} layers; {graph}'s state "
                f"{name!r} has {shape[0]} (shape {tuple(shape)})"
            )


def check_step_signature(meta: ModelMetadata, outputs, name: str) -> None:
    """Check the step model's output shapes: log_probs (B, C), each state (B, H), with C
    and H fixed and equal to the metadata's (its names, types and ranks are checked by
    session.open_step_session).

    Args:
        outputs: onnxruntime NodeArg list of the step model (`session.get_outputs()`).
        name: how the message names the step model.
    """
    shapes = {a.name: tuple(a.shape) for a in outputs}
    step = meta.step
    for out in (step.log_probs, *(o for _, o in step.states)):
        if not isinstance(shapes[out][-1], int):
            raise MetadataError(
                f"{name}'s output {out!r} has shape {shapes[out]}; expected a fixed last "
                "dimension (the classes or the hidden size)"
            )
    _check_sizes(
        meta,
        name,
        shapes[step.log_probs][-1],
        [(o, shapes[o]) for _, o in step.states],
    )
