"""A graph checked against the metadata it carries: names, types and shapes.

The metadata (rnn_runtime.metadata) promises the graph's inputs and outputs, the number
of classes, the hidden size and the layers; a file whose graph says otherwise would open
and then fail at its first step with an untyped broadcast error, or give rows of the
wrong width. `check_sizes` holds a graph's class count and state shapes to the metadata
(records.check_signature calls it for the main graph), `check_step_signature` checks the
step model (embedded, or the graph of a step file); each refuses at open with a
one-line MetadataError naming both numbers. Standard library only (it imports nothing
of the contract, which imports it).
"""

from __future__ import annotations

from rnn_runtime.errors import MetadataError


def check_sizes(meta, graph: str, classes, states) -> None:
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


def check_step_signature(meta, outputs, name: str) -> None:
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
    check_sizes(
        meta,
        name,
        shapes[step.log_probs][-1],
        [(o, shapes[o]) for _, o in step.states],
    )
