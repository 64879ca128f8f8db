"""`rnn-export inspect`: a model file's metadata and signature, torch-free."""

from __future__ import annotations

from pathlib import Path

import click


def _signature(args) -> list[dict]:
    """onnxruntime NodeArgs as [{"name", "shape", "dtype"}]; symbolic dims stay strings."""
    from rnn_runtime.metadata import ORT_DTYPES

    return [
        {"name": a.name, "shape": list(a.shape), "dtype": ORT_DTYPES.get(a.type, a.type)}
        for a in args
    ]


def describe_model(path: Path) -> dict:
    """Open a model file with the torch-free runtime: its metadata and I/O signature."""
    import rnn_runtime

    model = rnn_runtime.open_model(path)
    return {
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "metadata": model.metadata.to_dict(),
        "inputs": _signature(model.session.get_inputs()),
        "outputs": _signature(model.session.get_outputs()),
    }


def tensors_line(tensors: list[dict]) -> str:
    return "; ".join(
        f"{t['name']} {t['dtype']} ({', '.join(str(d) for d in t['shape'])})" for t in tensors
    )


def _step_line(step: dict | None, frame: str) -> list[str]:
    if step is None:
        return ["step model  none (the runtime steps through the main graph)"]
    states = ", ".join(f"{x['input']} -> {x['output']}" for x in step["states"])
    signature = f"{step['input']} {frame}, {states} (B, H) -> {step['log_probs']} (B, C)"
    if step.get("in_file"):
        return [f"step model  this file (a step file, no main graph): {signature}"]
    return [f"step model  {step['bytes']:,} bytes, sha256 {step['sha256'][:16]}...: {signature}"]


def _input_lines(model: dict, vocab: dict | None, text: dict) -> list[str]:
    """The input stage: the vocabulary of a model that reads characters, the frame size
    and normalization of a features model."""
    import json

    stage = model["input"]
    if vocab is None:
        return [
            f"input       features: F={stage['size']} float32 values per step, normalized "
            "in the graph by the training split's per-feature mean and scale"
        ]
    unk_id = vocab["unk_id"]
    chars = "".join(t for i, t in enumerate(vocab["tokens"]) if i != unk_id)
    unk = "none" if unk_id is None else f"{unk_id} ({vocab['tokens'][unk_id]!r})"
    how = {"tokens": f"an embedding of size E={stage['size']}", "onehot": "one-hot vectors"}
    from rnn_runtime.text import describe

    return [
        f"input       {stage['kind']}: characters as {how[stage['kind']]}",
        f"vocab       {len(vocab['tokens'])} tokens, unknown id {unk}, "
        f"characters {json.dumps(chars, ensure_ascii=False)}",
        f"text        {describe((text['unicode'], text['lowercase']))}",
    ]


@click.command("inspect")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for programs.")
def inspect_command(model_path, as_json):
    """Print a model file's metadata and input/output signature.

    Needs only onnxruntime (no torch, no onnx). Exits 2, saying what the path
    is, for a path that is not a model file (missing, a folder such as a RUN_DIR,
    not ONNX, external data, non-finite weights) or a file without valid
    rnn-export metadata (none, an unknown schema version, a value past a limit).
    """
    import json

    info = describe_model(model_path)  # a bad file: exit 2 with one line (the group)
    if as_json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    meta = info["metadata"]
    model, vocab, prov = meta["model"], meta["vocab"], meta["provenance"]
    libraries = ", ".join(f"{k} {v}" for k, v in sorted(prov.get("libraries", {}).items()))
    lines = [
        f"{info['path']}: rnn-export model, schema {meta['schema_version']}, "
        f"opset {prov['opset']}, {info['size_bytes']:,} bytes",
        f"model       {model['arch']}, L={model['num_layers']}, H={model['hidden_size']}, "
        f"nonlinearity {model['nonlinearity']}, V={model['vocab_size']}, "
        f"C={model['num_classes']}, head {model['head']['output']} after the "
        f"{model['head']['steps']} step",
        *_input_lines(model, vocab, meta["text"]),
        "labels      " + ", ".join(f"{i} {label}" for i, label in enumerate(meta["labels"])),
    ]
    for s in meta["io"]["states"]:
        shape = ", ".join(str(d) for d in s["shape"])
        lines.append(
            f"state       {s['input']} -> {s['output']}  ({shape}) {s['dtype']}, "
            f"initial {s['initial']}"
        )
    lines += [
        f"inputs      {tensors_line(info['inputs'])}",
        f"outputs     {tensors_line(info['outputs'])}",
        f"checkpoint  sha256 {prov['checkpoint_sha256']}",
        *_step_line(meta["step"], "(B,)" if vocab is not None else "(B, F)"),
        f"made by     rnn-export {prov.get('tool_version')} with {libraries}",
    ]
    click.echo("\n".join(lines))
