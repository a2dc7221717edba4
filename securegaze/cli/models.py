"""``securegaze train``, ``evaluate`` and ``export``: gaze models and their bundles."""

from __future__ import annotations

from pathlib import Path

import typer

from securegaze.cli.support import MAX_SAMPLES, check_range, console, err_console, progress_bar
from securegaze.errors import ConfigError
from securegaze.geometry import CONVENTION

#: Largest first-layer width ``securegaze train --width`` and ``zoo build --width`` accept.
MAX_WIDTH = 1024


def train(
    out: Path = typer.Option(..., "--out", help="Run directory: checkpoint, weights, summary, bundle."),
    data: str = typer.Option("synthetic", help="'synthetic', 'synthetic:STYLE' (a renderer style, e.g. face_centred: "
                             "the framing of the edge app's normalisation) or a dataset path (MPIIFaceGaze, ETH-XGaze, "
                             "folder+CSV)."),
    arch: str = typer.Option("small_cnn", help="Model architecture (small_cnn, resnet18, mobilenet_v3)."),
    size: int = typer.Option(64, help="Input size in px (square face crops)."),
    decoding: str = typer.Option("direct", help="Output head: direct regression or binned (L2CS-style)."),
    width: int = typer.Option(24, help="small_cnn: channels of the first conv layer."),
    train_samples: int = typer.Option(60000, help="Training samples (synthetic: rendered; real: subsampled)."),
    val_samples: int = typer.Option(2000, help="Held-out validation samples."),
    epochs: int = typer.Option(12),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(2e-3, help="Peak learning rate of the one-cycle schedule."),
    seed: int = typer.Option(0),
    test_subjects: str = typer.Option("", help="Real data: comma-separated subject ids held out for validation."),
    resume: bool = typer.Option(True, help="Continue from OUT/checkpoint.pt when present."),
    time_budget: float = typer.Option(0.0, help="Stop after this many seconds (0 = no limit); resumable."),
    export: bool = typer.Option(True, help="Write an ONNX bundle to OUT/bundle when training finishes."),
    threads: int = typer.Option(0, help="Torch CPU threads (0 = all cores)."),
    device: str = typer.Option("auto", help="Where to train: auto (a CUDA GPU when torch sees one, else the CPU), "
                               "cpu, cuda or cuda:N. A run resumes on any device."),
    workers: int = typer.Option(0, help="Processes that render synthetic faces (0 = one per core); the same "
                                "faces whatever the number."),
    init: Path | None = typer.Option(None, "--init", help="Start from these weights (fine-tuning): a model.safetensors "
                                     "written by securegaze train, or a run or bundle directory holding one; the "
                                     "architecture settings must be the same."),
) -> None:
    """Train a gaze model; prints the held-out angular error. Resumable: re-run the same command.

    With --init the run starts from existing weights (e.g. the default model fine-tuned on a real
    dataset) and the learning-rate schedule starts afresh: a lower --lr than from scratch is usual."""
    import os
    import time

    import torch

    from securegaze.io import check_output_dir
    from securegaze.models import MODELS, model_kwargs_for
    from securegaze.training import (
        HeldOutSubjectsMissing,
        TrainConfig,
        finish_training_run,
        starting_weights_problem,
        train_val_data,
        training_device,
    )
    from securegaze.training import train as run_training

    check_range("size", size, 16, 512)
    check_range("width", width, 1, MAX_WIDTH)
    check_range("train-samples", train_samples, 2, MAX_SAMPLES)
    check_range("val-samples", val_samples, 1, MAX_SAMPLES)
    check_range("threads", threads, 0)
    check_range("workers", workers, 0, 256)
    try:
        device = training_device(device)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--device") from None
    from securegaze.data.sources import synthetic_spec_style

    try:
        synthetic = synthetic_spec_style(data) is not None
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from None
    if not synthetic and not Path(data).exists():
        raise typer.BadParameter(f"{data}: no such file or folder; expected 'synthetic', 'synthetic:STYLE' or a "
                                 "dataset path", param_hint="--data")
    check_output_dir(out, "--out", "the training run", files=("checkpoint.pt", "model.safetensors", "summary.json"),
                     folders=("bundle",))
    if decoding not in ("direct", "binned"):
        raise typer.BadParameter(f"{decoding!r} is not one of 'direct', 'binned'", param_hint="--decoding")
    torch.set_num_threads(threads or os.cpu_count() or 1)
    config = TrainConfig(architecture=arch, model_kwargs=model_kwargs_for(arch, decoding, width), input_size=size,
                         epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    config.validate()
    MODELS.get(arch)  # unknown names fail before any data is loaded
    try:
        config.build_model()  # so do sizes and widths the architecture refuses
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--size") from None
    start = None
    if init is not None:
        start, init_file = _starting_weights(init)
        problem = starting_weights_problem(start, config.build_model())  # before any data is loaded
        if problem:
            raise typer.BadParameter(f"{init_file}: the weights {problem}", param_hint="--init")
    held_out = [s for s in test_subjects.split(",") if s]
    t0 = time.monotonic()
    err_console.print(f"loading data: {data} at {size} px; training on {device}")
    try:
        train_set, val_set = train_val_data(data, size, train_samples, val_samples, seed, held_out,
                                            workers=workers or os.cpu_count() or 1)
    except HeldOutSubjectsMissing as exc:
        raise typer.BadParameter(str(exc), param_hint="--test-subjects") from None
    err_console.print(f"data ready: {len(train_set)} train / {len(val_set)} val in {time.monotonic() - t0:.1f} s")

    earlier = _finished_summary(out)  # read before training rewrites it
    with progress_bar() as bar:
        task = bar.add_task("training", total=None, status="")

        def on_progress(p):
            bar.update(task, total=p.total_steps, completed=p.step,
                       status=(f"epoch {p.epoch} val {p.val.mean_deg:.2f} deg" if p.val else f"loss {p.loss:.4f}"))
            if p.val:  # a line per epoch stays readable in logs, where the bar does not redraw
                bar.console.print(f"epoch {p.epoch}: step {p.step}/{p.total_steps}, "
                                  f"val mean angular error {p.val.mean_deg:.2f} deg")

        model, summary = run_training(config, train_set, val_set, out, resume=resume, progress=on_progress,
                                      time_budget_s=time_budget or None, init=start, device=device)
    if init is not None:
        from securegaze.io import sha256_file

        summary["init_weights"] = {"path": str(init_file), "sha256": sha256_file(init_file)}
    summary["wall_s_including_data"] = round(time.monotonic() - t0, 1)
    from securegaze.machine import machine_summary

    summary["machine"] = machine_summary() + (f", {torch.cuda.get_device_name(device)}" if device != "cpu" else "")
    if earlier is not None and earlier.get("steps_done") == summary["steps_done"] and "wall_s_including_data" in earlier:
        # Re-running a finished run only re-exports it: its wall-clock and machine stay the ones of the run
        # that trained.
        summary["wall_s_including_data"] = earlier["wall_s_including_data"]
        summary["machine"] = earlier.get("machine", summary["machine"])
    if not summary["finished"]:
        console.print(f"stopped at the time budget after {summary['steps_done']} steps; re-run to resume")
        raise typer.Exit(3)
    finish_training_run(model, out, summary, data, size, seed, export=export)
    console.print(f"held-out mean angular error: {summary['val']['mean_deg']:.2f} deg "
                  f"(median {summary['val']['median_deg']:.2f}) on {summary['val']['count']} samples; "
                  f"{summary['wall_s_including_data']:.0f} s in all")
    console.print(f"weights: {out / 'model.safetensors'}" + (f"; bundle: {out / 'bundle'}" if export else ""))


def _finished_summary(out: Path) -> dict | None:
    """The summary.json a finished earlier run left in ``out`` (None: none, or unreadable)."""
    import json

    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("finished") else None


def _starting_weights(path: Path):
    """(model, file) for ``train --init``: a securegaze safetensors file, or a directory holding model.safetensors
    (a training run) or whose parent does (a run's bundle)."""
    from securegaze.errors import InputFileError
    from securegaze.io import load_weights

    candidates = [path] if path.suffix == ".safetensors" else [path / "model.safetensors",
                                                                path.parent / "model.safetensors"]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise typer.BadParameter(f"{path}: expected a .safetensors weights file written by securegaze train, or a run "
                                 "directory holding model.safetensors", param_hint="--init")
    try:
        return load_weights(found), found
    except InputFileError as exc:
        raise typer.BadParameter(str(exc), param_hint="--init") from None


def evaluate(
    model: Path = typer.Argument(..., help="A bundle directory, manifest.json, .onnx file or .safetensors weights."),
    data: str = typer.Option("synthetic", help="'synthetic', 'synthetic:STYLE' (the renderer style a model was trained "
                             "on, e.g. face_centred for the default model) or a dataset path."),
    samples: int = typer.Option(2000, help="How many test samples."),
    seed: int = typer.Option(0, help="Synthetic test-set seed (disjoint from training seeds' sets)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the result as JSON here."),
) -> None:
    """Mean/median angular error of a model on a held-out test set, run in ONNX Runtime for bundles."""
    from securegaze.data.sources import load_gaze_data
    from securegaze.evaluation import evaluate_model_file

    check_range("samples", samples, 1, MAX_SAMPLES)
    check_range("seed", seed, 0)
    if json_out is not None and json_out.is_dir():
        raise typer.BadParameter(f"{json_out} is a folder; expected a file for the JSON result", param_hint="--json")
    result = evaluate_model_file(model, lambda size: load_gaze_data(data, size, samples, seed, "test"))
    console.print(f"model: {result['model']} ({result['engine']}, {result['input_size']} px)")
    console.print(f"test data: {data}, {result['count']} samples")
    console.print(f"angular error: mean {result['mean_deg']:.2f} deg, median {result['median_deg']:.2f} deg, "
                  f"p95 {result['p95_deg']:.2f} deg")
    console.print(f"gaze convention: {CONVENTION}")
    if json_out:
        from securegaze.io import atomic_write_json

        atomic_write_json(json_out, result)


def export(
    weights: Path = typer.Argument(..., help="A .safetensors file written by 'securegaze train'."),
    out: Path = typer.Option(..., "--out", help="Bundle directory to write (model.onnx + manifest.json)."),
    name: str = typer.Option("", help="Bundle name (default: the directory name)."),
) -> None:
    """Export trained weights to an ONNX bundle, checked against PyTorch in ONNX Runtime."""
    from securegaze.bundle import export_bundle
    from securegaze.io import check_output_dir, load_weights

    check_output_dir(out, "--out", "the bundle", files=("model.onnx", "manifest.json"))
    model = load_weights(weights)
    manifest = export_bundle(model, out, name=name or out.name, provenance={"notes": f"exported from {weights.name}"})
    console.print(f"bundle written: {out} (onnx sha256 {manifest.onnx_sha256[:16]}...)")
