"""``securegaze bench detect`` and ``securegaze bench mitigate``: the benchmarks over a model zoo."""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

import typer

from securegaze.cli.support import (
    MAX_SAMPLES,
    bench_command_line,
    check_range,
    console,
    parse_key_values,
    progress_bar,
)

bench_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Detection and mitigation benchmarks.")


@bench_app.command("detect")
def bench_detect(
    zoo: Path = typer.Option(..., "--zoo", help="The zoo whose models are scored (securegaze zoo build)."),
    calibration: Path = typer.Option(..., "--calibration", help="A separate zoo whose benign models calibrate the "
                                     "threshold (other seeds than --zoo)."),
    out: Path = typer.Option(Path("runs/bench"), "--out", help="Cache of scans and results (resumable)."),
    hard: Path | None = typer.Option(None, "--hard", help="A zoo of hard cases (adaptive, offset), reported apart."),
    docs: Path | None = typer.Option(None, "--docs", help="Also write DOCS/detection.md and DOCS/detection_roc.png "
                                     "(SecureGaze alone), or DOCS/baselines.md and DOCS/baselines_roc.png (several "
                                     "detectors)."),
    docs_page: str | None = typer.Option(None, "--docs-page", help="Several detectors: the comparison's name under "
                                         "--docs (NAME.md, NAME_roc.png; default baselines), e.g. baselines_plain64 "
                                         "for a second zoo's comparison beside the first."),
    detectors: str = typer.Option("securegaze", "--detectors", help="Comma-separated registered detectors "
                                  "(securegaze info lists them), e.g. securegaze,neural_cleanse: each calibrated on "
                                  "its own, compared in baselines.md."),
    setting: list[str] = typer.Option([], "--set", help="DETECTOR.KEY=VALUE (repeatable): one detector's setting, "
                                      "e.g. --set neural_cleanse.samples=128."),
    samples: int = typer.Option(256, help="Clean images per scan."),
    seed: int = typer.Option(0),
    ablation: bool = typer.Option(False, help="Also scan with each detector's ablation (SecureGaze: without the "
                                  "sensitivity weighting)."),
    ablation_per_attack: int | None = typer.Option(None, help="Ablation: at most this many backdoored models "
                                                   "per attack (all benign models are scanned)."),
    attacks: str | None = typer.Option(None, "--attacks", help="Only the backdoored models of these attacks "
                                       "(comma-separated); every benign model is scored."),
    threads: int | None = typer.Option(None, help="Torch threads (default: torch's own)."),
) -> None:
    """Score every model of a zoo with SecureGaze (or several detectors): accuracy, TPR, FPR, AUROC per attack."""
    import torch

    from securegaze.bench.baselines import (
        DEFAULT_DETECTOR,
        build_detectors,
        parse_detector_names,
        run_detector_comparison,
    )
    from securegaze.bench.baselines_report import DEFAULT_PAGE, mitigation_table_from, write_comparison
    from securegaze.bench.detection import requested_ablation, run_detection_benchmark
    from securegaze.bench.detection_report import write_detection_results
    from securegaze.io import check_output_dir

    check_range("samples", samples, 8, MAX_SAMPLES)
    names = parse_detector_names(detectors)
    per_detector = detector_settings_option(setting, names)
    built = build_detectors(names, seed, per_detector)  # bad names and settings fail before any scan
    single = names == [DEFAULT_DETECTOR]
    if docs_page is not None and (single or docs is None or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", docs_page)):
        raise typer.BadParameter(f"{docs_page!r}: expected a file name stem (letters, digits, _ and -) and --docs "
                                 "with several --detectors (SecureGaze alone writes detection.md)",
                                 param_hint="--docs-page")
    only = zoo_attack_filter(attacks, zoo)
    check_output_dir(out, "--out", "the benchmark's scans and results",
                     files=("detection.json", "detection.md") if single else ("baselines.json", "baselines.md"))
    page_stem = docs_page or DEFAULT_PAGE
    if docs is not None:
        page = ("detection.md", "detection_roc.png") if single else (f"{page_stem}.md", f"{page_stem}_roc.png")
        check_output_dir(docs, "--docs", "the detection page", files=page)
    if threads:
        torch.set_num_threads(threads)
    with progress_bar() as bar:
        task = bar.add_task("bench", total=None, status="")

        def on_model(name, p):
            bar.update(task, total=p.total, completed=p.index, description=f"{name}: scan {p.zoo}", status=p.model_id)
            if p.report is not None and not p.cached:
                bar.console.print(f"{'' if single else name + ' '}{p.zoo}/{p.model_id}: score {p.report.score:.5f} "
                                  f"({p.report.runtime_s:.0f} s)")

        if single:
            detector = built[0]
            results = [run_detection_benchmark(zoo, calibration, out, detector, samples=samples, seed=seed,
                                               hard_zoo=hard, ablation=requested_ablation(detector, ablation),
                                               ablation_per_attack=ablation_per_attack, attacks=only,
                                               progress=lambda p: on_model(detector.name, p))]
        else:
            results = run_detector_comparison(zoo, calibration, out, built, samples=samples, seed=seed, hard_zoo=hard,
                                              attacks=only, ablation=ablation,
                                              ablation_per_attack=ablation_per_attack, progress=on_model)
    command = bench_command_line(sys.argv, "detect")
    console.print(f"machine: {results[0].machine}")
    for r in results:
        console.print(f"{r.detector}: threshold {r.threshold:.5g} ({r.calibration}; backdoored when {r.suspicious_when})")
        for g in [*r.per_attack, r.overall]:
            console.print(f"  {g.name:12s} accuracy {100 * g.accuracy:5.1f}%  TPR {100 * g.tpr:5.1f}%  "
                          f"FPR {100 * g.fpr:5.1f}%  AUROC {g.auroc:.3f}  median scan {g.median_scan_s:.1f} s")
        for g in r.hard_cases:
            console.print(f"  hard case {g.name}: TPR {100 * g.tpr:.1f}%, AUROC {g.auroc:.3f}")
    if single:
        write_detection_results(results[0], out, command, docs)
        console.print(f"results: {out / 'detection.json'}, {out / 'detection.md'}, {out / 'detection_roc.png'}")
    else:
        write_comparison(results, out, command, docs, mitigation_table=mitigation_table_from(out), docs_page=page_stem)
        console.print(f"results: {out / 'baselines.json'}, {out / 'baselines.md'}, {out / 'baselines_roc.png'}")


def detector_settings_option(items: list[str], names: list[str]) -> dict[str, dict]:
    """``bench detect --set DETECTOR.KEY=VALUE`` items -> ``{detector: {key: value}}``; the detector must
    be one of ``names`` (``seed`` has its own option)."""
    settings: dict[str, dict] = {}
    for dotted, value in parse_key_values(items, "--set").items():
        name, dot, key = dotted.partition(".")
        if not dot or not key or name not in names:
            raise typer.BadParameter(f"{dotted!r} is not DETECTOR.KEY with DETECTOR one of {', '.join(names)}",
                                     param_hint="--set")
        if key == "seed":
            raise typer.BadParameter("seed has its own option: use --seed", param_hint="--set")
        settings.setdefault(name, {})[key] = value
    return settings


@bench_app.command("mitigate")
def bench_mitigate(
    zoo: Path = typer.Option(..., "--zoo", help="The zoo scanned by 'securegaze bench detect'."),
    out: Path = typer.Option(Path("runs/bench"), "--out", help="The detection benchmark's directory."),
    per_attack: int | None = typer.Option(None, help="At most this many models per attack."),
    docs: Path | None = typer.Option(None, "--docs", help="Also write DOCS/mitigation.md (securegaze), and with "
                                     "other methods DOCS/mitigation_methods.md."),
    samples: int = typer.Option(2048, help="Clean images for the fine-tuning and the re-scan (the first 256 are "
                                "the detection scans' own); every method gets the same."),
    seed: int = typer.Option(0),
    methods: str = typer.Option("securegaze", "--methods", help="Comma-separated mitigation methods, e.g. "
                                "securegaze,fine_tuning,fine_pruning,anp,i_bau (securegaze info lists them); "
                                "securegaze needs 'bench detect' first, the others no scan."),
    setting: list[str] = typer.Option([], "--set", help="METHOD.KEY=VALUE (repeatable): a baseline method's "
                                      "setting, e.g. --set anp.iterations=500."),
    attacks: str | None = typer.Option(None, "--attacks", help="Only the models of these attacks (comma-separated)."),
    threads: int | None = typer.Option(None, help="Torch threads (default: torch's own)."),
) -> None:
    """Mitigate the zoo's backdoored models (SecureGaze, or several methods); ASR and clean error before/after."""
    import torch

    from securegaze.bench.mitigation import (
        detection_threshold,
        run_mitigation_benchmark,
        write_mitigation_results,
    )
    from securegaze.bench.mitigation_methods import run_mitigation_methods, write_mitigation_methods_results
    from securegaze.defense import create_detector
    from securegaze.defense.mitigations import create_mitigation
    from securegaze.io import atomic_write_bytes, check_output_dir

    check_range("samples", samples, 8, MAX_SAMPLES)
    names = [n.strip() for n in methods.split(",") if n.strip()]
    if not names:
        raise typer.BadParameter(f"{methods!r}: expected comma-separated method names", param_hint="--methods")
    per_method = method_settings_option(setting, names)
    # Bad names and settings fail here, before any model is read.
    built = [n if n == "securegaze" else create_mitigation(n, seed=seed, **per_method.get(n, {})) for n in names]
    only = zoo_attack_filter(attacks, zoo)
    if docs is not None:
        check_output_dir(docs, "--docs", "the mitigation page", files=("mitigation.md", "mitigation_methods.md"))
    if threads:
        torch.set_num_threads(threads)
    threshold = detection_threshold(out)
    detector = create_detector("securegaze", seed=seed)
    command = bench_command_line(sys.argv, "mitigate")
    with progress_bar() as bar:
        task = bar.add_task("mitigate", total=None, status="")

        def on_progress(model_id, done, total):
            bar.update(task, total=total, completed=done, status=model_id)

        if names == ["securegaze"]:
            reports = run_mitigation_benchmark(zoo, out, detector, samples=samples, seed=seed, per_attack=per_attack,
                                               threshold=threshold, progress=on_progress, attacks=only)
        else:
            reports = run_mitigation_methods(zoo, out, built, detector=detector, samples=samples, seed=seed,
                                             per_attack=per_attack, threshold=threshold, progress=on_progress,
                                             attacks=only)
    own = [r for r in reports if r.method == "securegaze"]
    if own:
        for s in write_mitigation_results(own, out, command, docs):
            console.print(f"{s.attack:12s} ASR {100 * s.asr_before:5.1f}% -> {100 * s.asr_after:5.1f}%  clean error "
                          f"{s.clean_error_before_deg:.2f} -> {s.clean_error_after_deg:.2f} deg  "
                          f"met {s.met_targets}/{s.models}")
    if names != ["securegaze"]:
        page = write_mitigation_methods_results(reports, out, command)
        if docs is not None:
            atomic_write_bytes(docs / page.name, page.read_bytes())
        for name in names:
            rs = [r for r in reports if r.method == name and r.attack_after]
            if rs:
                asr = statistics.median(r.attack_after["asr"] for r in rs)
                rise = statistics.median(r.clean_error_increase_deg for r in rs)
                console.print(f"{name:14s} {len(rs)} models  median ASR after {100 * asr:5.1f}%  "
                              f"median clean error change {rise:+.2f} deg")
        console.print(f"results: {page}")


def zoo_attack_filter(attacks: str | None, zoo: Path) -> list[str] | None:
    """``--attacks A,B`` -> the list of names, each one an attack the zoo was built with (one error line
    naming the unknown name and the zoo's attacks); None for every attack."""
    if attacks is None:
        return None
    names = [a.strip() for a in attacks.split(",") if a.strip()]
    if not names:
        raise typer.BadParameter(f"{attacks!r}: expected comma-separated attack names", param_hint="--attacks")
    from securegaze.zoo import ZooManifest

    built = ZooManifest.read(zoo).spec.attacks
    unknown = [a for a in names if a not in built]
    if unknown:
        raise typer.BadParameter(f"{unknown[0]!r} is not an attack of the zoo {zoo} (it has: "
                                 f"{', '.join(built) or 'no attack'})", param_hint="--attacks")
    return names


def method_settings_option(items: list[str], names: list[str]) -> dict[str, dict]:
    """``bench mitigate --set METHOD.KEY=VALUE`` items -> ``{method: {key: value}}``; the method must be
    one of ``names`` and not securegaze (which runs as ``securegaze mitigate`` does, on the detection
    benchmark's scans); ``seed`` has its own option."""
    settings: dict[str, dict] = {}
    for dotted, value in parse_key_values(items, "--set").items():
        name, dot, key = dotted.partition(".")
        if not dot or not key or name not in names:
            raise typer.BadParameter(f"{dotted!r} is not METHOD.KEY with METHOD one of {', '.join(names)}",
                                     param_hint="--set")
        if name == "securegaze" or key == "seed":
            raise typer.BadParameter(f"{dotted}: securegaze runs with its defaults here, and seed has its own "
                                     "option (--seed)", param_hint="--set")
        settings.setdefault(name, {})[key] = value
    return settings
