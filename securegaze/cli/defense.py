"""``securegaze scan`` and ``securegaze mitigate``: find a backdoor in a model file, and remove it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from securegaze.cli.support import MAX_SAMPLES, check_range, console, parse_key_values, progress_bar

#: Exit codes of ``securegaze scan`` (documented in the README): 0 clean, 10 backdoored, 2 bad input.
EXIT_CLEAN, EXIT_BACKDOORED = 0, 10
#: The files a scan writes into its --out folder (checked before the scan: none may be a folder).
SCAN_FILES = ("report.json", "reversed_trigger.png", "trigger_generator.safetensors", "warp_field.safetensors",
              "warp_field_unmet.safetensors")


@contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """Within the block torch runs on ``count`` threads (None: as it is); the count is restored after."""
    import torch

    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _keep_other_scan(out: Path, sha256: str) -> None:
    """Refuse an ``--out`` whose report.json is the scan of another model (its trigger files would be
    replaced too); the same model's earlier scan, or an unreadable report, is replaced."""
    import json

    try:
        earlier = json.loads((out / "report.json").read_text()).get("model_sha256")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return
    if isinstance(earlier, str) and earlier != sha256:
        raise typer.BadParameter(f"{out} holds the scan of another model (sha256 {earlier[:16]}...): choose another "
                                 "folder, or delete that one first", param_hint="--out")


def scan(
    model: Path = typer.Argument(..., help="A bundle directory, manifest.json, .onnx, .safetensors or training .pt."),
    clean: str = typer.Option("synthetic", help="Clean images: 'synthetic', a folder of face images (PNG/JPEG, any "
                              "size, no labels) or a dataset path (labels unused)."),
    samples: int = typer.Option(512, help="How many clean images the scan uses."),
    seed: int = typer.Option(0, help="Seeds the clean-image draw and the scan (deterministic)."),
    out: Path = typer.Option(Path("scan"), "--out", help="Directory for report.json and reversed_trigger.png."),
    threshold: float | None = typer.Option(None, help="Override the calibrated decision threshold."),
    detector: str = typer.Option("securegaze", "--detector", help="The registered detector to scan with "
                                 "(securegaze info lists them with their thresholds)."),
    setting: list[str] = typer.Option([], "--set", help="Detector setting KEY=VALUE (repeatable), e.g. --set "
                                      "steps=400; true/false, numbers and text, checked by the detector."),
    threads: int | None = typer.Option(None, help="Torch threads for the scan (default: torch's own, one per "
                                       "core); the result is repeatable for a seed and a thread count."),
) -> None:
    """Scan a gaze model for a backdoor (SecureGaze by default). Exit code 0 clean, 10 backdoored, 2 bad input."""
    from securegaze.defense.securegaze.confirm import confirmation_line
    from securegaze.io import check_output_dir, check_outside
    from securegaze.scan_runs import ScanRun

    check_range("samples", samples, 8, MAX_SAMPLES)
    check_range("seed", seed, 0)
    if threads is not None:
        check_range("threads", threads, 1, 256)
    settings = parse_key_values(setting, "--set")
    for key, option in (("seed", "--seed"), ("threshold", "--threshold")):
        if key in settings:
            raise typer.BadParameter(f"{key} has its own option: use {option}", param_hint="--set")
    check_output_dir(out, "--out", "the scan's report and trigger", files=SCAN_FILES)
    check_outside(out, "--out", clean, "--clean")
    with _torch_threads(threads):  # restored after: a command run in-process leaves no trace
        run = ScanRun.prepare(model, clean, samples, seed, threshold, detector=detector, settings=settings)
        _keep_other_scan(out, run.model_file.sha256())
        for note in getattr(run.model, "adaptations", ()):  # a third-party graph's form, read as the project's
            console.print(f"note: {note}")
        if run.clean_note:
            console.print(run.clean_note)
        with progress_bar() as bar:
            task = bar.add_task("scan", total=None, status="")

            def on_progress(p):
                bar.update(task, total=p.total, completed=p.step, description=f"scan: {p.stage}")

            report = run.run(out, progress=on_progress)
    console.print(f"model: {model} (sha256 {str(report.model_sha256)[:16]}...)")
    console.print(f"verdict: {report.verdict.upper()} | score {report.score:.5f} vs threshold {report.threshold:.5f} "
                  f"(backdoored when {report.suspicious_when})")
    # confirm_seeds (2 by default): the flag of the first seed, rerun with the next ones
    if (confirmation := confirmation_line(report.details, report.verdict)) is not None:
        console.print(confirmation)
    universality = report.details.get("universality")
    if universality:
        console.print(f"universality U {universality['ratio']:.3f} vs threshold {universality['threshold']:.3f} "
                      "(backdoored when below; one edit for every face over one for each); flagged by: "
                      + (", ".join(report.details.get("flagged_by") or []) or "neither"))
    warp = report.details.get("warp")
    if warp:
        console.print(f"warp branch: one field of {warp['displacement_px']:.2f} px (budget {warp['budget_px']:.2f}) "
                      f"keeps {warp['dispersion_ratio']:.3f} of the clean dispersion (flags at or below "
                      f"{report.settings.get('rho_out')}): " + ("FLAGGED" if warp["flagged"] else "not flagged"))
    elif report.details.get("warp_not_run"):
        console.print(f"warp branch: {report.details['warp_not_run']}")
    if report.target_gaze_deg is not None:
        tp, ty = report.target_gaze_deg
        share = f"{100 * (report.collapsed_share or 0):.0f}% of clean samples collapse onto it"
        if report.verdict == "backdoored":
            console.print(f"recovered target (pitch, yaw): ({tp:.1f}, {ty:.1f}) deg; {share}")
        else:  # every model has a cheapest collapse; on a clean verdict it cost too much to be a trigger
            console.print(f"cheapest collapse found (pitch, yaw): ({tp:.1f}, {ty:.1f}) deg, {share}; at this "
                          "score it is too dear for a trigger, not a backdoor's target")
    said = (run.clean_record or {}).get("warning")  # printed with the clean set's note, before the scan
    for warning in report.details.get("warnings", []):
        console.print("warning: the clean set's warning above holds for this verdict" if warning == said
                      else f"warning: {warning}")
    console.print(f"scan time {report.runtime_s:.1f} s; report: {out / 'report.json'}"
                  + (f"; trigger: {report.trigger_image_path}" if report.trigger_image_path else ""))
    raise typer.Exit(EXIT_BACKDOORED if report.verdict == "backdoored" else EXIT_CLEAN)


