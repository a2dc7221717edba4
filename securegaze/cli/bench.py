"""``securegaze bench detect`` and ``securegaze bench mitigate``: the benchmarks over a model zoo."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from securegaze.cli.support import MAX_SAMPLES, bench_command_line, check_range, console, progress_bar

bench_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Detection and mitigation benchmarks.")


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
    import torch

    from securegaze.bench.detection import (
        requested_ablation,
        run_detection_benchmark,
        write_detection_results,
    )
    from securegaze.defense import create_detector
    from securegaze.io import check_output_dir

    check_range("samples", samples, 8, MAX_SAMPLES)
    check_output_dir(out, "--out", "the benchmark's scans and results", files=("detection.json", "detection.md"))
    if docs is not None:
        check_output_dir(docs, "--docs", "the detection page", files=("detection.md", "detection_roc.png"))
    if threads:
        torch.set_num_threads(threads)
    detector = create_detector("securegaze", seed=seed)
    with progress_bar() as bar:
        task = bar.add_task("bench", total=None, status="")

        def on_model(p):
            bar.update(task, total=p.total, completed=p.index, description=f"scan {p.zoo}", status=p.model_id)
            if p.report is not None and not p.cached:
                bar.console.print(f"{p.zoo}/{p.model_id}: score {p.report.score:.5f} ({p.report.runtime_s:.0f} s)")

        results = run_detection_benchmark(zoo, calibration, out, detector, samples=samples, seed=seed, hard_zoo=hard,
                                          ablation=requested_ablation(detector, ablation),
                                          ablation_per_attack=ablation_per_attack,
                                          progress=on_model)
    write_detection_results(results, out, bench_command_line(sys.argv, "detect"), docs)
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
    import torch

    from securegaze.bench.mitigation import (
        detection_threshold,
        run_mitigation_benchmark,
        write_mitigation_results,
    )
    from securegaze.defense import create_detector
    from securegaze.io import check_output_dir

    check_range("samples", samples, 8, MAX_SAMPLES)
    if docs is not None:
        check_output_dir(docs, "--docs", "the mitigation page", files=("mitigation.md",))
    if threads:
        torch.set_num_threads(threads)
    threshold = detection_threshold(out)
    detector = create_detector("securegaze", seed=seed)
    with progress_bar() as bar:
        task = bar.add_task("mitigate", total=None, status="")

        def on_progress(model_id, done, total):
            bar.update(task, total=total, completed=done, status=model_id)

        reports = run_mitigation_benchmark(zoo, out, detector, samples=samples, seed=seed, per_attack=per_attack,
                                           threshold=threshold, progress=on_progress)
    summary = write_mitigation_results(reports, out, bench_command_line(sys.argv, "mitigate"), docs)
    for s in summary:
        console.print(f"{s.attack:12s} ASR {100 * s.asr_before:5.1f}% -> {100 * s.asr_after:5.1f}%  clean error "
                      f"{s.clean_error_before_deg:.2f} -> {s.clean_error_after_deg:.2f} deg  met {s.met_targets}/{s.models}")
