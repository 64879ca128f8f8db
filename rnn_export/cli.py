"""The `rnn-export` command line: thin wrappers, one library call per command.

Heavy imports (torch, onnx) happen inside commands so that --help is instant and
`inspect` and `stream` run where torch and onnx are not installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rnn_export import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnn-export")
def main() -> None:
    """Train the notes' RNNs, export them to ONNX with explicit hidden state,
    verify parity with PyTorch, and stream them one step at a time."""


# --- train: imports torch and the training code only when it runs ---
@main.command("train")
@click.option(
    "--arch",
    required=True,
    type=click.Choice(["cell", "stacked"]),
    help="cell: the notes' hand-built RNN; stacked: the notes' nn.RNN wrapper.",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder with one UTF-8 .txt file per class (label = file name, one sample a "
    "line). Default: the embedded task (which marker letter A-D occurs most often).",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="RUN_DIR to write; an earlier checkpoint there is replaced only when the new "
    "one is complete.",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, help="Passes over the data [default: 8]."
)
@click.option(
    "--hidden-size",
    type=click.IntRange(min=1),
    default=128,
    show_default=True,
    help="H, the hidden state size.",
)
@click.option(
    "--num-layers",
    type=click.IntRange(min=1),
    default=None,
    help="L, stacked RNN layers [default: 2 for stacked; cell has exactly 1].",
)
@click.option(
    "--nonlinearity",
    type=click.Choice(["tanh", "relu", "identity"]),
    default="tanh",
    show_default=True,
    help="identity (cell only) is the notes' linear recurrence.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Samples per BPTT step [default: 64].",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Adam learning rate, decayed to 0 by a cosine schedule [default: 0.003].",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seeds the weights, the batch order, the split and the embedded task.",
)
def train_command(
    arch, data_dir, out, epochs, hidden_size, num_layers, nonlinearity, batch_size, lr, seed
):
    """Train a classifier and write its RUN_DIR (weights, config, vocabulary, metrics,
    curves.png).

    Without --data it trains on the embedded task. Prints the final validation
    accuracy. Exit 2 for bad data, options or --out; an interrupted run writes
    nothing and leaves an earlier checkpoint at --out intact.
    """
    from rnn_export import training
    from rnn_export.checkpoint import CheckpointError
    from rnn_export.config import ConfigError
    from rnn_export.data import DataError, embedded_spec, folder_spec

    data = embedded_spec(seed) if data_dir is None else folder_spec(data_dir, seed=seed)
    options = {"epochs": epochs, "batch_size": batch_size, "lr": lr}
    try:
        ckpt = training.train(
            arch,
            out,
            data=data,
            hidden_size=hidden_size,
            num_layers=num_layers,
            nonlinearity=nonlinearity,
            seed=seed,
            **{k: v for k, v in options.items() if v is not None},
        )
    except (DataError, ConfigError, CheckpointError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except OSError as e:
        click.echo(f"error: {e.filename}: {e.strerror}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo(f"interrupted: nothing written; {out} is as it was", err=True)
        sys.exit(130)
    m = ckpt.metrics
    click.echo(f"wrote {ckpt.run_dir}")
    click.echo(f"  model         {_model_line(ckpt.config)}")
    click.echo(f"  data          {data['source']} ({m['num_train']} train, {m['num_val']} val)")
    click.echo(f"  val_accuracy  {m['val_accuracy']:.4f}")
    click.echo(f"  train_loss    {m['train_loss']:.4f}")
    click.echo(f"  seconds       {m['train_seconds']:.1f}")
    click.echo(f"  sha256        {ckpt.sha256}")


def _model_line(config) -> str:
    return (
        f"{config.arch}, L={config.num_layers}, H={config.hidden_size}, "
        f"{config.nonlinearity}, V={config.vocab_size}, C={config.num_classes}"
    )


# --- end train ---


# --- stream: torch-free, imports only rnn_runtime (numpy, onnxruntime) ---
@main.command("stream")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option("--every-step", is_flag=True, help="Print after each character, not each line.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per output line.")
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="How many (label, probability) pairs to print.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Fail (exit 2) on a character outside the vocabulary instead of "
    "mapping it to the unknown token.",
)
@click.option(
    "--carry",
    is_flag=True,
    help="Keep the state across lines (default: each line is a separate text).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="onnxruntime intra-op threads.",
)
@click.option(
    "--provider",
    "providers",
    multiple=True,
    default=("CPUExecutionProvider",),
    show_default=True,
    help="onnxruntime execution provider, full name or cpu/cuda/tensorrt/dml (repeat for a "
    "priority list); an unavailable one is an error, never a silent fallback.",
)
def stream_command(model_path, every_step, as_json, top_k, strict, carry, threads, providers):
    """Read text from stdin and print the running prediction.

    By default each input line is a separate text and one line is printed per
    input line: the label and probability after its last character (tab
    separated; "-" for an empty line). Works line by line as you type, and from a
    pipe.
    """
    import json

    import rnn_runtime

    try:
        model = rnn_runtime.open_model(model_path, providers=providers, threads=threads)
    except (rnn_runtime.ModelFileError, rnn_runtime.MetadataError, rnn_runtime.ProviderError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    records = rnn_runtime.stream_lines(
        model.stream(strict=strict),
        iter(sys.stdin.readline, ""),
        every_step=every_step,
        carry=carry,
        k=top_k,
    )
    try:
        for record in records:
            if as_json:
                line = json.dumps(record, ensure_ascii=False)
            else:
                pairs = "\t".join(f"{label}\t{p:.4f}" for label, p in record["top_k"]) or "-"
                line = f"{record['char']}\t{pairs}" if every_step else pairs
            click.echo(line)  # click.echo flushes: output follows input line by line
    except rnn_runtime.StreamError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


# --- end stream ---


# --- verify: PyTorch against onnxruntime, per execution provider ---
@main.command("verify")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option(
    "--checkpoint",
    "run_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="The RUN_DIR the model was exported from (its sha256 must match the file's).",
)
@click.option(
    "--providers",
    default="cpu",
    show_default=True,
    help="cpu, cuda, cpu,cuda or all. One asked for by name that is unavailable fails; "
    "under 'all' it is skipped with the reason.",
)
@click.option(
    "--atol",
    type=click.FloatRange(min=0),
    default=1e-5,
    show_default=True,
    help="Absolute tolerance. An output passes when |onnx - torch| <= eff_atol + rtol * "
    "|torch| everywhere, with eff_atol = max(atol, 2 * noise) and noise = max |PyTorch "
    "float32 - PyTorch float64| in that case: the error an export as accurate as PyTorch "
    "float32 may have. See --strict.",
)
@click.option(
    "--rtol",
    type=click.FloatRange(min=0),
    default=1e-4,
    show_default=True,
    help="Relative tolerance (see --atol).",
)
@click.option(
    "--strict",
    is_flag=True,
    help="No allowance for PyTorch float32's own rounding: eff_atol = atol. Trained "
    "recurrences amplify rounding, so correct exports of trained models often fail this.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the full report as JSON here (also when a case fails).",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Draw the long stream's error against step index (drift) to this PNG.",
)
def verify_command(model_path, run_dir, providers, atol, rtol, strict, report_path, plot_path):
    """Check that MODEL.onnx computes what the checkpoint's PyTorch model computes.

    Runs both over batch sizes, lengths (1 to 1000), zero and random initial
    states, mixed lengths in one padded batch, the run's validation split, the
    model driven one token at a time and in random chunks, and a 10,000-step
    stream (drift). Prints a table of errors. The reference error is PyTorch
    float32's own error against the same model in float64 (noise): an output passes
    within max(atol, 2 * noise) + rtol * |torch| (atol alone with --strict). Exit 0
    when every case passes, 1 when any fails, 2 for usage errors (e.g. a model and
    checkpoint that do not belong together).
    """
    from rnn_export.parity import ParityError, ParityUsageError, verify_parity

    try:
        report = verify_parity(
            model_path, run_dir, providers=providers, atol=atol, rtol=rtol, strict=strict
        )
        failed = False
    except ParityUsageError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except ParityError as e:
        report, failed = e.report, True
    click.echo(report.format_table())
    try:
        if report_path is not None:
            report_path.write_text(report.to_json() + "\n", encoding="utf-8")
            click.echo(f"report written to {report_path}")
        if plot_path is not None:
            report.plot_drift(plot_path)
            click.echo(f"drift plot written to {plot_path}")
    except OSError as e:
        click.echo(f"error: cannot write {e.filename}: {e.strerror}", err=True)
        sys.exit(2)
    sys.exit(1 if failed else 0)


# --- end verify ---


# --- convert, inspect: convert imports torch and onnx; inspect only rnn_runtime ---
def _signature(args) -> list[dict]:
    """onnxruntime NodeArgs as [{"name", "shape", "dtype"}]; symbolic dims stay strings."""
    from rnn_runtime.metadata import ORT_DTYPES

    return [
        {"name": a.name, "shape": list(a.shape), "dtype": ORT_DTYPES.get(a.type, a.type)}
        for a in args
    ]


def _describe_model(path: Path) -> dict:
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


def _tensors_line(tensors: list[dict]) -> str:
    return "; ".join(
        f"{t['name']} {t['dtype']} ({', '.join(str(d) for d in t['shape'])})" for t in tensors
    )


def _step_line(step: dict | None) -> list[str]:
    if step is None:
        return ["step model  none (the runtime steps through the main graph)"]
    states = ", ".join(f"{x['input']} -> {x['output']}" for x in step["states"])
    return [
        f"step model  {step['bytes']:,} bytes, sha256 {step['sha256'][:16]}...: "
        f"{step['token']} (B,), {states} (B, H) -> {step['log_probs']} (B, C)"
    ]


@main.command("convert")
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The .onnx file to write (replaced atomically, only on success).",
)
@click.option(
    "--opset",
    type=int,
    default=None,
    help="ONNX opset to write, 14 or newer [default: 18].",
)
def convert_command(run_dir, out_path, opset):
    """Export a trained RUN_DIR to one self-contained ONNX file.

    The file takes tokens (B, T), the hidden state h0 and per-row lengths, and
    returns log_probs (B, C) and the new state hn; B and T are dynamic. Its
    metadata carries the vocabulary, labels and state layout (see `inspect`).
    """
    import onnx

    from rnn_export.export import DEFAULT_OPSET, ExportError, count_nodes, export_onnx

    opset = DEFAULT_OPSET if opset is None else opset
    try:
        path = export_onnx(run_dir, out_path, opset=opset)
    except ExportError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    info = _describe_model(path)
    proto = onnx.load(path)
    click.echo(f"wrote {path}")
    click.echo(f"  size     {info['size_bytes']:,} bytes")
    click.echo(f"  nodes    {count_nodes(proto.graph)} (subgraphs included)")
    click.echo(f"  opset    {info['metadata']['provenance']['opset']}")
    click.echo(f"  inputs   {_tensors_line(info['inputs'])}")
    click.echo(f"  outputs  {_tensors_line(info['outputs'])}")
    step = info["metadata"]["step"]
    if step is not None:
        from rnn_runtime.metadata import read_metadata

        meta = read_metadata({p.key: p.value for p in proto.metadata_props})
        nodes = count_nodes(onnx.load_from_string(meta.step.model_bytes()).graph)
        click.echo(
            f"  step     embedded step model for the runtime: {nodes} nodes, "
            f"{step['bytes']:,} bytes (inputs {step['token']}, "
            f"{', '.join(x['input'] for x in step['states'])})"
        )


@main.command("inspect")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for programs.")
def inspect_command(model_path, as_json):
    """Print a model file's metadata and input/output signature.

    Needs only onnxruntime (no torch, no onnx). Exits 2 for a file that is not
    an ONNX model, has no rnn-export metadata, or has an unknown schema version.
    """
    import json

    import rnn_runtime

    try:
        info = _describe_model(model_path)
    except (rnn_runtime.ModelFileError, rnn_runtime.MetadataError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    meta = info["metadata"]
    model, vocab, prov = meta["model"], meta["vocab"], meta["provenance"]
    chars = "".join(t for i, t in enumerate(vocab["tokens"]) if i != vocab["unk_id"])
    unk = vocab["tokens"][vocab["unk_id"]]
    libraries = ", ".join(f"{k} {v}" for k, v in sorted(prov.get("libraries", {}).items()))
    lines = [
        f"{info['path']}: rnn-export model, schema {meta['schema_version']}, "
        f"opset {prov['opset']}, {info['size_bytes']:,} bytes",
        f"model       {model['arch']}, L={model['num_layers']}, H={model['hidden_size']}, "
        f"nonlinearity {model['nonlinearity']}, V={model['vocab_size']}, "
        f"C={model['num_classes']}",
        f"vocab       {len(vocab['tokens'])} tokens, unknown id {vocab['unk_id']} ({unk!r}), "
        f"characters {json.dumps(chars, ensure_ascii=False)}",
        "labels      " + ", ".join(f"{i} {label}" for i, label in enumerate(meta["labels"])),
    ]
    for s in meta["io"]["states"]:
        shape = ", ".join(str(d) for d in s["shape"])
        lines.append(
            f"state       {s['input']} -> {s['output']}  ({shape}) {s['dtype']}, "
            f"initial {s['initial']}"
        )
    lines += [
        f"inputs      {_tensors_line(info['inputs'])}",
        f"outputs     {_tensors_line(info['outputs'])}",
        f"checkpoint  sha256 {prov['checkpoint_sha256']}",
        *_step_line(meta["step"]),
        f"made by     rnn-export {prov.get('tool_version')} with {libraries}",
    ]
    click.echo("\n".join(lines))


# --- end convert, inspect ---


# --- bench: imports torch, onnxruntime and the runtime only when it runs ---
@main.command("bench")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option(
    "--checkpoint",
    "run_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="The RUN_DIR the model was exported from: PyTorch eager runs this checkpoint.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write every figure as JSON to this file.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Intra-op threads for both onnxruntime and torch (e.g. $(nproc) for all cores).",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=7,
    show_default=True,
    help="Timed blocks per measurement, interleaved between the sides; medians are shown.",
)
@click.option(
    "--quick", is_flag=True, help="A smaller grid and short blocks: rough figures in seconds."
)
def bench_command(model_path, run_dir, json_path, threads, repeats, quick):
    """Time the runtime and onnxruntime against PyTorch eager on the same model.

    Prints ratios measured side by side in this one process: streaming latency
    per step at batch 1 (against PyTorch and against a one-node ONNX model, the
    floor), offline tokens/s over padded batches (B x T grid), aggregate steps/s
    of the runtime's pool at 1, 16 and 256 streams, and the cold start and peak
    RSS of a process that imports only the runtime. Exit 2 when the model and
    checkpoint cannot be read or do not belong together.
    """
    from rnn_export.bench import BenchError, run_bench

    try:
        report = run_bench(model_path, run_dir, threads=threads, repeats=repeats, quick=quick)
    except BenchError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    click.echo(report.format_table())
    if json_path is not None:
        try:
            json_path.write_text(report.to_json() + "\n", encoding="utf-8")
        except OSError as e:
            click.echo(f"error: cannot write {json_path}: {e.strerror}", err=True)
            sys.exit(2)
        click.echo(f"figures written to {json_path}")


# --- end bench ---


# --- demo: the main job, train -> convert -> verify -> stream ---
@main.command("demo")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("runs/demo"),
    show_default=True,
    help="Folder for the RUN_DIRs, .onnx files, parity reports, drift plots and summary.json.",
)
@click.option(
    "--arch",
    "archs",
    type=click.Choice(["cell", "stacked"]),
    multiple=True,
    help="Arch to run; repeat for both [default: cell and stacked].",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, help="Training epochs [default: 8]."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds data, weights, cases.")
def demo_command(out, archs, epochs, seed):
    """Run the whole path on the embedded task, no data or download needed.

    For each arch: train a model, convert it to ONNX, verify the file against
    PyTorch on the CPU provider, and stream the validation texts through the
    torch-free runtime one character at a time. Exit 1 when parity fails, 2 for
    bad options or an unwritable --out.
    """
    from rnn_export.checkpoint import CheckpointError
    from rnn_export.demo import ARCHS, run_demo
    from rnn_export.parity import ParityError

    try:
        run_demo(out, archs=archs or ARCHS, epochs=epochs, seed=seed, echo=click.echo)
    except ParityError as e:
        click.echo(e.report.format_table(), err=True)
        sys.exit(1)
    except CheckpointError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except OSError as e:
        click.echo(f"error: {e.filename}: {e.strerror}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


# --- end demo ---


if __name__ == "__main__":
    main()
