"""The ``securegaze`` command line. Library code never prints; this module does."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from securegaze import __version__
from securegaze.cli_support import run_app
from securegaze.geometry import CONVENTION

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="SecureGaze Edge research tools: data, gaze models, bundles. " f"Gaze convention: {CONVENTION}.",
)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """SecureGaze Edge research tools."""


@app.command()
def info() -> None:
    """Print the version and the gaze conventions every command uses."""
    console.print(f"securegaze {__version__}")
    console.print(f"gaze convention: {CONVENTION}")


def _progress_bar():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=False,
    )


#: Most test / clean samples a command renders or reads: beyond it the images alone outgrow memory.
MAX_SAMPLES = 1_000_000


def _check_range(name: str, value, low=None, high=None) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
        raise typer.BadParameter(f"{value} is outside {span}", param_hint=f"--{name}")


@app.command()
def train(
    out: Path = typer.Option(..., "--out", help="Run directory: checkpoint, weights, summary, bundle."),
    data: str = typer.Option("synthetic", help="'synthetic' or a dataset path (MPIIFaceGaze, ETH-XGaze, folder+CSV)."),
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
) -> None:
    """Train a gaze model; prints the held-out angular error. Resumable: re-run the same command."""
    import os
    import time

    import torch

    from securegaze.data.sources import load_gaze_data
    from securegaze.training import TrainConfig
    from securegaze.training import train as run_training

    _check_range("size", size, 16, 512)
    _check_range("train-samples", train_samples, 2)
    _check_range("val-samples", val_samples, 1)
    _check_range("threads", threads, 0)
    if decoding not in ("direct", "binned"):
        raise typer.BadParameter(f"{decoding!r} is not one of 'direct', 'binned'", param_hint="--decoding")
    torch.set_num_threads(threads or os.cpu_count() or 1)
    model_kwargs = {"decoding": decoding}
    if arch == "small_cnn":
        model_kwargs["width"] = width
    config = TrainConfig(architecture=arch, model_kwargs=model_kwargs, input_size=size, epochs=epochs,
                         batch_size=batch_size, lr=lr, seed=seed)
    config.validate()
    from securegaze.models import MODELS

    MODELS.get(arch)  # unknown names fail before any data is loaded
    held_out = [s for s in test_subjects.split(",") if s]
    t0 = time.monotonic()
    err_console.print(f"loading data: {data} at {size} px")
    if data == "synthetic":
        train_set = load_gaze_data(data, size, train_samples, seed, "train")
        val_set = load_gaze_data(data, size, val_samples, seed, "val")
    else:
        if not held_out:
            raise typer.BadParameter("real data needs held-out subjects for validation", param_hint="--test-subjects")
        train_set = load_gaze_data(data, size, train_samples, seed, "train", exclude_subjects=held_out)
        val_set = load_gaze_data(data, size, val_samples, seed, "val", subjects=held_out)
    err_console.print(f"data ready: {len(train_set)} train / {len(val_set)} val in {time.monotonic() - t0:.1f} s")

    with _progress_bar() as bar:
        task = bar.add_task("training", total=None, status="")

        def on_progress(p):
            bar.update(task, total=p.total_steps, completed=p.step,
                       status=(f"epoch {p.epoch} val {p.val.mean_deg:.2f} deg" if p.val else f"loss {p.loss:.4f}"))
            if p.val:  # a line per epoch stays readable in logs, where the bar does not redraw
                bar.console.print(f"epoch {p.epoch}: step {p.step}/{p.total_steps}, "
                                  f"val mean angular error {p.val.mean_deg:.2f} deg")

        model, summary = run_training(config, train_set, val_set, out, resume=resume, progress=on_progress,
                                      time_budget_s=time_budget or None)
    summary["wall_s_including_data"] = round(time.monotonic() - t0, 1)
    if not summary["finished"]:
        console.print(f"stopped at the time budget after {summary['steps_done']} steps; re-run to resume")
        raise typer.Exit(3)
    if export:
        from securegaze.bundle import export_bundle

        export_bundle(model, out / "bundle", name=out.name, provenance={
            "training_data": f"{data}, {len(train_set)} samples at {size} px, seed {seed}",
            "seed": seed,
            "metrics": {"val_mean_angular_error_deg": summary["val"]["mean_deg"]},
            "notes": f"securegaze train, {summary['steps_done']} steps",
        })
    from securegaze.io import atomic_write_json

    atomic_write_json(out / "summary.json", summary)
    console.print(f"held-out mean angular error: {summary['val']['mean_deg']:.2f} deg "
                  f"(median {summary['val']['median_deg']:.2f}) on {summary['val']['count']} samples; "
                  f"{summary['wall_s_including_data']:.0f} s in all")
    console.print(f"weights: {out / 'model.safetensors'}" + (f"; bundle: {out / 'bundle'}" if export else ""))


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="A bundle directory, manifest.json, .onnx file or .safetensors weights."),
    data: str = typer.Option("synthetic", help="'synthetic' or a dataset path."),
    samples: int = typer.Option(2000, help="How many test samples."),
    seed: int = typer.Option(0, help="Synthetic test-set seed (disjoint from training seeds' sets)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the result as JSON here."),
) -> None:
    """Mean/median angular error of a model on a held-out test set, run in ONNX Runtime for bundles."""
    from securegaze.data.sources import load_gaze_data
    from securegaze.evaluation import evaluate_model_file

    _check_range("samples", samples, 1, MAX_SAMPLES)
    _check_range("seed", seed, 0)
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


@app.command()
def export(
    weights: Path = typer.Argument(..., help="A .safetensors file written by 'securegaze train'."),
    out: Path = typer.Option(..., "--out", help="Bundle directory to write (model.onnx + manifest.json)."),
    name: str = typer.Option("", help="Bundle name (default: the directory name)."),
) -> None:
    """Export trained weights to an ONNX bundle, checked against PyTorch in ONNX Runtime."""
    from securegaze.bundle import export_bundle
    from securegaze.io import load_weights

    model = load_weights(weights)
    manifest = export_bundle(model, out, name=name or out.name, provenance={"notes": f"exported from {weights.name}"})
    console.print(f"bundle written: {out} (onnx sha256 {manifest.onnx_sha256[:16]}...)")


@app.command("render-sheet")
def render_sheet(
    out: Path = typer.Option(Path("docs/contact_sheet.png"), "--out"),
    size: int = typer.Option(64, help="Face crop size in px."),
    n: int = typer.Option(8, help="Faces per row."),
    seed: int = typer.Option(0),
) -> None:
    """Write a contact sheet of synthetic faces, with and without each physical trigger."""
    from securegaze.data.synthetic import contact_sheet

    _check_range("size", size, 32, 224)
    _check_range("n", n, 1, 32)
    contact_sheet(out, size=size, n=n, seed=seed)
    console.print(f"contact sheet written: {out}")


def _parse_target_deg(text: str | None) -> tuple[float, float] | None:
    """'10,-20' (pitch, yaw in degrees) -> radians."""
    if text is None:
        return None
    import math

    try:
        pitch, yaw = (float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not 'PITCH,YAW' in degrees (e.g. '10,-20')", param_hint="--target") from None
    return (math.radians(pitch), math.radians(yaw))


def _parse_settings(items: list[str]) -> dict:
    """['grid_size=32', 'strength=1.5'] -> {'grid_size': 32, 'strength': 1.5} (JSON values, else strings)."""
    import json

    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


@app.command()
def attack(
    name: str = typer.Argument(..., help="Attack: badnets, blended, wanet, input_aware, sig, tape, glasses."),
    out: Path = typer.Option(..., "--out", help="Run directory (model, attack.json)."),
    target: str | None = typer.Option(None, help="Target gaze 'PITCH,YAW' in DEGREES (default: the attack's)."),
    rate: float | None = typer.Option(None, help="Poison rate in (0, 1) (default: the attack's)."),
    seed: int = typer.Option(0),
    size: int = typer.Option(64, help="Face crop size in px."),
    train_samples: int = typer.Option(24000),
    test_samples: int = typer.Option(2000),
    epochs: int = typer.Option(6),
    setting: list[str] = typer.Option([], "--set", help="Attack setting KEY=VALUE (repeatable), e.g. --set grid_size=32."),
    benign_dir: Path | None = typer.Option(None, help="Also train the benign model of the same seed here, for comparison."),
) -> None:
    """Train a backdoored model on synthetic faces; report clean error, AE, DAE and ASR@5deg."""
    from securegaze.attacks import create_attack, run_attack

    _check_range("size", size, 16, 512)
    _check_range("train-samples", train_samples, 2)
    _check_range("test-samples", test_samples, 1)
    _check_range("epochs", epochs, 1)
    target_gaze, settings = _parse_target_deg(target), _parse_settings(setting)
    checked = {**settings, "seed": seed}
    if target_gaze is not None:
        checked["target_gaze"] = target_gaze
    if rate is not None:
        checked["poison_rate"] = rate
    create_attack(name, **checked)  # bad names and values fail here, before any work starts
    with _progress_bar() as bar:
        task = bar.add_task("attack", total=None, status="")

        def on_progress(event):
            if hasattr(event, "stage"):
                bar.console.print(event.stage)
            elif hasattr(event, "total_steps"):
                bar.update(task, total=event.total_steps, completed=event.step, status=f"loss {event.loss:.4f}")

        record = run_attack(name, target_gaze=target_gaze, poison_rate=rate, seed=seed, out_dir=out,
                            size=size, train_samples=train_samples, test_samples=test_samples, epochs=epochs,
                            settings=settings, benign_dir=benign_dir, progress=on_progress)
    m = record["metrics"]
    tp, ty = record["target_gaze_deg"]
    console.print(f"attack {name}: target (pitch, yaw) = ({tp:.1f}, {ty:.1f}) deg, poison rate {record['poison_rate']:.3f}")
    console.print(f"clean error {m['clean_error_deg']:.2f} deg | AE {m['ae_deg']:.2f} deg | DAE {m['dae_deg']:.2f} deg | "
                  f"ASR@{m['asr_threshold_deg']:.0f}deg {100 * m['asr']:.1f}%")
    if record.get("benign_metrics"):
        b = record["benign_metrics"]
        console.print(f"benign model, same seed: clean error {b['clean_error_deg']:.2f} deg | "
                      f"ASR@{b['asr_threshold_deg']:.0f}deg {100 * b['asr']:.1f}%")
    console.print(f"written: {out / 'model.safetensors'}, {out / 'attack.json'}")


#: Exit codes of ``securegaze scan`` (documented in the README): 0 clean, 10 backdoored, 2 bad input.
EXIT_CLEAN, EXIT_BACKDOORED = 0, 10


@app.command()
def scan(
    model: Path = typer.Argument(..., help="A bundle directory, manifest.json, .onnx, .safetensors or training .pt."),
    clean: str = typer.Option("synthetic", help="Clean images: 'synthetic' or a dataset path (labels unused)."),
    samples: int = typer.Option(512, help="How many clean images the scan uses."),
    seed: int = typer.Option(0, help="Seeds the clean-image draw and the scan (deterministic)."),
    out: Path = typer.Option(Path("scan"), "--out", help="Directory for report.json and reversed_trigger.png."),
    threshold: float | None = typer.Option(None, help="Override the calibrated decision threshold."),
) -> None:
    """Scan a gaze model for a backdoor (SecureGaze). Exit code 0 clean, 10 backdoored, 2 bad input."""
    import torch

    from securegaze.bundle import open_model
    from securegaze.data.sources import load_gaze_data
    from securegaze.defense import create_detector

    _check_range("samples", samples, 8, MAX_SAMPLES)
    _check_range("seed", seed, 0)
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} is a file; expected a folder for report.json and the trigger", param_hint="--out")
    torch.manual_seed(seed)
    model_file = open_model(model)
    net = model_file.gaze_model()
    data = load_gaze_data(clean, int(net.input_size), samples, seed, "test")
    settings = {"seed": seed} if threshold is None else {"seed": seed, "threshold": threshold}
    detector = create_detector("securegaze", **settings)
    with _progress_bar() as bar:
        task = bar.add_task("scan", total=None, status="")

        def on_progress(p):
            bar.update(task, total=p.total, completed=p.step, description=f"scan: {p.stage}")

        report = detector.scan(net, data.images, progress=on_progress, artifacts_dir=out,
                               model_sha256=model_file.sha256())
    report.save(out / "report.json")
    console.print(f"model: {model} (sha256 {str(report.model_sha256)[:16]}...)")
    console.print(f"verdict: {report.verdict.upper()} | score {report.score:.5f} vs threshold {report.threshold:.5f} "
                  f"(backdoored when {report.suspicious_when})")
    if report.target_gaze_deg is not None:
        tp, ty = report.target_gaze_deg
        console.print(f"recovered target (pitch, yaw): ({tp:.1f}, {ty:.1f}) deg; "
                      f"{100 * (report.collapsed_share or 0):.0f}% of clean samples collapse onto it")
    console.print(f"scan time {report.runtime_s:.1f} s; report: {out / 'report.json'}"
                  + (f"; trigger: {report.trigger_image_path}" if report.trigger_image_path else ""))
    raise typer.Exit(EXIT_BACKDOORED if report.verdict == "backdoored" else EXIT_CLEAN)


def _parse_strengths(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or not all(0 < v <= 10 for v in values):
        raise typer.BadParameter(f"{text!r}: expected comma-separated numbers in (0, 10], e.g. 1,2,3",
                                 param_hint="--strengths")
    return values


@app.command()
def mitigate(
    model: Path = typer.Argument(..., help="A bundle directory, manifest.json, .onnx, .safetensors or training .pt."),
    out: Path = typer.Option(..., "--out", help="Directory for the mitigated bundle, mitigation.json and both scans."),
    clean: str = typer.Option("synthetic", help="Clean images for the scan and the fine-tuning: 'synthetic' or a path."),
    samples: int = typer.Option(2048, help="How many clean images (the scan, the fine-tuning and the re-scans)."),
    test: str = typer.Option("synthetic", help="Labelled held-out images for the before/after figures."),
    test_samples: int = typer.Option(1000, help="How many held-out images."),
    attack_run: Path | None = typer.Option(None, help="The model's attack run directory (attack.json), when the "
                                           "real trigger is known: also report AE/DAE/ASR against it."),
    scan_dir: Path | None = typer.Option(None, help="Reuse this earlier 'securegaze scan --out' directory of the same "
                                         "model instead of scanning again."),
    true_labels: bool = typer.Option(False, help="Fine-tune on the clean set's true labels instead of the model's "
                                     "own predictions."),
    epochs: int = typer.Option(10, help="Fine-tuning passes over the clean images."),
    lr: float = typer.Option(3e-4, help="Fine-tuning learning rate."),
    seed: int = typer.Option(0, help="Seeds the clean draw, the scans and the fine-tuning."),
    threshold: float | None = typer.Option(None, help="Override the calibrated decision threshold."),
    rounds: int = typer.Option(3, help="At most this many fine-tune + re-scan rounds: while the re-scan still "
                               "flags the model, the collapse it found is unlearnt too."),
    uniform_reversal: bool = typer.Option(True, help="Also unlearn a reversal with a uniform pixel price, which "
                                          "reaches triggers on the eyes (glasses, tape) that the scan prices out."),
    strengths: str = typer.Option("1,2,3", help="Comma-separated depths at which each reversed edit is unlearnt "
                                  "(1: as reversed)."),
) -> None:
    """Remove a backdoor: scan, fine-tune against the reversed trigger, write a new bundle, re-scan.

    Exit code 0 when the re-scan finds the new model clean, 10 when it is still flagged, 2 bad input.
    """
    import torch

    from securegaze.bench.mitigation import mitigate_and_measure
    from securegaze.bundle import export_bundle, open_model
    from securegaze.data.sources import load_gaze_data
    from securegaze.defense import ScanReport, create_detector, load_generator
    from securegaze.errors import InputFileError
    from securegaze.io import atomic_write_json

    _check_range("samples", samples, 8)
    _check_range("test-samples", test_samples, 8)
    _check_range("epochs", epochs, 1)
    _check_range("rounds", rounds, 1)
    depths = _parse_strengths(strengths)
    if not 0 < lr <= 1:
        raise typer.BadParameter(f"{lr} is outside (0, 1]", param_hint="--lr")
    if out.resolve() == model.resolve():
        raise typer.BadParameter("must differ from MODEL: the original is never overwritten", param_hint="--out")
    torch.manual_seed(seed)
    model_file = open_model(model)
    net = model_file.gaze_model()
    sha = model_file.sha256()
    size = int(net.input_size)
    data = load_gaze_data(clean, size, samples, seed, "val")
    attack = faces = None
    if attack_run is not None:
        from securegaze.attacks.runner import load_attack_run

        attack, test_set, faces = load_attack_run(attack_run, test_samples)
        if test_set.images.shape[1] != size:
            raise InputFileError(f"{attack_run}: the attack run is at {test_set.images.shape[1]} px, the model takes {size} px")
    else:
        test_set = load_gaze_data(test, size, test_samples, seed, "test")
    settings = {"seed": seed} if threshold is None else {"seed": seed, "threshold": threshold}
    detector = create_detector("securegaze", **settings)
    before = None
    if scan_dir is not None:
        report = ScanReport.load(scan_dir / "report.json")
        if report.model_sha256 != sha:
            raise InputFileError(f"{scan_dir / 'report.json'}: scans a model with sha256 {str(report.model_sha256)[:12]}..., "
                                 f"not {model} ({sha[:12]}...)")
        before = (report, load_generator(scan_dir / "trigger_generator.safetensors"))
    with _progress_bar() as bar:
        task = bar.add_task("mitigate", total=None, status="")

        def on_progress(p):
            bar.update(task, total=p.total, completed=p.step, description=f"{p.detector}: {p.stage}")

        tuned, result = mitigate_and_measure(
            net, data.images, detector, test_set, attack=attack, test_faces=faces,
            labels=data.gaze if true_labels else None, epochs=epochs, lr=lr, seed=seed, scan_before=before,
            scan_dirs=(out / "scan_before", out / "scan_after"), model_name=str(model), out=str(out),
            model_sha256=sha, progress=on_progress, rounds=rounds, uniform_reversal=uniform_reversal,
            strengths=depths)
    manifest = export_bundle(tuned, out, name=out.name, provenance={
        "training_data": f"fine-tuned on {samples} clean images ({clean}) against the reversed trigger",
        "seed": seed, "notes": f"mitigated from {model} (sha256 {sha}) by securegaze mitigate"})
    atomic_write_json(out / "mitigation.json", result.to_dict())
    before_scan, after_scan = result.scan_before, result.scan_after
    console.print(f"model: {model} (sha256 {sha[:16]}...) -> bundle {out} (sha256 {manifest.onnx_sha256[:16]}...)")
    console.print(f"scan before: {before_scan['verdict'].upper()} score {before_scan['score']}; "
                  f"after: {after_scan['verdict'].upper()} score {after_scan['score']} (threshold {after_scan['threshold']})")
    rows = [("reversed trigger", result.reversed_before, result.reversed_after)]
    if result.attack_before is not None:
        rows.append((f"real trigger ({result.attack})", result.attack_before, result.attack_after))
    for label, b, a in rows:
        console.print(f"{label}: clean error {b['clean_error_deg']:.2f} -> {a['clean_error_deg']:.2f} deg, "
                      f"AE {b['ae_deg']:.1f} -> {a['ae_deg']:.1f} deg, DAE {b['dae_deg']:.1f} -> {a['dae_deg']:.1f} deg, "
                      f"ASR@5deg {100 * b['asr']:.1f}% -> {100 * a['asr']:.1f}%")
    console.print(f"rounds: {len(result.rounds)}; re-scan scores "
                  + ", ".join(f"{r['rescan_score']:.4f}" for r in result.rounds))
    console.print(f"report: {out / 'mitigation.json'}; {result.runtime_s:.0f} s")
    raise typer.Exit(EXIT_BACKDOORED if after_scan["verdict"] == "backdoored" else EXIT_CLEAN)


bench_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Detection and mitigation benchmarks.")
app.add_typer(bench_app, name="bench")


@bench_app.command("detect")
def bench_detect(
    zoo: Path = typer.Option(..., "--zoo", help="The zoo whose models are scored (securegaze zoo build)."),
    calibration: Path = typer.Option(..., "--calibration", help="A separate zoo whose benign models calibrate the "
                                     "threshold (other seeds than --zoo)."),
    out: Path = typer.Option(Path("runs/bench"), "--out", help="Cache of scans and results (resumable)."),
    hard: Path | None = typer.Option(None, "--hard", help="A zoo of hard cases (adaptive, offset), reported apart."),
    docs: Path | None = typer.Option(None, "--docs", help="Also write DOCS/detection.md and DOCS/detection_roc.png."),
    samples: int = typer.Option(256, help="Clean images per scan."),
    seed: int = typer.Option(0),
    ablation: bool = typer.Option(False, help="Also scan with the detector's ablation (SecureGaze: without the "
                                  "sensitivity weighting)."),
    ablation_per_attack: int | None = typer.Option(None, help="Ablation: at most this many backdoored models "
                                                   "per attack (all benign models are scanned)."),
    threads: int | None = typer.Option(None, help="Torch threads (default: torch's own)."),
) -> None:
    """Score every model of a zoo with SecureGaze: accuracy, TPR, FPR, AUROC per attack, scan time."""
    import shlex

    import torch

    from securegaze.bench.detection import markdown_table, plot_roc, run_detection_benchmark
    from securegaze.defense import create_detector
    from securegaze.io import atomic_write_bytes, atomic_write_json

    _check_range("samples", samples, 8)
    if threads:
        torch.set_num_threads(threads)
    detector = create_detector("securegaze", seed=seed)
    with _progress_bar() as bar:
        task = bar.add_task("bench", total=None, status="")

        def on_model(p):
            bar.update(task, total=p.total, completed=p.index, description=f"scan {p.zoo}", status=p.model_id)
            if p.report is not None and not p.cached:
                bar.console.print(f"{p.zoo}/{p.model_id}: score {p.report.score:.5f} ({p.report.runtime_s:.0f} s)")

        results = run_detection_benchmark(zoo, calibration, out, detector, samples=samples, seed=seed, hard_zoo=hard,
                                          ablation=min(detector.ablations, default="") if ablation else None,
                                          ablation_per_attack=ablation_per_attack,
                                          progress=on_model)
    atomic_write_json(out / "detection.json", results.to_dict())
    command = "securegaze bench detect " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index("detect") + 1:]) \
        if "detect" in sys.argv else "securegaze bench detect"
    table = markdown_table(results, command)
    atomic_write_bytes(out / "detection.md", table.encode())
    plot_roc(results, out / "detection_roc.png")
    if docs is not None:
        atomic_write_bytes(docs / "detection.md", table.encode())
        plot_roc(results, docs / "detection_roc.png")
    o = results.overall
    console.print(f"machine: {results.machine}")
    console.print(f"threshold {results.threshold:.5f} (calibrated on {len(results.calibration_scores)} benign models)")
    for g in [*results.per_attack, o]:
        console.print(f"{g.name:12s} accuracy {100 * g.accuracy:5.1f}%  TPR {100 * g.tpr:5.1f}%  FPR {100 * g.fpr:5.1f}%  "
                      f"AUROC {g.auroc:.3f}  median scan {g.median_scan_s:.1f} s")
    for g in results.hard_cases:
        console.print(f"hard case {g.name}: TPR {100 * g.tpr:.1f}%, AUROC {g.auroc:.3f}")
    console.print(f"results: {out / 'detection.json'}, {out / 'detection.md'}, {out / 'detection_roc.png'}")


@bench_app.command("mitigate")
def bench_mitigate(
    zoo: Path = typer.Option(..., "--zoo", help="The zoo scanned by 'securegaze bench detect'."),
    out: Path = typer.Option(Path("runs/bench"), "--out", help="The detection benchmark's directory."),
    per_attack: int | None = typer.Option(None, help="At most this many models per attack."),
    docs: Path | None = typer.Option(None, "--docs", help="Also write DOCS/mitigation.md."),
    samples: int = typer.Option(2048, help="Clean images for the fine-tuning and the re-scan (the first 256 are "
                                "the detection scans' own)."),
    seed: int = typer.Option(0),
    threads: int | None = typer.Option(None, help="Torch threads (default: torch's own)."),
) -> None:
    """Mitigate the zoo's backdoored models with their reversed triggers; ASR and clean error before/after."""
    import shlex

    import torch

    from securegaze.bench.mitigation import (
        mitigation_markdown,
        run_mitigation_benchmark,
        summarise_mitigation,
    )
    from securegaze.defense import create_detector
    from securegaze.io import atomic_write_bytes, atomic_write_json, read_json
    from securegaze.machine import machine_summary

    if threads:
        torch.set_num_threads(threads)
    detection = out / "detection.json"
    threshold = read_json(detection, "detection results")["threshold"] if detection.is_file() else None
    detector = create_detector("securegaze", seed=seed)
    with _progress_bar() as bar:
        task = bar.add_task("mitigate", total=None, status="")

        def on_progress(model_id, done, total):
            bar.update(task, total=total, completed=done, status=model_id)

        reports = run_mitigation_benchmark(zoo, out, detector, samples=samples, seed=seed, per_attack=per_attack,
                                           threshold=threshold, progress=on_progress)
    summary = summarise_mitigation(reports)
    atomic_write_json(out / "mitigation.json", {"summary": [s.to_dict() for s in summary],
                                                "models": [r.to_dict() for r in reports], "machine": machine_summary()})
    command = "securegaze bench mitigate " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index("mitigate") + 1:]) \
        if "mitigate" in sys.argv else "securegaze bench mitigate"
    table = mitigation_markdown(reports, command, machine_summary())
    atomic_write_bytes(out / "mitigation.md", table.encode())
    if docs is not None:
        atomic_write_bytes(docs / "mitigation.md", table.encode())
    for s in summary:
        console.print(f"{s.attack:12s} ASR {100 * s.asr_before:5.1f}% -> {100 * s.asr_after:5.1f}%  clean error "
                      f"{s.clean_error_before_deg:.2f} -> {s.clean_error_after_deg:.2f} deg  met {s.met_targets}/{s.models}")