def parse_strengths(text: str) -> tuple[float, ...]:
    """'1,2,3' -> (1.0, 2.0, 3.0); each in (0, 10]."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or not all(0 < v <= 10 for v in values):
        raise typer.BadParameter(f"{text!r}: expected comma-separated numbers in (0, 10], e.g. 1,2,3",
                                 param_hint="--strengths")
    return values


def mitigate(
    model: Path = typer.Argument(..., help="A bundle directory, manifest.json, .onnx, .safetensors or training .pt."),
    out: Path = typer.Option(..., "--out", help="Directory for the mitigated bundle, mitigation.json and both scans."),
    clean: str = typer.Option("synthetic", help="Clean images for the scan and the fine-tuning: 'synthetic', a "
                              "folder of face images (no labels unless --true-labels) or a dataset path."),
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
    lr: float = typer.Option(3e-4, help="Fine-tuning learning rate of the first round; later rounds take a third "
                             "of it. Within each round the rate decays to 0 along a half cosine."),
    seed: int = typer.Option(0, help="Seeds the clean draw, the scans and the fine-tuning."),
    threshold: float | None = typer.Option(None, help="Override the calibrated decision threshold."),
    rounds: int = typer.Option(3, help="At most this many fine-tune + re-scan rounds: while the re-scan still "
                               "flags the model, the collapse it found is unlearnt too."),
    uniform_reversal: bool = typer.Option(True, help="Also unlearn a reversal with a uniform pixel price, which "
                                          "reaches triggers on the eyes (glasses, tape) that the scan prices out, and one at "
                                          "that price aimed at the scan's target gaze."),
    strengths: str = typer.Option("1,2,3", help="Comma-separated depths at which each reversed edit is unlearnt "
                                  "(1: as reversed)."),
    method: str = typer.Option("securegaze", "--method", help="The mitigation method: securegaze (scan, unlearn, "
                               "re-scan), or a baseline (securegaze info lists them), which neither scans nor "
                               "re-scans."),
    setting: list[str] = typer.Option([], "--set", help="A baseline method's setting KEY=VALUE (repeatable), e.g. "
                                      "--set iterations=500."),
) -> None:
    """Remove a backdoor: scan, fine-tune against the reversed trigger, write a new bundle, re-scan.

    Exit code 0 when the re-scan finds the new model clean, 10 when it is still flagged, 2 bad input.
    With a baseline --method there is no re-scan: exit code 0 once the bundle is written.
    """
    from securegaze.io import check_output_dir, check_outside
    from securegaze.scan_runs import MitigationRun

    baseline = None
    if method != "securegaze":
        baseline = baseline_method(method, seed, setting, epochs=epochs != 10, lr=lr != 3e-4, rounds=rounds != 3,
                                   strengths=strengths != "1,2,3", uniform_reversal=not uniform_reversal,
                                   scan_dir=scan_dir is not None, threshold=threshold is not None)
    elif setting:
        raise typer.BadParameter("securegaze's settings have their own options (--epochs, --rounds, ...)",
                                 param_hint="--set")

    check_range("samples", samples, 8, MAX_SAMPLES)
    check_range("test-samples", test_samples, 8, MAX_SAMPLES)
    check_range("epochs", epochs, 1)
    check_range("rounds", rounds, 1)
    depths = parse_strengths(strengths)
    if not 0 < lr <= 1:
        raise typer.BadParameter(f"{lr} is outside (0, 1]", param_hint="--lr")
    if out.resolve() == model.resolve():
        raise typer.BadParameter("must differ from MODEL: the original is never overwritten", param_hint="--out")
    check_output_dir(out, "--out", "the mitigated bundle", files=("model.onnx", "manifest.json", "mitigation.json"),
                     folders=("scan_before", "scan_after"))
    for source, source_option in ((clean, "--clean"), (test, "--test")):
        check_outside(out, "--out", source, source_option)
    run = MitigationRun.prepare(model, out, clean=clean, samples=samples, test=test, test_samples=test_samples,
                                attack_run=attack_run, scan_dir=scan_dir, true_labels=true_labels, epochs=epochs,
                                lr=lr, seed=seed, threshold=threshold, rounds=rounds,
                                uniform_reversal=uniform_reversal, strengths=depths, method=baseline)
    adapted = getattr(run.model, "adaptations", ())
    for note in adapted:  # a third-party graph's form, read as the project's
        console.print(f"note: {note}")
    if run.clean_note:
        console.print(run.clean_note)
    with progress_bar() as bar:
        task = bar.add_task("mitigate", total=None, status="")

        def on_progress(p):
            bar.update(task, total=p.total, completed=p.step, description=f"{p.detector}: {p.stage}")

        result, manifest = run.run(progress=on_progress)
    sha = run.sha256
    console.print(f"model: {model} (sha256 {sha[:16]}...) -> bundle {out} (sha256 {manifest.onnx_sha256[:16]}...)")
    if adapted:
        console.print(f"note: the new bundle is in the project's form, not the file's: input (N, 3, "
                      f"{manifest.input.size}, {manifest.input.size}) RGB, output (pitch, yaw) radians "
                      f"({out / 'manifest.json'} says how its input is read)")
    if baseline is not None:
        print_baseline_result(result, out)
        raise typer.Exit(EXIT_CLEAN)
    before_scan, after_scan = result.scan_before, result.scan_after
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


def baseline_method(name: str, seed: int, items: list[str], **securegaze_only: bool):
    """The baseline mitigation method ``name`` built from ``--set`` items and ``seed``; a SecureGaze-only
    option given with it (``securegaze_only[option]`` True when it was changed) is refused."""
    from securegaze.cli.support import parse_key_values
    from securegaze.defense.mitigations import create_mitigation

    given = [option.replace("_", "-") for option, changed in securegaze_only.items() if changed]
    if given:
        raise typer.BadParameter(f"--{given[0]} is a securegaze setting; a baseline's settings go in --set KEY=VALUE",
                                 param_hint="--method")
    settings = parse_key_values(items, "--set")
    if "seed" in settings:
        raise typer.BadParameter("seed has its own option: use --seed", param_hint="--set")
    return create_mitigation(name, seed=seed, **settings)


def print_baseline_result(result, out: Path) -> None:
    """What ``mitigate --method BASELINE`` prints: the clean error and, with the real attack, AE/DAE/ASR."""
    if result.attack_before is not None:
        b, a = result.attack_before, result.attack_after
        console.print(f"real trigger ({result.attack}): clean error {b['clean_error_deg']:.2f} -> "
                      f"{a['clean_error_deg']:.2f} deg, AE {b['ae_deg']:.1f} -> {a['ae_deg']:.1f} deg, DAE "
                      f"{b['dae_deg']:.1f} -> {a['dae_deg']:.1f} deg, ASR@5deg {100 * b['asr']:.1f}% -> "
                      f"{100 * a['asr']:.1f}%")
    else:
        test = result.details["test_clean"]
        console.print(f"clean error on the test images {test['before_deg']:.2f} -> {test['after_deg']:.2f} deg "
                      "(no attack run given: no trigger figures)")
    console.print(f"method {result.method}; report: {out / 'mitigation.json'}; {result.runtime_s:.0f} s")