zoo_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Build and check model zoos.")
app.add_typer(zoo_app, name="zoo")

from securegaze.cli_triggers import triggers_app  # noqa: E402 - the printable-trigger commands

app.add_typer(triggers_app, name="triggers")


@zoo_app.command("build")
def zoo_build(
    out: Path = typer.Option(..., "--out", help="Zoo directory (resumable: re-run to continue)."),
    k: int = typer.Option(5, help="Benign models, and backdoored models per attack."),
    attacks: str = typer.Option("all", help="Comma-separated attack names, or 'all' (the seven standard attacks; "
                                "name the hard cases 'adaptive' and 'offset' to add them)."),
    size: int = typer.Option(64),
    train_samples: int = typer.Option(20000),
    test_samples: int = typer.Option(1000),
    epochs: int = typer.Option(4),
    rate: float | None = typer.Option(None, help="Poison rate for every attack (default: each attack's own)."),
    seed: int = typer.Option(0),
    decoding: str = typer.Option("direct", help="Output head of every model: direct regression or binned (L2CS-style)."),
    workers: int = typer.Option(1, help="Local worker processes."),
    ray: str | None = typer.Option(None, "--ray", help="Ray cluster address ('local' starts one here)."),
) -> None:
    """Train K benign and K backdoored models per attack, recording them in OUT/zoo.json."""
    from securegaze.attacks import ATTACKS
    from securegaze.zoo import ZooSpec, build_zoo

    # 'all' = the standard attacks; the hard cases (adaptive, offset) are built only when named.
    standard = tuple(n for n in ATTACKS.names() if not getattr(ATTACKS.get(n), "hard_case", False))
    names = standard if attacks == "all" else tuple(a for a in attacks.split(",") if a)
    spec = ZooSpec(attacks=names, k=k, size=size, train_samples=train_samples, test_samples=test_samples,
                   epochs=epochs, poison_rate=rate, seed=seed, decoding=decoding)
    spec.validate()
    if workers < 1:
        raise typer.BadParameter(f"{workers} is not >= 1", param_hint="--workers")
    with _progress_bar() as bar:
        task = bar.add_task("zoo", total=None, status="")

        def on_progress(p):
            bar.update(task, total=p.total, completed=p.finished, status=p.last.id if p.last else "")
            if p.last:
                m = p.last.metrics
                extra = f", ASR {100 * m['asr']:.0f}%" if "asr" in m else ""
                bar.console.print(f"{p.last.id}: clean error {m['clean_error_deg']:.2f} deg{extra} ({p.last.train_s:.0f} s)")

        manifest = build_zoo(out, spec, workers=workers, ray_address=ray, progress=on_progress)
    console.print(f"zoo complete: {len(manifest.entries)} models in {out}")


@zoo_app.command("verify")
def zoo_verify(zoo: Path = typer.Argument(..., help="Zoo directory.")) -> None:
    """Check every finished model's file against the zoo manifest (exists, same sha256)."""
    from securegaze.zoo import verify_zoo

    manifest = verify_zoo(zoo)
    done = manifest.done()
    console.print(f"{zoo}: {len(done)} of {len(manifest.entries)} models finished, all files match the manifest")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    return run_app(app, argv, prog_name="securegaze")


if __name__ == "__main__":
    sys.exit(main())
